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
    if format != FaultFormat::Swift {
        r = r.layer(middleware::from_fn(refuse_nul));
    }
    r.layer(middleware::from_fn_with_state(format, render_faults))
}

/// Refuses a URL whose path or query carries an encoded NUL (`%00`) with 400: no id, name
/// or filter value of these APIs can hold one, and PostgreSQL refuses NUL in text, so it
/// would otherwise reach the database and come back as a 500. (Swift has its own rule.)
async fn refuse_nul(req: axum::extract::Request, next: middleware::Next) -> Response {
    let uri = req.uri();
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request(
            "The URL contains a NUL character (%00), which no id, name or filter value may hold.",
        )
        .into_response();
    }
    next.run(req).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status_and_body(uri: &str, format: FaultFormat) -> (StatusCode, String) {
        let app = service_stack(Router::new().route("/things/{id}", get(|| async { "ok" })), format, None);
        let resp = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn nul_in_path_or_query_is_a_400_in_the_family_format() {
        assert_eq!(status_and_body("/things/a", FaultFormat::Glance).await.0, StatusCode::OK);
        assert_eq!(status_and_body("/things/a?x=%0A", FaultFormat::Glance).await.0, StatusCode::OK);
        let (status, body) = status_and_body("/things/%00", FaultFormat::Glance).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("\"code\"") && body.contains("NUL"), "{body}");
        let (status, body) = status_and_body("/things/a?name=x%00y", FaultFormat::Keystone).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("\"error\""), "{body}");
    }
}
