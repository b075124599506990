//! JSON request bodies with OpenStack-style errors.
//!
//! axum's own `Json` rejects bad input with plain-text bodies. [`OsJson`] maps each way a
//! body can be wrong to the right status with a message naming the problem: 415 for a
//! non-JSON content type, 413 past the body limit, 400 with the parser's line and column
//! for malformed JSON or a field of the wrong type. Messages speak of the request's
//! JSON, never of the Rust types it is parsed into ("expected an object", not
//! "expected struct CreateFlavor"), and a body that is not UTF-8 is malformed JSON
//! wherever the bad bytes are (serde skips unknown fields without checking them).

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
    // JSON text is UTF-8 (RFC 8259 section 8.1); serde only checks the strings it keeps.
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(format!(
            "Malformed JSON in request body: invalid UTF-8 at byte {}",
            e.valid_up_to()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() { "Malformed JSON in request body" } else { "Invalid request body" };
        ApiError::bad_request(format!("{what}: {}", without_rust_types(&e.to_string())))
    })
}

/// Rewrites serde's names of Rust types in `msg` into what they mean in JSON:
/// `expected struct CreateFlavor` → `expected an object`, `expected enum Kind` →
/// `expected one of the documented values`. Field names and values are kept.
pub fn without_rust_types(msg: &str) -> String {
    const KINDS: &[(&str, &str)] = &[
        ("expected struct variant ", "an object"),
        ("expected tuple variant ", "an array"),
        ("expected newtype variant ", "one of the documented values"),
        ("expected unit variant ", "one of the documented values"),
        ("expected tuple struct ", "an array"),
        ("expected newtype struct ", "a value of the documented type"),
        ("expected unit struct ", "null"),
        ("expected struct ", "an object"),
        ("expected enum ", "one of the documented values"),
    ];
    let mut out = msg.to_string();
    for (prefix, meaning) in KINDS {
        while let Some(at) = out.find(prefix) {
            let name_start = at + prefix.len();
            // A Rust path: identifier characters and `::`.
            let name_len = out[name_start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(out.len() - name_start);
            out.replace_range(at..name_start + name_len, &format!("expected {meaning}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct CreateFlavor {
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        flavor: CreateFlavor,
    }

    #[test]
    fn messages_name_json_not_rust() {
        let e = parse_json::<Outer>(br#"{"flavor": "x"}"#).unwrap_err();
        assert!(e.message.contains("expected an object"), "{}", e.message);
        assert!(!e.message.contains("CreateFlavor"), "{}", e.message);
        assert_eq!(
            without_rust_types("invalid type: map, expected enum Kind at line 1"),
            "invalid type: map, expected one of the documented values at line 1"
        );
        assert_eq!(without_rust_types("missing field `name`"), "missing field `name`");
    }

    #[test]
    fn invalid_utf8_is_malformed_even_in_ignored_fields() {
        let mut body = br#"{"flavor": {"name": "a"}, "junk": "\xff"}"#.to_vec();
        let at = body.windows(4).position(|w| w == b"\\xff").unwrap();
        body.splice(at..at + 4, [0xffu8]);
        let e = parse_json::<Outer>(&body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("Malformed JSON"), "{}", e.message);
    }
}
