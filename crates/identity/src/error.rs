//! Identity's typed errors, each mapped once to Keystone's status and wording.

use stratus_core::ApiError;
use stratus_db::DbError;

/// Everything an identity request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `Could not find user: abc.` (404)
    #[error("Could not find {kind}: {id}.")]
    NotFound {
        /// Resource kind as Keystone names it (`user`, `project`, `role`...).
        kind: &'static str,
        /// What was looked up.
        id: String,
    },
    /// Duplicate name and similar (409).
    #[error("{0}")]
    Conflict(String),
    /// Authentication failed (401). The message never says whether a user exists.
    #[error("{0}")]
    Unauthorized(String),
    /// Policy or ownership refused (403).
    #[error("{0}")]
    Forbidden(String),
    /// Malformed or invalid request (400).
    #[error("{0}")]
    Validation(String),
    /// Every password-hashing slot stayed busy (503 with `Retry-After`).
    #[error("The server is busy checking other passwords; retry in {retry_after_secs} s.")]
    Busy {
        /// Seconds for `Retry-After`.
        retry_after_secs: u32,
    },
    /// Too many failed logins from this address or for this account (429 with
    /// `Retry-After`), refused before any password is checked.
    #[error("Too many failed authentication attempts; retry in {retry_after_secs} s.")]
    TooManyAttempts {
        /// Seconds for `Retry-After`.
        retry_after_secs: u32,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A bug or an unexpected failure (500).
    #[error("{0}")]
    Internal(String),
}

/// Result alias for identity code.
pub type Result<T, E = IdentityError> = std::result::Result<T, E>;

impl IdentityError {
    /// 404 for `kind` `id`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        IdentityError::NotFound { kind, id: id.into() }
    }
    /// The one 401 message Keystone gives for any failed login.
    pub fn auth_failed() -> Self {
        IdentityError::Unauthorized("The request you have made requires authentication.".into())
    }
    /// 409 for a duplicate `kind` named `name`.
    pub fn duplicate(kind: &str, name: &str) -> Self {
        IdentityError::Conflict(format!(
            "Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}."
        ))
    }
    /// 400.
    pub fn invalid(msg: impl Into<String>) -> Self {
        IdentityError::Validation(msg.into())
    }
}

impl From<stratus_db::sqlx::Error> for IdentityError {
    fn from(e: stratus_db::sqlx::Error) -> Self {
        IdentityError::Db(DbError::Sql(e))
    }
}

impl From<ApiError> for IdentityError {
    fn from(e: ApiError) -> Self {
        match e.status.as_u16() {
            400 | 413 | 415 => IdentityError::Validation(e.message),
            401 => IdentityError::Unauthorized(e.message),
            403 => IdentityError::Forbidden(e.message),
            409 => IdentityError::Conflict(e.message),
            _ => IdentityError::Internal(e.message),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NotFound { .. } => ApiError::not_found(e.to_string()),
            IdentityError::Conflict(m) => ApiError::conflict(m),
            IdentityError::Unauthorized(m) => ApiError::unauthorized(m),
            IdentityError::Forbidden(m) => ApiError::forbidden(m),
            IdentityError::Validation(m) => ApiError::bad_request(m),
            IdentityError::Busy { retry_after_secs } => {
                ApiError::unavailable(e.to_string()).with_retry_after(retry_after_secs)
            }
            IdentityError::TooManyAttempts { retry_after_secs } => {
                ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, e.to_string())
                    .with_retry_after(retry_after_secs)
            }
            IdentityError::Db(d) => {
                if d.is_unique_violation() {
                    ApiError::conflict("Conflict occurred attempting to store the resource - Duplicate entry.")
                } else {
                    ApiError::from(d)
                }
            }
            IdentityError::Internal(m) => {
                tracing::error!(error = %m, "identity internal error");
                ApiError::internal("An unexpected error prevented the server from fulfilling your request.")
            }
        }
    }
}

impl axum::response::IntoResponse for IdentityError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

impl stratus_db::Retryable for IdentityError {
    fn retryable(&self) -> bool {
        match self {
            IdentityError::Db(e) => e.retryable(),
            _ => false,
        }
    }
}
