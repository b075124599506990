//! The networking service's errors, each mapped once to Neutron's status, exception type
//! and message.

use axum::http::StatusCode;
use stratus_core::ApiError;

/// Everything a Neutron API call can refuse with.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `<Kind>NotFound` (404): the resource does not exist or the caller cannot see it.
    #[error("{kind} {id} could not be found.")]
    NotFound {
        /// Neutron's resource word (`Network`, `Subnet`, `Port`...).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// `InvalidInput` (400).
    #[error("Invalid input for operation: {0}.")]
    InvalidInput(String),
    /// A 400 with a specific Neutron type.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// A 409 with a specific Neutron type.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// A 404 with a specific Neutron type.
    #[error("{1}")]
    NotFoundTyped(&'static str, String),
    /// `OverQuota` (409).
    #[error("Quota exceeded for resources: ['{0}'].")]
    OverQuota(String),
    /// `IpAddressGenerationFailure` (409).
    #[error("No more IP addresses available on network {0}.")]
    IpExhausted(String),
    /// `IpAddressAlreadyAllocated` (409).
    #[error("IP address {ip} already allocated in subnet {subnet_id}")]
    IpAllocated {
        /// Address.
        ip: String,
        /// Subnet.
        subnet_id: String,
    },
    /// `NoNetworkAvailable` (503): segmentation ids exhausted.
    #[error("Unable to create the network. No tenant network is available for allocation.")]
    NoNetworkAvailable,
    /// 403 from policy or ownership.
    #[error("{0}")]
    Forbidden(String),
    /// Anything else already expressed as an API error (DB failures, policy).
    #[error("{0}")]
    Api(ApiError),
}

impl From<ApiError> for NetError {
    fn from(e: ApiError) -> Self {
        NetError::Api(e)
    }
}

impl From<stratus_db::DbError> for NetError {
    fn from(e: stratus_db::DbError) -> Self {
        NetError::Api(e.into())
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        let msg = e.to_string();
        match e {
            NetError::NotFound { kind, .. } => {
                let code = match kind {
                    "Network" => "NetworkNotFound",
                    "Subnet" => "SubnetNotFound",
                    "Port" => "PortNotFound",
                    "Router" => "RouterNotFound",
                    "Floating IP" => "FloatingIPNotFound",
                    "Security group" => "SecurityGroupNotFound",
                    "Security group rule" => "SecurityGroupRuleNotFound",
                    "Subnet pool" => "SubnetPoolNotFound",
                    "RBAC policy" => "RbacPolicyNotFound",
                    "Agent" => "AgentNotFound",
                    "Port forwarding" => "PortForwardingNotFound",
                    _ => "NotFound",
                };
                ApiError::not_found(msg).with_code(code)
            }
            NetError::InvalidInput(_) => ApiError::bad_request(msg).with_code("InvalidInput"),
            NetError::BadRequest(t, _) => ApiError::bad_request(msg).with_code(t),
            NetError::Conflict(t, _) => ApiError::conflict(msg).with_code(t),
            NetError::NotFoundTyped(t, _) => ApiError::not_found(msg).with_code(t),
            NetError::OverQuota(_) => ApiError::conflict(msg).with_code("OverQuota"),
            NetError::IpExhausted(_) => ApiError::conflict(msg).with_code("IpAddressGenerationFailure"),
            NetError::IpAllocated { .. } => ApiError::conflict(msg).with_code("IpAddressAlreadyAllocated"),
            NetError::NoNetworkAvailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg).with_code("NoNetworkAvailable")
            }
            NetError::Forbidden(_) => ApiError::forbidden(msg).with_code("PolicyNotAuthorized"),
            NetError::Api(a) => a,
        }
    }
}

impl axum::response::IntoResponse for NetError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

impl stratus_db::Retryable for NetError {
    fn retryable(&self) -> bool {
        matches!(self, NetError::Api(a) if a.retryable)
    }
}

/// Result of the service layer.
pub type NetResult<T> = Result<T, NetError>;

/// Shorthand for [`NetError::NotFound`].
pub fn not_found(kind: &'static str, id: &str) -> NetError {
    NetError::NotFound { kind, id: id.to_string() }
}

/// Shorthand for [`NetError::InvalidInput`].
pub fn invalid(msg: impl Into<String>) -> NetError {
    NetError::InvalidInput(msg.into())
}
