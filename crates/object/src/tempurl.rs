//! Temporary URLs (Swift's `tempurl` middleware): `?temp_url_sig=...&temp_url_expires=...`
//! grants one method on one object (or on every object under `temp_url_prefix`) until
//! the expiry, without a token.
//!
//! The signature is an HMAC of `<METHOD>\n<expires>\n<path>` (`prefix:<path>` for prefix
//! URLs) with one of the account's or the container's temp-URL keys, in SHA-1, SHA-256
//! or SHA-512, hex or `<digest>:<base64>`. The path may be signed as the client sees it
//! (`/object/v1/AUTH_x/c/o`, what Tempest signs) or as Swift proper would
//! (`/v1/AUTH_x/c/o`, what `swift tempurl` signs): both are accepted. HEAD is allowed
//! with a GET or PUT signature, as in Swift.

use axum::http::Method;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::db;
use crate::error::{Result, SwiftError};
use crate::ingest::hex;
use crate::proxy::Call;
use crate::Svc;

/// Methods a temporary URL may grant.
pub const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];
/// Digests accepted.
pub const DIGESTS: &[&str] = &["sha1", "sha256", "sha512"];

fn invalid() -> SwiftError {
    SwiftError::TempUrlInvalid("Temp URL invalid")
}

fn parse_expires(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(v).ok().map(|d| d.timestamp()).or_else(|| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%SZ").ok().map(|d| d.and_utc().timestamp())
        })
    })
}

fn mac(digest: &str, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    Some(match digest {
        "sha1" => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).ok()?;
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        "sha256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        "sha512" => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).ok()?;
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        _ => return None,
    })
}

/// (digest, raw signature bytes) of a `temp_url_sig` value.
fn parse_sig(sig: &str) -> Option<(&'static str, Vec<u8>)> {
    if let Some((d, b64)) = sig.split_once(':') {
        let digest = DIGESTS.iter().find(|x| **x == d)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(b64))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
            .ok()?;
        return Some((digest, raw));
    }
    let digest = match sig.len() {
        40 => "sha1",
        64 => "sha256",
        128 => "sha512",
        _ => return None,
    };
    let raw =
        (0..sig.len() / 2).map(|i| u8::from_str_radix(&sig[2 * i..2 * i + 2], 16).ok()).collect::<Option<Vec<u8>>>()?;
    Some((digest, raw))
}

/// Checks a temporary URL and, when valid, marks the call as admitted by it.
pub async fn admit(svc: &Svc, call: &mut Call) -> Result<()> {
    let method = call.method.as_str().to_string();
    if !METHODS.contains(&method.as_str()) || call.t.object.is_none() {
        return Err(invalid());
    }
    let sig = call.query.get("temp_url_sig").cloned().unwrap_or_default();
    let expires_raw = call.query.get("temp_url_expires").cloned().ok_or_else(invalid)?;
    let expires = parse_expires(&expires_raw).ok_or_else(invalid)?;
    if expires < db::now_secs() {
        return Err(invalid());
    }
    let (digest, given) = parse_sig(&sig).ok_or_else(invalid)?;
    let prefix = call.query.get("temp_url_prefix").cloned();
    if let Some(p) = &prefix {
        if !call.object().starts_with(p.as_str()) {
            return Err(invalid());
        }
    }
    let mut keys: Vec<String> = Vec::new();
    let acct = db::account(&svc.platform.db, &call.t.account).await?;
    for k in ["x-account-meta-temp-url-key", "x-account-meta-temp-url-key-2"] {
        keys.extend(acct.meta.get(k).cloned());
    }
    if let Some(c) = db::container(&svc.platform.db, &call.t.account, call.container()).await? {
        for k in ["x-container-meta-temp-url-key", "x-container-meta-temp-url-key-2"] {
            keys.extend(c.meta.get(k).cloned());
        }
    }
    let tail = match &prefix {
        Some(p) => format!("/v1/{}/{}/{}", call.t.account, call.container(), p),
        None => format!("/v1/{}/{}/{}", call.t.account, call.container(), call.object()),
    };
    let paths = [tail.clone(), format!("/object{tail}")];
    let methods: Vec<&str> =
        if call.method == Method::HEAD { vec!["HEAD", "GET", "PUT"] } else { vec![method.as_str()] };
    for key in &keys {
        for m in &methods {
            for p in &paths {
                let body = match &prefix {
                    Some(_) => format!("{m}\n{expires_raw}\nprefix:{p}"),
                    None => format!("{m}\n{expires_raw}\n{p}"),
                };
                if let Some(want) = mac(digest, key.as_bytes(), body.as_bytes()) {
                    if constant_eq(&want, &given) {
                        call.tempurl = true;
                        return Ok(());
                    }
                }
            }
        }
    }
    tracing::debug!(digest, sig = %hex(&given), "temp URL signature did not match");
    Err(invalid())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let m = mac("sha1", b"key", b"GET\n1\n/v1/AUTH_a/c/o").unwrap();
        let (d, raw) = parse_sig(&hex(&m)).unwrap();
        assert_eq!((d, raw), ("sha1", m.clone()));
        let b64 =
            format!("sha512:{}", base64::engine::general_purpose::URL_SAFE.encode(mac("sha512", b"k", b"x").unwrap()));
        assert_eq!(parse_sig(&b64).unwrap().0, "sha512");
        assert!(parse_sig("md5:abc").is_none() && parse_sig("xyz").is_none());
        assert_eq!(parse_expires("2026-12-07T00:00:00Z"), Some(1796601600));
        assert!(constant_eq(b"ab", b"ab") && !constant_eq(b"ab", b"ac"));
    }
}
