//! The object service's typed errors, each mapped once to the status and body Swift
//! returns for it.
//!
//! Swift answers most errors with a short HTML page whose text is fixed per status
//! (`<html><h1>Not Found</h1><p>The resource could not be found.</p></html>`), and some
//! with a plain-text sentence (`Upload exceeds quota.`, `Invalid UTF8 or contains NULL`).
//! Clients and Tempest compare statuses, and people read the text, so both follow Swift.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything a Swift request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SwiftError {
    /// 400 with a plain-text explanation.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no (valid) token and nothing else grants access.
    #[error("unauthorized")]
    Unauthorized,
    /// 401 of an invalid or expired temporary URL or form signature.
    #[error("{0}")]
    TempUrlInvalid(&'static str),
    /// 403: authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 404.
    #[error("not found")]
    NotFound,
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 (container not empty, concurrent change).
    #[error("conflict")]
    Conflict,
    /// 409 with an explanation.
    #[error("{0}")]
    ConflictMsg(String),
    /// 411: a PUT without `Content-Length` or chunked encoding.
    #[error("length required")]
    LengthRequired,
    /// 412: a precondition (`If-Match`, `If-None-Match: *` on PUT) failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// 412 with an explanation (bad `X-Copy-From`, symlink target).
    #[error("{0}")]
    PreconditionMsg(String),
    /// 413 with a plain-text explanation (size limit, quota).
    #[error("{0}")]
    TooLarge(String),
    /// 416.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// 422: the body's MD5 differs from the client's `ETag`; nothing was stored.
    #[error("unprocessable entity")]
    Unprocessable,
    /// 499: the client went away mid-body.
    #[error("client disconnect")]
    ClientDisconnect,
    /// 501 with an explanation.
    #[error("{0}")]
    NotImplemented(String),
    /// 503: the store or database is busy or down; details logged.
    #[error("{0}")]
    Unavailable(String),
    /// 507: the backend is full.
    #[error("insufficient storage")]
    InsufficientStorage,
    /// Unexpected failure of the backend or database; details logged, 500.
    #[error("{0}")]
    Internal(String),
}

impl From<stratus_db::DbError> for SwiftError {
    fn from(e: stratus_db::DbError) -> Self {
        use stratus_db::Retryable;
        if e.retryable() {
            return SwiftError::Unavailable(format!("database busy: {e}"));
        }
        SwiftError::Internal(format!("database: {e}"))
    }
}

impl stratus_db::Retryable for SwiftError {
    fn retryable(&self) -> bool {
        matches!(self, SwiftError::Unavailable(m) if m.starts_with("database busy"))
    }
}

/// Result of object-service operations.
pub type Result<T, E = SwiftError> = std::result::Result<T, E>;

fn html(title: &str, text: &str) -> String {
    format!("<html><h1>{title}</h1><p>{text}</p></html>")
}

impl SwiftError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use SwiftError::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            Unauthorized | TempUrlInvalid(_) => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict | ConflictMsg(_) => StatusCode::CONFLICT,
            LengthRequired => StatusCode::LENGTH_REQUIRED,
            PreconditionFailed | PreconditionMsg(_) => StatusCode::PRECONDITION_FAILED,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ClientDisconnect => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body and its content type, as Swift words them.
    pub fn body(&self) -> (String, &'static str) {
        use SwiftError::*;
        const HTML: &str = "text/html; charset=UTF-8";
        const TEXT: &str = "text/plain; charset=UTF-8";
        match self {
            BadRequest(m) | ConflictMsg(m) | PreconditionMsg(m) | TooLarge(m) | NotImplemented(m) => (m.clone(), TEXT),
            Unauthorized => (
                html(
                    "Unauthorized",
                    "This server could not verify that you are authorized to access the document you requested.",
                ),
                HTML,
            ),
            TempUrlInvalid(m) => (format!("401 Unauthorized: {m}\n"), TEXT),
            Forbidden => (html("Forbidden", "Access was denied to this resource."), HTML),
            NotFound => (html("Not Found", "The resource could not be found."), HTML),
            MethodNotAllowed => (html("Method Not Allowed", "The method is not allowed for this resource."), HTML),
            Conflict => (html("Conflict", "There was a conflict when trying to complete your request."), HTML),
            LengthRequired => (html("Length Required", "Length Required"), HTML),
            PreconditionFailed => (html("Precondition Failed", "A precondition for this request was not met."), HTML),
            RangeNotSatisfiable => {
                (html("Requested Range Not Satisfiable", "The Range requested is not available."), HTML)
            }
            Unprocessable => (html("Unprocessable Entity", "Unable to process the contained instructions"), HTML),
            ClientDisconnect => (html("Client Disconnect", "The client was disconnected during request."), HTML),
            Unavailable(_) => (
                html("Service Unavailable", "The server is currently unavailable. Please try again at a later time."),
                HTML,
            ),
            InsufficientStorage => {
                (html("Insufficient Storage", "There was not enough space to save the resource."), HTML)
            }
            Internal(_) => {
                (html("Internal Error", "An error occurred while processing the request; see the server log."), HTML)
            }
        }
    }
}

impl IntoResponse for SwiftError {
    fn into_response(self) -> Response {
        match &self {
            SwiftError::Internal(m) => tracing::error!(error = %m, "object request failed"),
            SwiftError::Unavailable(m) => tracing::warn!(error = %m, "object request refused: unavailable"),
            _ => tracing::debug!(status = self.status().as_u16(), "object request rejected"),
        }
        let (body, ctype) = self.body();
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = self.status();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        if matches!(self, SwiftError::Unavailable(_)) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, SwiftError::Unauthorized) {
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Swift realm=\"unknown\""));
        }
        r
    }
}
