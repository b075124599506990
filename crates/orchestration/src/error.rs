//! The orchestration service's typed errors, each mapped once to Heat's status, error
//! `type` (its exception class name, which clients show) and message.

use axum::http::StatusCode;
use stratus_core::ApiError;

/// Why an orchestration request failed.
#[derive(Debug, thiserror::Error)]
pub enum HeatError {
    /// 400: the template or its parameters are not valid (`StackValidationFailed`).
    #[error("{0}")]
    Validation(String),
    /// 400: a parameter without default was not given (`UserParameterMissing`).
    #[error("The Parameter ({0}) was not provided.")]
    ParameterMissing(String),
    /// 400: malformed request body or query.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404: `kind` `name` does not exist (`EntityNotFound`).
    #[error("The {kind} ({name}) could not be found.")]
    NotFound {
        /// `Stack`, `Resource`, `Event`, `Output`, `Resource Type`...
        kind: &'static str,
        /// What the caller named.
        name: String,
    },
    /// 409: a stack of that name exists (`StackExists`).
    #[error("The Stack ({0}) already exists.")]
    StackExists(String),
    /// 409: the stack is busy with another action (`ActionInProgress`).
    #[error("Stack {name} already has an action ({action}) in progress.")]
    InProgress {
        /// Stack name.
        name: String,
        /// The running action.
        action: String,
    },
    /// 501: an API Stratus does not offer yet.
    #[error("{0}")]
    NotImplemented(String),
    /// Anything already expressed as an API error (database failures).
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for HeatError {
    fn from(e: ApiError) -> Self {
        HeatError::Api(e)
    }
}

impl From<stratus_db::DbError> for HeatError {
    fn from(e: stratus_db::DbError) -> Self {
        HeatError::Api(e.into())
    }
}

impl From<HeatError> for ApiError {
    fn from(e: HeatError) -> Self {
        let msg = e.to_string();
        match e {
            HeatError::Validation(_) => ApiError::bad_request(msg).with_code("StackValidationFailed"),
            HeatError::ParameterMissing(_) => ApiError::bad_request(msg).with_code("UserParameterMissing"),
            HeatError::BadRequest(_) => ApiError::bad_request(msg).with_code("HTTPBadRequest"),
            HeatError::Forbidden(_) => ApiError::forbidden(msg).with_code("Forbidden"),
            HeatError::NotFound { .. } => ApiError::not_found(msg).with_code("EntityNotFound"),
            HeatError::StackExists(_) => ApiError::conflict(msg).with_code("StackExists"),
            HeatError::InProgress { .. } => ApiError::conflict(msg).with_code("ActionInProgress"),
            HeatError::NotImplemented(_) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, msg).with_code("HTTPNotImplemented")
            }
            HeatError::Api(a) => a,
        }
    }
}

impl axum::response::IntoResponse for HeatError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

impl stratus_db::Retryable for HeatError {
    fn retryable(&self) -> bool {
        matches!(self, HeatError::Api(a) if a.retryable)
    }
}

/// Result of the service layer.
pub type HeatResult<T> = Result<T, HeatError>;

/// A validation failure (400 `StackValidationFailed`).
pub fn invalid(msg: impl Into<String>) -> HeatError {
    HeatError::Validation(msg.into())
}

/// 400 for a malformed request.
pub fn bad(msg: impl Into<String>) -> HeatError {
    HeatError::BadRequest(msg.into())
}

/// 404 for `kind` `name`.
pub fn not_found(kind: &'static str, name: &str) -> HeatError {
    HeatError::NotFound { kind, name: name.to_string() }
}
