//! Shared HTTP plumbing for every Stratus API, written once.
//!
//! Every service is an axum [`Router`](axum::Router) mounted under its path prefix and
//! wrapped by [`stack::service_stack`], which gives it, in its own service family's
//! dialect: fault bodies ([`fault`]), a panic guard, request ids ([`request_id`]) and
//! 404/405 handling. Handlers use the extractors here ([`json::OsJson`],
//! [`microversion::ApiVersion`], [`query::QueryPairs`]) so that malformed input always
//! becomes an OpenStack-style 4xx and never a 500.

pub mod context;
pub mod fault;
pub mod internal;
pub mod json;
pub mod metrics;
pub mod microversion;
pub mod pagination;
pub mod platform;
pub mod query;
pub mod request_id;
pub mod stack;
pub mod time;

pub use context::{AccessRule, AuthFailure, RequestContext, TokenValidator};
pub use fault::{ApiError, FaultFormat};
pub use json::OsJson;
pub use microversion::{ApiVersion, MicroversionSpec};
pub use platform::{CatalogEntry, Platform};
pub use query::QueryPairs;
pub use request_id::RequestId;
