//! The `stratus` binary's library half: configuration, logging, and the assembly of
//! every service into one process. `main.rs` is only the command line.

pub mod app;
pub mod backup;
pub mod computeagent;
pub mod config;
pub mod default_networks;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod netagent;
pub mod recorder;
pub mod status;
pub mod test_image;
pub mod tls;
pub mod volagent;

pub use app::{Cloud, CloudHandle};
pub use config::Config;
