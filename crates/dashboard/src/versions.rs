//! The dashboard's landing page.

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

/// Page routes.
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root))
}

/// `GET /dashboard/`.
pub async fn root(State(base): State<String>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>Stratus</title></head><body><h1>Stratus</h1>\
         <p>The web dashboard is not built yet. The APIs are served under {base}/.. and work with the \
         <code>openstack</code> CLI.</p></body></html>"
    ))
}
