//! JSON request bodies with OpenStack-style errors.
//!
//! axum's own `Json` rejects bad input with plain-text bodies. [`OsJson`] maps each way a
//! body can be wrong to the right status with a message naming the problem: 415 for a
//! non-JSON content type, 413 past the body limit, 400 with the parser's line and column
//! for malformed JSON or a field of the wrong type.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::fault::ApiError;

/// A JSON body deserialized into `T`.
#[derive(Debug, Clone)]
pub struct OsJson<T>(pub T);

/// True when `content_type` is JSON (`application/json`, `...+json`, `...-json`).
pub fn is_json_content_type(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json") || mime.ends_with("-json")
}

/// Reads the whole body, mapping the limit to 413.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("Request body is larger than this API accepts")
        } else {
            ApiError::bad_request(format!("Could not read the request body: {e}"))
        }
    })
}

/// Parses `bytes` as JSON into `T` with a 400 that quotes the parser.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("The request body is empty; a JSON document is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() { "Malformed JSON in request body" } else { "Invalid request body" };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

impl<T, S> FromRequest<S> for OsJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match ctype {
            Some(c) if is_json_content_type(&c) => {}
            Some(c) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("Unsupported Content-Type {c:?}: this API takes application/json"),
                ))
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Missing Content-Type: this API takes application/json",
                ))
            }
        }
        let bytes = read_body(req, state).await?;
        Ok(OsJson(parse_json(&bytes)?))
    }
}
