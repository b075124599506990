//! Accelerator choice: KVM when the host really has it, TCG otherwise.
//!
//! `/dev/kvm` existing is not enough. On hosts whose KVM is provided by
//! `kvm_pvm` (a paging-based nested hypervisor) an unmodified guest kernel is
//! emulated instruction by instruction and dies with "emulation failure" after
//! minutes, while QMP's `query-kvm` still says `enabled: true`. Real hardware
//! virtualization shows up as the `kvm_intel` or `kvm_amd` module, so `auto`
//! picks KVM only when one of those is loaded. This mirrors Nova's
//! `virt_type = kvm | qemu` knob, with an `auto` default.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM if `kvm_intel`/`kvm_amd` is loaded, TCG otherwise.
    #[default]
    Auto,
    /// Always KVM (fails at QEMU start if unavailable).
    Kvm,
    /// Always TCG (pure emulation). Nova calls this `virt_type = qemu`.
    Tcg,
}

/// The accelerator actually put on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// Hardware virtualization.
    Kvm,
    /// The Tiny Code Generator (emulation).
    Tcg,
}

impl ResolvedAccel {
    /// The value for QEMU's `-accel`.
    pub fn as_qemu_arg(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for ResolvedAccel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_qemu_arg())
    }
}

/// An accelerator name that is not `auto`, `kvm`, `tcg` or `qemu`.
#[derive(Debug, thiserror::Error)]
#[error("unknown accelerator {0:?} (expected auto, kvm, tcg or qemu)")]
pub struct UnknownAccel(String);

impl FromStr for Accel {
    type Err = UnknownAccel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            // Nova's virt_type spells TCG "qemu".
            "tcg" | "qemu" => Ok(Accel::Tcg),
            _ => Err(UnknownAccel(s.to_owned())),
        }
    }
}

impl Accel {
    /// Resolve against this host (`/sys/module`). The `auto` probe runs and
    /// is logged once per process.
    pub fn resolve(self) -> ResolvedAccel {
        static AUTO: OnceLock<ResolvedAccel> = OnceLock::new();
        match self {
            Accel::Kvm => ResolvedAccel::Kvm,
            Accel::Tcg => ResolvedAccel::Tcg,
            Accel::Auto => *AUTO.get_or_init(|| {
                let r = detect(Path::new("/sys/module"));
                tracing::info!(
                    accel = %r,
                    "accelerator auto-detected (KVM only with kvm_intel/kvm_amd loaded)"
                );
                r
            }),
        }
    }

    /// Resolve against a given `/sys/module` directory (for tests).
    pub fn resolve_with(self, sys_module: &Path) -> ResolvedAccel {
        match self {
            Accel::Kvm => ResolvedAccel::Kvm,
            Accel::Tcg => ResolvedAccel::Tcg,
            Accel::Auto => detect(sys_module),
        }
    }
}

fn detect(sys_module: &Path) -> ResolvedAccel {
    if sys_module.join("kvm_intel").exists() || sys_module.join("kvm_amd").exists() {
        ResolvedAccel::Kvm
    } else {
        ResolvedAccel::Tcg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_only_resolves_to_tcg() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("kvm")).unwrap();
        std::fs::create_dir(d.path().join("kvm_pvm")).unwrap();
        assert_eq!(Accel::Auto.resolve_with(d.path()), ResolvedAccel::Tcg);
        std::fs::create_dir(d.path().join("kvm_amd")).unwrap();
        assert_eq!(Accel::Auto.resolve_with(d.path()), ResolvedAccel::Kvm);
        assert_eq!(Accel::Tcg.resolve_with(d.path()), ResolvedAccel::Tcg);
    }

    #[test]
    fn parses_nova_names() {
        assert_eq!("qemu".parse::<Accel>().unwrap(), Accel::Tcg);
        assert_eq!("KVM".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
        assert!("xen".parse::<Accel>().is_err());
    }

    #[test]
    fn this_host_is_resolved_consistently() {
        let expected = detect(Path::new("/sys/module"));
        assert_eq!(Accel::Auto.resolve(), expected);
    }
}
