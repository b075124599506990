//! The image service's typed errors, each mapped once to Glance's status and message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stratus_core::ApiError;

/// Everything an image API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No such image (or not visible to the caller: Glance never confirms it exists).
    #[error("{0}")]
    NotFound(String),
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed (policy, read-only attribute, protected image, deactivated data).
    #[error("{0}")]
    Forbidden(String),
    /// The image is in the wrong state, or the resource already exists.
    #[error("{0}")]
    Conflict(String),
    /// Too big: `image_size_cap`, storage quota, image count quota.
    #[error("{0}")]
    TooLarge(String),
    /// Wrong `Content-Type` for the call.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An unsatisfiable `Range`.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// The uploaded bytes are not a safe image of the declared format; the image is killed.
    #[error("{0}")]
    InvalidImageData(String),
    /// The store has no room left.
    #[error("Image storage media is full: {0}")]
    StorageFull(String),
    /// The store failed (I/O); the details are logged.
    #[error("image store failure: {0}")]
    Store(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] stratus_db::DbError),
    /// An already-rendered API error (policy denial, JSON parsing).
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for ImageError {
    fn from(e: ApiError) -> Self {
        ImageError::Api(e)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::NotFound(m) => ApiError::not_found(m),
            ImageError::BadRequest(m) | ImageError::InvalidImageData(m) => ApiError::bad_request(m),
            ImageError::Forbidden(m) => ApiError::forbidden(m),
            ImageError::Conflict(m) => ApiError::conflict(m),
            ImageError::TooLarge(m) => ApiError::too_large(m),
            ImageError::UnsupportedMediaType(m) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            ImageError::RangeNotSatisfiable(m) => ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, m),
            e @ ImageError::StorageFull(_) => ApiError::too_large(e.to_string()),
            ImageError::Store(m) => {
                tracing::error!(error = %m, "image store failure");
                ApiError::internal("The image store failed to complete the request; see the server log")
            }
            ImageError::Db(e) => ApiError::from(e),
            ImageError::Api(e) => e,
        }
    }
}

impl IntoResponse for ImageError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Result of image handlers.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// The 404 Glance gives for an image the caller may not see.
pub fn image_not_found(id: &str) -> ImageError {
    ImageError::NotFound(format!("No image found with ID {id}"))
}

impl stratus_db::Retryable for ImageError {
    fn retryable(&self) -> bool {
        matches!(self, ImageError::Db(e) if e.retryable())
    }
}
