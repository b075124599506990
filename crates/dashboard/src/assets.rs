//! Static assets, embedded in the binary: the stylesheet and the page script.
//!
//! Names carry a content hash (a short FNV-1a of the bytes), so they can be cached
//! forever and a new build is fetched at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../assets/dashboard.css");
const JS: &str = include_str!("../assets/dashboard.js");

fn fnv(data: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

static CSS_FILE: LazyLock<String> = LazyLock::new(|| format!("dashboard.{}.css", fnv(CSS)));
static JS_FILE: LazyLock<String> = LazyLock::new(|| format!("dashboard.{}.js", fnv(JS)));

/// The stylesheet's file name.
pub fn css_name() -> &'static str {
    CSS_FILE.as_str()
}

/// The script's file name.
pub fn js_name() -> &'static str {
    JS_FILE.as_str()
}

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, ty) = if file == *CSS_FILE {
        (CSS, "text/css; charset=utf-8")
    } else if file == *JS_FILE {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], body).into_response()
}
