//! `stratus-qemu`: everything Stratus needs to run guests with QEMU directly,
//! without libvirt.
//!
//! The compute agent's `qemu` virt driver wraps this crate. It is split by
//! concern so that each piece can be tested on its own:
//!
//! - [`accel`]: pick KVM or TCG (a `/dev/kvm` alone is not proof of usable KVM).
//! - [`binary`]: locate `qemu-system-x86_64` and probe what it supports.
//! - [`cmdline`]: render a typed [`cmdline::GuestSpec`] into QEMU's argv.
//! - [`qmp`]: a small typed QMP client over the monitor's unix socket.
//! - [`process`]: spawn, adopt, stop, suspend and resume one QEMU per instance directory.
//! - [`guest_user`]: the unprivileged uid each guest's QEMU runs as.
//! - [`tap`]: tap devices created for QEMU and passed to it as fds.
//! - [`console`]: read the serial console log (`console.log`) and wait for markers.
//! - [`img`]: `qemu-img` wrappers (overlays, info, convert, resize).
//!
//! Nothing here knows about OpenStack objects; the driver maps servers and
//! flavors onto [`cmdline::GuestSpec`].

pub mod accel;
pub mod binary;
pub mod cmdline;
pub mod console;
pub mod guest_user;
pub mod img;
pub mod process;
pub mod qmp;
pub mod tap;

pub use accel::{Accel, ResolvedAccel};
pub use binary::QemuBinary;
pub use cmdline::GuestSpec;
pub use process::{InstanceDir, QemuProcess};
pub use qmp::QmpClient;
