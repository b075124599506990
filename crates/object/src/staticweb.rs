//! Static websites (Swift's `staticweb` middleware) are not built yet: these hooks serve
//! nothing, so anonymous requests to a container fall through to the ACL checks, and
//! `/info` does not list `staticweb`.

use axum::response::Response;

use crate::db::Container;
use crate::error::Result;
use crate::proxy::Call;
use crate::Svc;

/// A website response for a container GET, when the container is a website.
pub async fn serve_container(_svc: &Svc, _call: &Call, _c: &Container) -> Result<Option<Response>> {
    Ok(None)
}

/// A website response for an object GET refused by ACLs (index pages, error pages).
pub async fn serve_object(_svc: &Svc, _call: &Call, _c: &Container) -> Result<Option<Response>> {
    Ok(None)
}
