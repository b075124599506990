//! The Heat v1 API under `/orchestration/v1/{project_id}`: [`stacks`] (create, list,
//! lookup, show, delete), [`children`] (a stack's resources, events, outputs, template)
//! and [`info`] (validate, resource types, template versions, build info).
//!
//! Every path under `/stacks/` goes through one dispatcher ([`stacks::dispatch`]), as
//! Heat's router does: `/stacks/{name_or_id}[/...]` answers 302 to the stack's canonical
//! `/stacks/{name}/{id}[/...]`, which serves the stack and its children.

pub mod children;
pub mod info;
pub mod signal;
pub mod stacks;
#[cfg(test)]
mod tests;
pub mod update;

use axum::http::StatusCode;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::RequestContext;

use crate::error::{HeatError, HeatResult};
use crate::S;

/// The protected routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v1/{project_id}/stacks", get(stacks::list).post(stacks::create))
        .route("/v1/{project_id}/stacks/{*rest}", any(stacks::dispatch))
        .route("/v1/{project_id}/validate", post(info::validate))
        .route("/v1/{project_id}/resource_types", get(info::resource_types))
        .route("/v1/{project_id}/resource_types/{type_name}", get(info::resource_type))
        .route("/v1/{project_id}/template_versions", get(info::template_versions))
        .route("/v1/{project_id}/template_versions/{version}/functions", get(info::template_functions))
        .route("/v1/{project_id}/build_info", get(info::build_info))
}

fn version_doc(base: &str) -> Value {
    json!({"versions": [{
        "id": "v1.0",
        "status": "CURRENT",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
    }]})
}

/// Version discovery (no token needed): `GET /orchestration/` answers 300 as Heat does.
pub fn versions<T: Clone + Send + Sync + 'static>(base: &str) -> Router<T> {
    let (b1, b2) = (base.to_string(), base.to_string());
    Router::new()
        .route("/", get(move || async move { (StatusCode::MULTIPLE_CHOICES, Json(version_doc(&b1))) }))
        .route("/v1", get(move || async move { Json(version_doc(&b2)) }))
}

/// Checks that the caller works in `project` (the URL's) and that policy allows
/// `action` there.
pub fn authorize(st: &S, ctx: &RequestContext, project: &str, action: &str) -> HeatResult<()> {
    if ctx.project_id.as_deref() != Some(project) {
        return Err(HeatError::Forbidden(format!(
            "The project in the URL ({project}) is not the project of the token; use the orchestration endpoint of your project."
        )));
    }
    st.policy.enforce(action, ctx, &json!({"project_id": project}))?;
    Ok(())
}

/// `{base}/v1/{project}/stacks/{name}/{id}`.
pub fn stack_url(st: &S, project: &str, name: &str, id: &str) -> String {
    format!("{}/v1/{project}/stacks/{}/{id}", st.base, stratus_core::query::encode(name))
}
