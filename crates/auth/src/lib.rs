//! Authentication and authorization shared by every service: keystonemiddleware's and
//! oslo.policy's roles in one crate.
//!
//! - [`middleware`]: validates `X-Auth-Token` (through identity's in-process validator)
//!   and puts the caller's [`RequestContext`] on the request; the [`Ctx`] extractor reads it.
//! - [`policy`]: oslo.policy's rule language, shipped defaults per service, overridable
//!   by a YAML file exactly as operators override `policy.yaml` in OpenStack.

pub mod middleware;
pub mod policy;

pub use middleware::{require_auth, AuthState, Ctx};
pub use policy::{Policy, PolicyDefault, PolicyError};
pub use stratus_core::RequestContext;
