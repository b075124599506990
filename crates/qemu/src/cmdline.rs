//! Rendering a typed [`GuestSpec`] into QEMU's argv.
//!
//! Why a pure function: the command line is the contract between Stratus and
//! QEMU, and the only part of the driver that can be checked exhaustively
//! without booting anything. [`render`] has no I/O; unit tests assert the exact
//! argv.
//!
//! Choices baked in (each from an observed failure or an operator need):
//! - `-nodefaults -no-user-config`: nothing appears that the spec did not ask for.
//! - no network unless NICs are given (`-nic none`).
//! - always `virtio-rng-pci`: without it, TCG guests have no early entropy and
//!   sshd key generation blocks for ~10 s.
//! - serial console to `console.log` with `append=on`, so that a resumed QEMU
//!   does not truncate the log.
//! - VNC and QMP on unix sockets inside the instance directory: no TCP ports to
//!   allocate, and they keep working when QEMU runs in another network namespace.
//! - `-incoming defer` for resume, `-sandbox on` when QEMU has seccomp.

use std::fmt;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::accel::ResolvedAccel;

/// Errors in a [`GuestSpec`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Memory below what a Debian kernel can boot in (its init_size plus the 16 MiB load address).
    #[error("memory {0} MiB is below the minimum of {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u32),
    /// Zero vCPUs.
    #[error("vcpus must be at least 1")]
    NoVcpus,
    /// A MAC address that is not `xx:xx:xx:xx:xx:xx`.
    #[error("invalid MAC address {0:?}")]
    BadMac(String),
    /// A value that would break QEMU's comma-separated option syntax.
    #[error("{what} {value:?} contains a character QEMU options cannot carry")]
    BadValue {
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// Smallest `-m` accepted: Debian kernels need ~68 MiB just to decompress.
pub const MIN_MEMORY_MIB: u32 = 80;

/// Disk bus, like Nova's `hw_disk_bus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// `virtio-blk-pci`.
    #[default]
    Virtio,
    /// The PIIX IDE controller of the `pc` machine.
    Ide,
    /// `scsi-hd` on a `virtio-scsi-pci` controller.
    Scsi,
}

/// Image format of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskFormat {
    /// qcow2 (overlays, snapshots).
    #[default]
    Qcow2,
    /// raw.
    Raw,
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        })
    }
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Image path.
    pub path: PathBuf,
    /// Format (always explicit: never let QEMU probe a guest-writable image).
    pub format: DiskFormat,
    /// Bus.
    pub bus: DiskBus,
    /// Serial the guest sees (`/sys/block/vdX/serial`): volumes are found by it.
    pub serial: Option<String>,
    /// Read-only (config drives).
    pub read_only: bool,
    /// Present as a CD-ROM (IDE/SCSI only; virtio has no CD-ROM).
    pub cdrom: bool,
    /// Device id (the drive's is `drive-<id>`); None: `disk<index>`. Volumes carry a
    /// stable one, so they can be unplugged after a restart as after a hot-plug.
    pub id: Option<String>,
}

impl DiskSpec {
    /// A read-write qcow2 virtio disk.
    pub fn qcow2(path: impl Into<PathBuf>) -> Self {
        DiskSpec {
            path: path.into(),
            format: DiskFormat::Qcow2,
            bus: DiskBus::Virtio,
            serial: None,
            read_only: false,
            cdrom: false,
            id: None,
        }
    }
}

/// Direct kernel boot (Nova's image `kernel_id`/`ramdisk_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// `-kernel`.
    pub kernel: PathBuf,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append`.
    pub append: Option<String>,
}

/// NIC model, like Nova's `hw_vif_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NicModel {
    /// `virtio-net-pci`.
    #[default]
    Virtio,
    /// `e1000` (note: Debian's cloud kernel has no e1000 driver).
    E1000,
}

/// Where a NIC's packets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBackend {
    /// An existing tap device by name (QEMU needs CAP_NET_ADMIN on it, or a persistent tap).
    TapName(String),
    /// An open tap fd inherited by QEMU (libvirt style: QEMU needs no privileges).
    TapFd(RawFd),
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// MAC, `fa:16:3e:..` for Neutron ports.
    pub mac: String,
    /// Backend.
    pub backend: NicBackend,
    /// Model.
    pub model: NicModel,
    /// MTU the guest is told about (`host_mtu`, virtio only): the network's MTU.
    pub mtu: Option<u32>,
}

/// Everything about a guest that ends up on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// Instance name (`-name guest=..`, visible in `ps`).
    pub name: String,
    /// Instance UUID (SMBIOS system UUID, as Nova sets it).
    pub uuid: Uuid,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Machine type, e.g. `pc` or `q35`.
    pub machine: String,
    /// Accelerator.
    pub accel: ResolvedAccel,
    /// `-cpu`; `None` is QEMU's default for TCG and `host` for KVM.
    pub cpu_model: Option<String>,
    /// Disks in boot order.
    pub disks: Vec<DiskSpec>,
    /// Direct kernel boot instead of booting from the first disk.
    pub kernel: Option<KernelBoot>,
    /// NICs; empty means no network at all.
    pub nics: Vec<NicSpec>,
    /// UEFI firmware instead of SeaBIOS (image property `hw_firmware_type=uefi`).
    pub uefi: Option<Uefi>,
    /// The real-time clock keeps local time, as Windows expects (`os_type=windows`).
    pub rtc_localtime: bool,
    /// Hyper-V enlightenments for Windows guests (`os_type=windows`); KVM only,
    /// TCG does not implement them.
    pub hyperv: bool,
}

/// The two flash chips of OVMF: the firmware, shared and read-only, and the
/// guest's own variable store (EFI boot entries), writable, in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uefi {
    /// `OVMF_CODE*.fd`.
    pub code: PathBuf,
    /// The instance's copy of `OVMF_VARS*.fd`.
    pub vars: PathBuf,
}

impl GuestSpec {
    /// A minimal spec: `pc` machine, 1 vCPU, no disks, no NICs.
    pub fn new(name: impl Into<String>, uuid: Uuid, memory_mib: u32, accel: ResolvedAccel) -> Self {
        GuestSpec {
            name: name.into(),
            uuid,
            memory_mib,
            vcpus: 1,
            machine: "pc".into(),
            accel,
            cpu_model: None,
            disks: Vec::new(),
            kernel: None,
            nics: Vec::new(),
            uefi: None,
            rtc_localtime: false,
            hyperv: false,
        }
    }

    /// Check the spec before rendering.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::MemoryTooSmall(self.memory_mib));
        }
        if self.vcpus == 0 {
            return Err(SpecError::NoVcpus);
        }
        check_value("name", &self.name)?;
        check_value("machine", &self.machine)?;
        for d in &self.disks {
            check_value("disk path", &d.path.to_string_lossy())?;
            if let Some(s) = &d.serial {
                check_value("disk serial", s)?;
            }
            if let Some(id) = &d.id {
                check_value("disk id", id)?;
            }
        }
        for n in &self.nics {
            if !is_mac(&n.mac) {
                return Err(SpecError::BadMac(n.mac.clone()));
            }
            if let NicBackend::TapName(t) = &n.backend {
                check_value("tap name", t)?;
            }
        }
        if let Some(u) = &self.uefi {
            check_value("firmware path", &u.code.to_string_lossy())?;
            check_value("firmware variables path", &u.vars.to_string_lossy())?;
        }
        if let Some(k) = &self.kernel {
            check_value("kernel path", &k.kernel.to_string_lossy())?;
            if let Some(i) = &k.initrd {
                check_value("initrd path", &i.to_string_lossy())?;
            }
        }
        Ok(())
    }
}

/// Per-instance files QEMU is pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// QMP monitor socket.
    pub qmp: PathBuf,
    /// VNC server socket.
    pub vnc: PathBuf,
    /// Serial console log.
    pub console: PathBuf,
    /// QEMU's pid file.
    pub pid: PathBuf,
}

impl RunPaths {
    /// The standard layout inside an instance directory.
    pub fn in_dir(dir: &Path) -> Self {
        RunPaths {
            qmp: dir.join("qmp.sock"),
            vnc: dir.join("vnc.sock"),
            console: dir.join("console.log"),
            pid: dir.join("qemu.pid"),
        }
    }
}

/// Launch-time switches that are not part of the guest's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchOptions {
    /// Wait for `migrate-incoming` (resume from a saved state).
    pub incoming_defer: bool,
    /// Add `-sandbox on,...` (QEMU built with seccomp).
    pub sandbox: bool,
    /// Start with CPUs stopped (`-S`).
    pub start_paused: bool,
}

fn check_value(what: &'static str, value: &str) -> Result<(), SpecError> {
    // Commas could be escaped as ",,", but no legitimate value needs them, and
    // control characters never belong on a command line.
    if value.is_empty() || value.contains(',') || value.chars().any(char::is_control) {
        return Err(SpecError::BadValue { what, value: value.to_owned() });
    }
    Ok(())
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Render the argv (without the binary itself).
pub fn render(spec: &GuestSpec, paths: &RunPaths, opts: LaunchOptions) -> Result<Vec<String>, SpecError> {
    spec.validate()?;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    let p = |p: &Path| p.to_string_lossy().into_owned();

    push(&["-name", &format!("guest={},debug-threads=on", spec.name)]);
    push(&["-uuid", &spec.uuid.to_string()]);
    push(&["-machine", &spec.machine]);
    push(&["-accel", spec.accel.as_qemu_arg()]);
    // Nova's Windows set: relaxed timing, paravirtual APIC and spinlocks, a
    // reference clock; TCG has none of them.
    let hv = if spec.hyperv && spec.accel == ResolvedAccel::Kvm {
        ",hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-time=on"
    } else {
        ""
    };
    match (&spec.cpu_model, spec.accel) {
        (Some(cpu), _) => push(&["-cpu", &format!("{cpu}{hv}")]),
        (None, ResolvedAccel::Kvm) => push(&["-cpu", &format!("host{hv}")]),
        (None, ResolvedAccel::Tcg) => {}
    }
    push(&["-m", &spec.memory_mib.to_string()]);
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-nodefaults", "-no-user-config"]);
    push(&["-msg", "timestamp=on"]);
    if opts.sandbox {
        push(&["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
    }
    push(&["-pidfile", &p(&paths.pid)]);
    push(&["-chardev", &format!("socket,id=qmp,path={},server=on,wait=off", p(&paths.qmp))]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    push(&["-display", "none"]);
    push(&["-vga", "std"]);
    push(&["-vnc", &format!("unix:{}", p(&paths.vnc))]);
    push(&["-chardev", &format!("file,id=serial0,path={},append=on", p(&paths.console))]);
    push(&["-serial", "chardev:serial0"]);
    push(&["-device", "virtio-rng-pci,id=rng0"]);
    if spec.rtc_localtime {
        push(&["-rtc", "base=localtime"]);
    }
    if let Some(u) = &spec.uefi {
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", p(&u.code))]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", p(&u.vars))]);
    }

    if spec.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        push(&["-device", "virtio-scsi-pci,id=scsi0"]);
    }
    let mut ide_unit = 0;
    for (i, d) in spec.disks.iter().enumerate() {
        let ro = if d.read_only || d.cdrom { ",read-only=on" } else { "" };
        let id = d.id.clone().unwrap_or_else(|| format!("disk{i}"));
        push(&["-drive", &format!("file={},format={},if=none,id=drive-{id}{ro}", p(&d.path), d.format)]);
        let serial = d.serial.as_ref().map(|s| format!(",serial={s}")).unwrap_or_default();
        // Boot from the first disk unless the kernel is loaded directly.
        let boot = if i == 0 && spec.kernel.is_none() { ",bootindex=1" } else { "" };
        let dev = match (d.bus, d.cdrom) {
            (DiskBus::Virtio, _) => {
                format!("virtio-blk-pci,drive=drive-{id},id={id}{serial}{boot}")
            }
            (DiskBus::Ide, cd) => {
                let unit = ide_unit;
                ide_unit += 1;
                let kind = if cd { "ide-cd" } else { "ide-hd" };
                // pc (PIIX): 2 buses x master/slave; q35 (AHCI): 6 ports, one device each.
                let addr = if spec.machine.starts_with("q35") {
                    format!("bus=ide.{unit}")
                } else {
                    format!("bus=ide.{},unit={}", unit / 2, unit % 2)
                };
                format!("{kind},drive=drive-{id},id={id},{addr}{serial}{boot}")
            }
            (DiskBus::Scsi, cd) => {
                let kind = if cd { "scsi-cd" } else { "scsi-hd" };
                format!("{kind},drive=drive-{id},id={id},bus=scsi0.0{serial}{boot}")
            }
        };
        push(&["-device", &dev]);
    }

    if let Some(k) = &spec.kernel {
        push(&["-kernel", &p(&k.kernel)]);
        if let Some(i) = &k.initrd {
            push(&["-initrd", &p(i)]);
        }
        if let Some(ap) = &k.append {
            push(&["-append", ap]);
        }
    }

    if spec.nics.is_empty() {
        push(&["-nic", "none"]);
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let backend = match &n.backend {
            NicBackend::TapName(t) => format!("tap,id=net{i},ifname={t},script=no,downscript=no"),
            NicBackend::TapFd(fd) => format!("tap,id=net{i},fd={fd}"),
        };
        push(&["-netdev", &backend]);
        let model = match n.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        };
        let mtu = match (n.model, n.mtu) {
            (NicModel::Virtio, Some(m)) => format!(",host_mtu={m}"),
            _ => String::new(),
        };
        push(&["-device", &format!("{model},netdev=net{i},id=nic{i},mac={}{mtu}", n.mac)]);
    }

    if opts.start_paused {
        push(&["-S"]);
    }
    if opts.incoming_defer {
        push(&["-incoming", "defer"]);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GuestSpec {
        GuestSpec::new("vm1", Uuid::parse_str("8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f").unwrap(), 128, ResolvedAccel::Tcg)
    }

    fn paths() -> RunPaths {
        RunPaths::in_dir(Path::new("/run/i1"))
    }

    fn joined(argv: &[String]) -> String {
        argv.join(" ")
    }

    #[test]
    fn minimal_direct_boot_argv_is_exact() {
        let mut s = spec();
        s.kernel = Some(KernelBoot {
            kernel: "/img/vmlinuz".into(),
            initrd: Some("/img/initrd.img".into()),
            append: Some("console=ttyS0,115200n8".into()),
        });
        let argv = render(&s, &paths(), LaunchOptions::default()).unwrap();
        #[rustfmt::skip]
        let expected: Vec<&str> = vec![
            "-name", "guest=vm1,debug-threads=on",
            "-uuid", "8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f",
            "-machine", "pc",
            "-accel", "tcg",
            "-m", "128",
            "-smp", "1",
            "-nodefaults", "-no-user-config",
            "-msg", "timestamp=on",
            "-pidfile", "/run/i1/qemu.pid",
            "-chardev", "socket,id=qmp,path=/run/i1/qmp.sock,server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-display", "none",
            "-vga", "std",
            "-vnc", "unix:/run/i1/vnc.sock",
            "-chardev", "file,id=serial0,path=/run/i1/console.log,append=on",
            "-serial", "chardev:serial0",
            "-device", "virtio-rng-pci,id=rng0",
            "-kernel", "/img/vmlinuz",
            "-initrd", "/img/initrd.img",
            "-append", "console=ttyS0,115200n8",
            "-nic", "none",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn disks_on_every_bus_with_serials_and_boot_order() {
        let mut s = spec();
        s.disks.push(DiskSpec::qcow2("/i/disk"));
        s.disks.push(DiskSpec { serial: Some("vol-1".into()), bus: DiskBus::Scsi, ..DiskSpec::qcow2("/v/vol1") });
        s.disks.push(DiskSpec {
            format: DiskFormat::Raw,
            bus: DiskBus::Ide,
            cdrom: true,
            ..DiskSpec::qcow2("/i/config.iso")
        });
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("-device virtio-scsi-pci,id=scsi0"));
        assert!(j.contains(
            "-drive file=/i/disk,format=qcow2,if=none,id=drive-disk0 -device virtio-blk-pci,drive=drive-disk0,id=disk0,bootindex=1"
        ));
        assert!(j.contains("-device scsi-hd,drive=drive-disk1,id=disk1,bus=scsi0.0,serial=vol-1 "));
        assert!(j.contains("format=raw,if=none,id=drive-disk2,read-only=on"));
        assert!(j.contains("-device ide-cd,drive=drive-disk2,id=disk2,bus=ide.0,unit=0"));
        assert!(!j.contains("-kernel"));

        s.disks[0].bus = DiskBus::Ide;
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("ide-hd,drive=drive-disk0,id=disk0,bus=ide.0,unit=0,bootindex=1"));
        assert!(j.contains("ide-cd,drive=drive-disk2,id=disk2,bus=ide.0,unit=1"));
        s.machine = "q35".into();
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("ide-cd,drive=drive-disk2,id=disk2,bus=ide.1 "), "{j}");
    }

    #[test]
    fn uefi_and_windows_guests() {
        let mut s = spec();
        s.uefi = Some(Uefi { code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(), vars: "/run/i1/nvram.fd".into() });
        s.rtc_localtime = true;
        s.hyperv = true;
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=/run/i1/nvram.fd"), "{j}");
        assert!(j.contains("-rtc base=localtime"), "{j}");
        assert!(!j.contains("hv-"), "TCG has no Hyper-V enlightenments: {j}");
        s.accel = ResolvedAccel::Kvm;
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("-cpu host,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-time=on"), "{j}");
        s.uefi.as_mut().unwrap().vars = "/run/i1/nv,ram.fd".into();
        assert!(render(&s, &paths(), LaunchOptions::default()).is_err(), "a comma would smuggle options");
    }

    #[test]
    fn nics_taps_and_models() {
        let mut s = spec();
        s.nics.push(NicSpec {
            mac: "fa:16:3e:00:00:01".into(),
            backend: NicBackend::TapName("tap0".into()),
            model: NicModel::Virtio,
            mtu: Some(1450),
        });
        s.nics.push(NicSpec {
            mac: "fa:16:3e:00:00:02".into(),
            backend: NicBackend::TapFd(9),
            model: NicModel::E1000,
            mtu: Some(1450),
        });
        let j = joined(&render(&s, &paths(), LaunchOptions::default()).unwrap());
        assert!(j.contains("-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0,id=nic0,mac=fa:16:3e:00:00:01,host_mtu=1450"));
        assert!(j.contains("-netdev tap,id=net1,fd=9 -device e1000,netdev=net1,id=nic1,mac=fa:16:3e:00:00:02"));
        assert!(!j.contains("-nic none"));
    }

    #[test]
    fn launch_options_and_kvm() {
        let mut s = spec();
        s.accel = ResolvedAccel::Kvm;
        let opts = LaunchOptions { incoming_defer: true, sandbox: true, start_paused: true };
        let argv = render(&s, &paths(), opts).unwrap();
        let j = joined(&argv);
        assert!(j.contains("-accel kvm -cpu host"));
        assert!(j.contains("-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
        assert!(j.ends_with("-S -incoming defer"));
    }

    #[test]
    fn rejects_bad_specs() {
        let mut s = spec();
        s.memory_mib = 64;
        assert_eq!(render(&s, &paths(), LaunchOptions::default()), Err(SpecError::MemoryTooSmall(64)));
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(s.validate(), Err(SpecError::NoVcpus));
        let mut s = spec();
        s.name = "a,b".into();
        assert!(matches!(s.validate(), Err(SpecError::BadValue { what: "name", .. })));
        let mut s = spec();
        s.disks.push(DiskSpec::qcow2("/x,file=/etc/shadow"));
        assert!(s.validate().is_err());
        let mut s = spec();
        s.nics.push(NicSpec {
            mac: "fa:16:3e:zz:00:01".into(),
            backend: NicBackend::TapName("t".into()),
            model: NicModel::Virtio,
            mtu: None,
        });
        assert!(matches!(s.validate(), Err(SpecError::BadMac(_))));
    }
}
