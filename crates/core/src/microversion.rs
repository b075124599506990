//! Microversion negotiation (`OpenStack-API-Version: compute 2.60`).
//!
//! A service declares its [`MicroversionSpec`]; the middleware reads the modern header
//! (and the service's legacy one, e.g. `X-OpenStack-Nova-API-Version`), resolves `latest`,
//! rejects malformed values with 400 and unsupported ones with 406, stores the result for
//! the [`ApiVersion`] extractor, and echoes the version in the response headers with
//! `Vary` so caches keep versions apart.

use std::fmt;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fault::ApiError;

/// A `major.minor` API version; ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ApiVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }

    /// True when this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        *self >= ApiVersion::new(major, minor)
    }

    /// Parses `2.60`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once('.')?;
        if a.is_empty() || b.is_empty() || a.len() > 4 || b.len() > 4 {
            return None;
        }
        Some(ApiVersion { major: a.parse().ok()?, minor: b.parse().ok()? })
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The microversions a service supports.
#[derive(Debug, Clone, Copy)]
pub struct MicroversionSpec {
    /// Service type as written in the header (`compute`, `placement`, `volume`).
    pub service_type: &'static str,
    /// Legacy header name (`x-openstack-nova-api-version`), if the service had one.
    pub legacy_header: Option<&'static str>,
    /// Oldest supported.
    pub min: ApiVersion,
    /// Newest supported.
    pub max: ApiVersion,
}

impl MicroversionSpec {
    /// Resolves the version requested by `headers`.
    pub fn negotiate(&self, headers: &axum::http::HeaderMap) -> Result<ApiVersion, ApiError> {
        let mut requested: Option<String> = None;
        for v in headers.get_all("openstack-api-version") {
            let Ok(v) = v.to_str() else { continue };
            // The header may list several services: "compute 2.60, placement 1.10".
            for part in v.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(svc), Some(ver)) = (it.next(), it.next()) {
                    if svc.eq_ignore_ascii_case(self.service_type) {
                        requested = Some(ver.to_string());
                    }
                }
            }
        }
        if requested.is_none() {
            if let Some(h) = self.legacy_header {
                if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
                    requested = Some(v.trim().to_string());
                }
            }
        }
        let Some(req) = requested else { return Ok(self.min) };
        if req.eq_ignore_ascii_case("latest") {
            return Ok(self.max);
        }
        let v = ApiVersion::parse(&req).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid {} microversion {req:?}: expected MAJOR.MINOR or 'latest'",
                self.service_type
            ))
        })?;
        if v < self.min || v > self.max {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {v} is not supported by the API. Minimum is {} and maximum is {}.",
                    self.min, self.max
                ),
            )
            .with_code("placement.microversion.unsupported"));
        }
        Ok(v)
    }
}

/// Middleware: negotiates, stores the version, echoes it in the response.
pub async fn negotiate(State(spec): State<MicroversionSpec>, mut req: Request, next: Next) -> Response {
    let v = match spec.negotiate(req.headers()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(v);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(val) = HeaderValue::from_str(&format!("{} {v}", spec.service_type)) {
        h.insert(HeaderName::from_static("openstack-api-version"), val);
    }
    let mut vary = String::from("OpenStack-API-Version");
    if let Some(legacy) = spec.legacy_header {
        if let (Ok(name), Ok(val)) = (HeaderName::from_bytes(legacy.as_bytes()), HeaderValue::from_str(&v.to_string()))
        {
            h.insert(name, val);
        }
        vary.push_str(", ");
        vary.push_str(legacy);
    }
    if let Ok(val) = HeaderValue::from_str(&vary) {
        h.insert(axum::http::header::VARY, val);
    }
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for ApiVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ApiVersion>()
            .copied()
            .ok_or_else(|| ApiError::internal("microversion middleware is not installed on this route"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    const SPEC: MicroversionSpec = MicroversionSpec {
        service_type: "compute",
        legacy_header: Some("x-openstack-nova-api-version"),
        min: ApiVersion::new(2, 1),
        max: ApiVersion::new(2, 96),
    };

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(SPEC.negotiate(&hm(&[])).unwrap(), ApiVersion::new(2, 1));
        assert_eq!(SPEC.negotiate(&hm(&[("openstack-api-version", "compute 2.60")])).unwrap(), ApiVersion::new(2, 60));
        assert_eq!(
            SPEC.negotiate(&hm(&[("openstack-api-version", "placement 1.2, compute latest")])).unwrap(),
            ApiVersion::new(2, 96)
        );
        assert_eq!(SPEC.negotiate(&hm(&[("x-openstack-nova-api-version", "2.10")])).unwrap(), ApiVersion::new(2, 10));
        let e = SPEC.negotiate(&hm(&[("openstack-api-version", "compute 3.0")])).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE);
        let e = SPEC.negotiate(&hm(&[("openstack-api-version", "compute 2.x")])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(ApiVersion::new(2, 10) > ApiVersion::new(2, 9));
    }
}
