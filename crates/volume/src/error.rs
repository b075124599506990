//! The block storage service's typed errors, each mapped once to Cinder's status and
//! message (Cinder's faults have Nova's shape: `{"badRequest": {"code", "message"}}`).

use axum::http::StatusCode;
use stratus_core::ApiError;

/// Why a block storage request failed.
#[derive(Debug, thiserror::Error)]
pub enum VolError {
    /// 400: malformed or unusable input.
    #[error("{0}")]
    BadRequest(String),
    /// 400: the resource's state does not allow the action (Cinder's `InvalidVolume`,
    /// `InvalidSnapshot`, `InvalidBackup`...).
    #[error("Invalid {kind}: {message}")]
    InvalidState {
        /// `volume`, `snapshot`, `backup`...
        kind: &'static str,
        /// What is wrong and what would make it right.
        message: String,
    },
    /// 403: policy.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: a name already taken, a resource still in use.
    #[error("{0}")]
    Conflict(String),
    /// 413: over quota (Cinder answers quota failures with 413 `overLimit`).
    #[error("{0}")]
    OverQuota(String),
    /// 503: a backend or another service is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Anything already expressed as an API error (database failures).
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for VolError {
    fn from(e: ApiError) -> Self {
        VolError::Api(e)
    }
}

impl From<stratus_db::DbError> for VolError {
    fn from(e: stratus_db::DbError) -> Self {
        VolError::Api(e.into())
    }
}

impl From<stratus_db::sqlx::Error> for VolError {
    fn from(e: stratus_db::sqlx::Error) -> Self {
        VolError::Api(stratus_db::DbError::Sql(e).into())
    }
}

impl From<VolError> for ApiError {
    fn from(e: VolError) -> Self {
        let msg = e.to_string();
        match e {
            VolError::BadRequest(_) | VolError::InvalidState { .. } => ApiError::bad_request(msg),
            VolError::Forbidden(_) => ApiError::forbidden(msg),
            VolError::NotFound(_) => ApiError::not_found(msg),
            VolError::Conflict(_) => ApiError::conflict(msg),
            VolError::OverQuota(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg),
            VolError::Unavailable(_) => ApiError::unavailable(msg),
            VolError::Api(a) => a,
        }
    }
}

impl axum::response::IntoResponse for VolError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

impl stratus_db::Retryable for VolError {
    fn retryable(&self) -> bool {
        matches!(self, VolError::Api(a) if a.retryable)
    }
}

/// Result of the service layer.
pub type VolResult<T> = Result<T, VolError>;

/// 400 with `msg`.
pub fn bad(msg: impl Into<String>) -> VolError {
    VolError::BadRequest(msg.into())
}

/// Cinder's `InvalidVolume` (400).
pub fn invalid_volume(msg: impl Into<String>) -> VolError {
    VolError::InvalidState { kind: "volume", message: msg.into() }
}

/// 404 for `kind` `id` in Cinder's words.
pub fn not_found(kind: &str, id: &str) -> VolError {
    VolError::NotFound(format!("{kind} {id} could not be found."))
}
