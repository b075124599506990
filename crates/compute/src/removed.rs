//! APIs Nova has removed: every request to them answers 410 Gone (Nova's `HTTPGone`), at
//! every microversion, so a client learns the API is gone for good rather than mistyped
//! (a 404). The table names each path with what replaced it.

use axum::extract::OriginalUri;
use axum::http::StatusCode;
use axum::routing::{any, delete, post, MethodRouter};
use axum::Router;
use stratus_core::ApiError;

use crate::AppState;

/// Removed APIs: path (under `/v2.1`), what to use instead.
const REMOVED: &[(&str, &str)] = &[
    ("/os-agents", "guest agent builds are no longer managed by the compute API"),
    ("/os-agents/{id}", "guest agent builds are no longer managed by the compute API"),
    ("/os-cells", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/capacities", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/detail", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/info", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/sync_instances", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/{id}", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-cells/{id}/capacities", "cells v1 is gone; cells v2 is managed with nova-manage"),
    ("/os-certificates", "the nova-cert service is gone; use the key manager service"),
    ("/os-certificates/{id}", "the nova-cert service is gone; use the key manager service"),
    ("/os-cloudpipe", "cloudpipe is gone; use a VPN service on the network service"),
    ("/os-cloudpipe/{id}", "cloudpipe is gone; use a VPN service on the network service"),
    ("/os-fixed-ips/{id}", "fixed IPs belong to ports: use the network service's ports API"),
    ("/os-fixed-ips/{id}/action", "fixed IPs belong to ports: use the network service's ports API"),
    ("/os-floating-ip-dns", "use the DNS service (designate) instead"),
    ("/os-floating-ip-dns/{id}", "use the DNS service (designate) instead"),
    ("/os-floating-ip-dns/{id}/entries/{entry}", "use the DNS service (designate) instead"),
    ("/os-floating-ips-bulk", "use the network service's floating IP API"),
    ("/os-floating-ips-bulk/{id}", "use the network service's floating IP API"),
    ("/os-fping", "use the network service's port status instead"),
    ("/os-fping/{id}", "use the network service's port status instead"),
    ("/os-security-group-default-rules", "use the network service's default security group rules API"),
    ("/os-security-group-default-rules/{id}", "use the network service's default security group rules API"),
    ("/servers/{id}/consoles", "use POST /servers/{id}/remote-consoles"),
    ("/servers/{id}/consoles/{console}", "use POST /servers/{id}/remote-consoles"),
    ("/servers/{id}/os-virtual-interfaces", "use GET /servers/{id}/os-interface (ports of the network service)"),
];

/// nova-network operations on APIs whose reads still exist: only these methods are gone.
const REMOVED_WRITES: &[(&str, &str)] = &[
    ("/os-networks", "networks are created with the network service's API"),
    ("/os-networks/add", "networks are managed with the network service's API"),
    ("/os-networks/{id}", "networks are deleted with the network service's API"),
    ("/os-networks/{id}/action", "networks are managed with the network service's API"),
    ("/os-tenant-networks", "networks are created with the network service's API"),
    ("/os-tenant-networks/{id}", "networks are deleted with the network service's API"),
];

fn gone(hint: &'static str) -> impl Fn(OriginalUri) -> std::future::Ready<ApiError> + Clone + Send + 'static {
    move |OriginalUri(uri)| {
        std::future::ready(ApiError::new(
            StatusCode::GONE,
            format!("{} was removed from the compute API: {hint}.", uri.path()),
        ))
    }
}

/// Routes: every removed path, all methods (or the removed methods) answering 410.
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for (path, hint) in REMOVED {
        r = r.route(&format!("/v2.1{path}"), any(gone(hint)));
    }
    for (path, hint) in REMOVED_WRITES {
        let m: MethodRouter<AppState> = post(gone(hint)).put(gone(hint)).merge(delete(gone(hint)));
        r = r.route(&format!("/v2.1{path}"), m);
    }
    r
}
