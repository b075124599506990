//! Whole-cloud tests: one test binary, one module per service, each test starting its
//! own in-process cloud and driving it over HTTP and through the real `openstack` CLI.

mod compute;
mod compute_api;
mod compute_ops;
mod console;
mod dashboard;
mod dashboard_browser;
mod dataplane;
mod dataplane_guests;
mod dataplane_hosts;
mod dataplane_ipv6;
mod foundation;
mod identity;
mod identity_keystone;
mod image;
mod network;
mod network_extra;
mod object;
mod operability;
mod orchestration;
mod placement;
mod qemu;
mod qemu_moves;
mod volume;
mod volume_attach;
