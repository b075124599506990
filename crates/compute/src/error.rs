//! The compute service's typed errors, each mapped once to a Nova fault.

use axum::http::StatusCode;
use stratus_core::ApiError;

/// Why a compute request failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// 400: the request is malformed or names something unusable.
    #[error("{0}")]
    BadRequest(String),
    /// 403: policy or ownership.
    #[error("{0}")]
    Forbidden(String),
    /// 403: over quota (Nova answers quota failures with 403).
    #[error("Quota exceeded for {resource}: Requested {requested}, but already used {used} of {allowed} {resource}")]
    QuotaExceeded {
        /// Resource.
        resource: String,
        /// Asked.
        requested: i64,
        /// In use.
        used: i64,
        /// Limit.
        allowed: i64,
    },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource's state does not allow this.
    #[error("{0}")]
    Conflict(String),
    /// 409: wrong vm_state/task_state for an action.
    #[error("Cannot '{action}' instance {uuid} while it is in {attr} {state}")]
    InvalidState {
        /// Action.
        action: String,
        /// Server.
        uuid: String,
        /// `vm_state` or `task_state`.
        attr: &'static str,
        /// Its value.
        state: String,
    },
    /// 409: locked server.
    #[error("Instance {0} is locked")]
    Locked(String),
    /// 503: a service compute depends on failed.
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Db(#[from] stratus_db::DbError),
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> ApiError {
        let status = match &e {
            ComputeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ComputeError::Forbidden(_) | ComputeError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            ComputeError::NotFound(_) => StatusCode::NOT_FOUND,
            ComputeError::Conflict(_) | ComputeError::InvalidState { .. } | ComputeError::Locked(_) => {
                StatusCode::CONFLICT
            }
            ComputeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ComputeError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ComputeError::Db(d) = e {
            return ApiError::from(d);
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<stratus_db::sqlx::Error> for ComputeError {
    fn from(e: stratus_db::sqlx::Error) -> Self {
        ComputeError::Db(stratus_db::DbError::Sql(e))
    }
}

/// Result alias for handlers and stores.
pub type Result<T, E = ComputeError> = std::result::Result<T, E>;

impl stratus_db::Retryable for ComputeError {
    fn retryable(&self) -> bool {
        matches!(self, ComputeError::Db(d) if d.retryable())
    }
}
