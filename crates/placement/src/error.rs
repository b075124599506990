//! Placement's typed errors, each mapped once to a status and Placement error code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stratus_core::ApiError;
use stratus_db::DbError;

/// Everything a Placement request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Malformed request body or parameter.
    #[error("{0}")]
    BadRequest(String),
    /// A query parameter has a bad value (`placement.query.bad_value`).
    #[error("{0}")]
    QueryBadValue(String),
    /// A required query parameter is missing (`placement.query.missing_value`).
    #[error("{0}")]
    QueryMissing(String),
    /// A query parameter appears more than once where it may not (`placement.query.duplicate_key`).
    #[error("{0}")]
    QueryDuplicate(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// A generation did not match: someone else changed the provider or consumer first.
    #[error("{0}")]
    ConcurrentUpdate(String),
    /// Inventory is in use by allocations.
    #[error("{0}")]
    InventoryInUse(String),
    /// A name is already taken.
    #[error("{0}")]
    DuplicateName(String),
    /// The provider has allocations.
    #[error("{0}")]
    ProviderInUse(String),
    /// The provider has children.
    #[error("{0}")]
    CannotDeleteParent(String),
    /// Any other conflict (capacity exceeded, class/trait in use).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<PlacementError> for ApiError {
    fn from(e: PlacementError) -> Self {
        let msg = e.to_string();
        match e {
            PlacementError::BadRequest(_) => ApiError::bad_request(msg),
            PlacementError::QueryBadValue(_) => ApiError::bad_request(msg).with_code("placement.query.bad_value"),
            PlacementError::QueryMissing(_) => ApiError::bad_request(msg).with_code("placement.query.missing_value"),
            PlacementError::QueryDuplicate(_) => ApiError::bad_request(msg).with_code("placement.query.duplicate_key"),
            PlacementError::NotFound(_) => ApiError::not_found(msg),
            PlacementError::ConcurrentUpdate(_) => ApiError::conflict(msg).with_code("placement.concurrent_update"),
            PlacementError::InventoryInUse(_) => ApiError::conflict(msg).with_code("placement.inventory.inuse"),
            PlacementError::DuplicateName(_) => ApiError::conflict(msg).with_code("placement.duplicate_name"),
            PlacementError::ProviderInUse(_) => ApiError::conflict(msg).with_code("placement.resource_provider.inuse"),
            PlacementError::CannotDeleteParent(_) => {
                ApiError::conflict(msg).with_code("placement.resource_provider.cannot_delete_parent")
            }
            PlacementError::Conflict(_) => ApiError::conflict(msg),
            PlacementError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, msg),
            PlacementError::Db(e) => ApiError::from(e),
        }
    }
}

impl IntoResponse for PlacementError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl From<ApiError> for PlacementError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::FORBIDDEN => PlacementError::Forbidden(e.message),
            StatusCode::NOT_FOUND => PlacementError::NotFound(e.message),
            StatusCode::CONFLICT => PlacementError::Conflict(e.message),
            _ => PlacementError::BadRequest(e.message),
        }
    }
}

impl From<stratus_db::sqlx::Error> for PlacementError {
    fn from(e: stratus_db::sqlx::Error) -> Self {
        PlacementError::Db(DbError::Sql(e))
    }
}

/// Result of a Placement operation.
pub type Result<T, E = PlacementError> = std::result::Result<T, E>;

impl stratus_db::Retryable for PlacementError {
    fn retryable(&self) -> bool {
        matches!(self, PlacementError::Db(e) if e.retryable())
    }
}
