//! Form uploads (Swift's `formpost` middleware) are not built yet: no request is treated
//! as a form, container POSTs keep their metadata meaning, and `/info` does not list
//! `formpost`.

use axum::body::Body;
use axum::response::Response;

use crate::error::{Result, SwiftError};
use crate::proxy::Call;
use crate::Svc;

/// True when `call` is a form upload this service handles.
pub fn is_form(_call: &Call) -> bool {
    false
}

/// Handles a form upload.
pub async fn handle(_svc: &Svc, _call: &Call, _body: Body) -> Result<Response> {
    Err(SwiftError::NotImplemented("Form uploads (formpost) are not supported by this cloud".into()))
}
