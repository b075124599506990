//! The layers every service router gets, in the right order.
//!
//! Outermost to innermost: the fault renderer (so everything below, including panics and
//! microversion errors, comes out in the family's format), the panic guard, the optional
//! microversion negotiation, then the service's routes. Unknown paths under the service
//! prefix fall back to a 404 in the family's format.

use std::any::Any;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::fault::{render_faults, ApiError, FaultFormat};
use crate::microversion::{negotiate, MicroversionSpec};

/// Wraps a service's routes with fault rendering, panic catching and, when `versions` is
/// given, microversion negotiation.
pub fn service_stack(routes: Router, format: FaultFormat, versions: Option<MicroversionSpec>) -> Router {
    let mut r = routes.fallback(not_found);
    if let Some(spec) = versions {
        r = r.layer(middleware::from_fn_with_state(spec, negotiate));
    }
    r = r.layer(CatchPanicLayer::custom(panic_to_fault));
    if format == FaultFormat::Nova {
        r = r.layer(middleware::map_response(add_compute_request_id));
    }
    r.layer(middleware::from_fn_with_state(format, render_faults))
}

async fn not_found(uri: axum::extract::OriginalUri) -> ApiError {
    ApiError::not_found(format!("The resource could not be found: {}", uri.path()))
}

fn panic_to_fault(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = if let Some(s) = err.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = err.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "unknown panic".to_string()
    };
    tracing::error!(panic = %what, "handler panicked; request failed with 500, server keeps serving");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Unexpected API Error. The server logged the details under this request's id.",
    )
    .into_response()
}

/// Nova also returns the request id as `x-compute-request-id`.
async fn add_compute_request_id(req_id: Option<axum::Extension<crate::RequestId>>, mut resp: Response) -> Response {
    if let Some(axum::Extension(id)) = req_id {
        if let Ok(v) = axum::http::HeaderValue::from_str(&id.0) {
            resp.headers_mut().insert("x-compute-request-id", v);
        }
    }
    resp
}
