//! Typed API errors and their rendering in each OpenStack service family's fault format.
//!
//! Handlers return [`ApiError`]; it travels out of the handler as a response extension
//! and the service's fault layer renders it as Nova, Keystone, Neutron, Placement, Glance,
//! Cinder or Swift would. The same layer re-renders errors that axum produces on its own
//! (unknown route, wrong method, body too large, unreadable body) so that a client never
//! sees a plain-text error from a JSON API.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::request_id::RequestId;

/// The error body dialects of the OpenStack services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultFormat {
    /// `{"itemNotFound": {"code": 404, "message": "..."}}`
    Nova,
    /// `{"error": {"code": 404, "message": "...", "title": "Not Found"}}`
    Keystone,
    /// `{"NeutronError": {"type": "...", "message": "...", "detail": ""}}`
    Neutron,
    /// `{"errors": [{"status", "title", "detail", "code", "request_id"}]}`
    Placement,
    /// webob JSON: `{"code": "404 Not Found", "title": "Not Found", "message": "..."}`
    Glance,
    /// Same shape as Nova.
    Cinder,
    /// Swift: a short HTML page.
    Swift,
    /// Heat: `{"code": 400, "title": "Bad Request", "explanation": "...",
    /// "error": {"type": "StackValidationFailed", "message": "...", "traceback": null}}`
    /// (python-heatclient prints `error.message`).
    Heat,
}

/// An error an API returns to its client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status (always 4xx or 5xx).
    pub status: StatusCode,
    /// What went wrong, in words a person can act on.
    pub message: String,
    /// Machine-readable code where the family has one: Neutron's exception `type`
    /// (`NetworkNotFound`), Placement's error `code` (`placement.inventory.inuse`).
    pub code: Option<Cow<'static, str>>,
    /// Extra detail (Neutron's `detail`, Nova's fault `details`).
    pub detail: Option<String>,
    /// Set when the error came from transient database contention, so
    /// [`stratus_db::Db::transaction`] retries instead of failing the request.
    pub retryable: bool,
    /// Seconds for a `Retry-After` header (503 and 429 under load).
    pub retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), code: None, detail: None, retryable: false, retry_after: None }
    }
    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }
    /// Sets the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
    /// 500: a bug or an unexpected failure. The message is safe to show; details go to the log.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The body this error has in `format`.
    pub fn render(&self, format: FaultFormat, request_id: &str) -> (Value, &'static str) {
        let code = self.status.as_u16();
        let title = self.status.canonical_reason().unwrap_or("Error");
        match format {
            FaultFormat::Nova | FaultFormat::Cinder => {
                let mut inner = json!({"code": code, "message": self.message});
                if let Some(d) = &self.detail {
                    inner["details"] = json!(d);
                }
                (json!({ nova_fault_name(code): inner }), "application/json")
            }
            FaultFormat::Keystone => {
                (json!({"error": {"code": code, "message": self.message, "title": title}}), "application/json")
            }
            FaultFormat::Neutron => {
                let ty = self.code.clone().unwrap_or_else(|| Cow::Owned(neutron_default_type(code).to_string()));
                (
                    json!({"NeutronError": {"type": ty, "message": self.message, "detail": self.detail.clone().unwrap_or_default()}}),
                    "application/json",
                )
            }
            FaultFormat::Placement => {
                let c = self.code.clone().unwrap_or(Cow::Borrowed("placement.undefined_code"));
                (
                    json!({"errors": [{"status": code, "title": title, "detail": self.message, "code": c, "request_id": request_id}]}),
                    "application/json",
                )
            }
            FaultFormat::Glance => (
                json!({"code": format!("{code} {title}"), "title": title, "message": self.message}),
                "application/json",
            ),
            FaultFormat::Heat => {
                let ty = self.code.clone().unwrap_or_else(|| Cow::Borrowed(heat_default_type(code)));
                (
                    json!({
                        "code": code,
                        "title": title,
                        "explanation": heat_explanation(code),
                        "error": {"type": ty, "message": self.message, "traceback": null},
                    }),
                    "application/json",
                )
            }
            FaultFormat::Swift => (
                Value::String(format!("<html><h1>{title}</h1><p>{}</p></html>", self.message)),
                "text/html; charset=UTF-8",
            ),
        }
    }
}

/// Nova's fault key for a status, as its fault wrapper names them.
fn nova_fault_name(code: u16) -> &'static str {
    match code {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        406 => "notAcceptable",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

/// Heat's error `type` (its exception class) when the error names none.
fn heat_default_type(code: u16) -> &'static str {
    match code {
        400 => "HTTPBadRequest",
        401 => "HTTPUnauthorized",
        403 => "Forbidden",
        404 => "EntityNotFound",
        405 => "HTTPMethodNotAllowed",
        409 => "HTTPConflict",
        413 => "RequestLimitExceeded",
        _ => "HTTPInternalServerError",
    }
}

/// webob's explanation of a status, which Heat's fault bodies carry.
fn heat_explanation(code: u16) -> &'static str {
    match code {
        400 => "The server could not comply with the request since it is either malformed or otherwise incorrect.",
        401 => "This server could not verify that you are authorized to access the document you requested.",
        403 => "Access was denied to this resource.",
        404 => "The resource could not be found.",
        405 => "The method specified is not allowed for this resource.",
        409 => "There was a conflict when trying to complete your request.",
        413 => "The body of your request was too large for this server.",
        503 => "The server is currently unavailable. Please try again at a later time.",
        _ => "The server has either erred or is incapable of performing the requested operation.",
    }
}

fn neutron_default_type(code: u16) -> &'static str {
    match code {
        400 => "HTTPBadRequest",
        401 => "HTTPUnauthorized",
        403 => "HTTPForbidden",
        404 => "HTTPNotFound",
        405 => "HTTPMethodNotAllowed",
        409 => "HTTPConflict",
        413 => "HTTPRequestEntityTooLarge",
        415 => "HTTPUnsupportedMediaType",
        _ => "HTTPInternalServerError",
    }
}

/// Marker carried in response extensions from a handler's error to the fault layer.
#[derive(Clone)]
pub(crate) struct ErrorExt(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        r.extensions_mut().insert(ErrorExt(Arc::new(self)));
        r
    }
}

/// Largest body of a framework error we read to reuse its message.
const MAX_PLAIN_ERROR: usize = 16 * 1024;

/// The fault layer: renders [`ApiError`]s and framework errors in `format`.
pub async fn render_faults(State(format): State<FaultFormat>, req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let method = req.method().clone();
    // Nested routers see the path without their prefix; quote the one the client sent.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let err = if let Some(ErrorExt(e)) = parts.extensions.remove::<ErrorExt>() {
        (*e).clone()
    } else {
        let is_json =
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
        if is_json || format == FaultFormat::Swift && status != StatusCode::METHOD_NOT_ALLOWED {
            return Response::from_parts(parts, body);
        }
        let text = match axum::body::to_bytes(body, MAX_PLAIN_ERROR).await {
            Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
            Err(_) => String::new(),
        };
        framework_error(status, &text, method.as_str(), &path)
    };
    if err.status.is_server_error() {
        tracing::error!(status = err.status.as_u16(), message = %err.message, "request failed");
    } else {
        tracing::info!(status = err.status.as_u16(), message = %err.message, "request rejected");
    }
    let (body, ctype) = err.render(format, &request_id);
    let bytes = match body {
        Value::String(s) if ctype.starts_with("text/") => s.into_bytes(),
        v => serde_json::to_vec(&v).unwrap_or_default(),
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(secs) = err.retry_after {
        parts.headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Turns an error response produced by axum itself into an [`ApiError`] with a message
/// a person can act on.
fn framework_error(status: StatusCode, text: &str, method: &str, path: &str) -> ApiError {
    let message = match status {
        StatusCode::NOT_FOUND => format!("The resource could not be found: {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("The method {method} is not allowed for {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is larger than this API accepts".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            if text.is_empty() {
                "Unsupported Content-Type".to_string()
            } else {
                text.to_string()
            }
        }
        _ if !text.is_empty() => text.to_string(),
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    };
    ApiError::new(status, message)
}

impl From<stratus_db::DbError> for ApiError {
    fn from(e: stratus_db::DbError) -> Self {
        use stratus_db::Retryable;
        if e.retryable() {
            let mut err = ApiError::unavailable("The database is busy; try again");
            err.retryable = true;
            return err;
        }
        tracing::error!(error = %e, "database error");
        ApiError::internal("The database failed to complete the request; see the server log")
    }
}

impl stratus_db::Retryable for ApiError {
    fn retryable(&self) -> bool {
        self.retryable
    }
}
