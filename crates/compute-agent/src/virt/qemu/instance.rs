//! One server's directory (`<instances>/<uuid>/`) and how a server becomes a QEMU
//! command line.
//!
//! The layout mirrors Nova's so an operator finds things: `disk` (qcow2 overlay on
//! `_base/<image-id>`, sized to the flavor's root disk), `disk.eph0` and `disk.swap`
//! when the flavor has them, `disk.rescue` while rescued, `console.log`, plus the
//! `stratus-qemu` files (`qmp.sock`, `vnc.sock`, `qemu.pid`, `qemu.log`, `memory.state`
//! while suspended). Everything the driver needs to know about a guest's state is
//! in these files or in QEMU itself, so an agent restart loses nothing.

use std::path::{Path, PathBuf};

use stratus_qemu::cmdline::{DiskBus, DiskFormat, DiskSpec, KernelBoot, NicBackend, NicModel, NicSpec};
use stratus_qemu::{InstanceDir, ResolvedAccel};

use crate::virt::VirtError;
use stratus_compute_proto::spec::{GuestSpec, ImageSpec};

/// Files of one server.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The `stratus-qemu` view (sockets, pid, console, memory state).
    pub dir: InstanceDir,
}

/// Boot files resolved from the image (direct kernel boot).
#[derive(Debug, Clone, Default)]
pub struct BootFiles {
    /// Kernel from the image's `kernel_id`.
    pub kernel: Option<PathBuf>,
    /// Initrd from the image's `ramdisk_id`.
    pub ramdisk: Option<PathBuf>,
    /// Kernel command line (`os_command_line` or a default).
    pub cmdline: Option<String>,
    /// UEFI firmware (`hw_firmware_type=uefi`); the variables are the instance's `nvram.fd`.
    pub uefi_code: Option<PathBuf>,
}

/// The tap name QEMU creates for a port: what the network agent looks for
/// (`stratus_network_agent::exec::names::tap`: `tap` + the first 11 alphanumerics of the
/// port id, lower case; Neutron's own names keep the hyphen).
pub fn tap_name(port_id: &str) -> String {
    let short: String =
        port_id.chars().filter(char::is_ascii_alphanumeric).take(11).collect::<String>().to_ascii_lowercase();
    format!("tap{short}")
}

fn prop<'a>(image: Option<&'a ImageSpec>, key: &str) -> Option<&'a str> {
    image.and_then(|i| i.properties.get(key)).and_then(|v| v.as_str())
}

impl Instance {
    /// `<instances>/<uuid>`.
    pub fn new(instances: &Path, uuid: &str) -> Self {
        Instance { dir: InstanceDir::new(instances.join(uuid)) }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        self.dir.root()
    }
    /// The root disk overlay.
    pub fn disk(&self) -> PathBuf {
        self.root().join("disk")
    }
    /// The ephemeral disk.
    pub fn ephemeral(&self) -> PathBuf {
        self.root().join("disk.eph0")
    }
    /// The swap disk.
    pub fn swap(&self) -> PathBuf {
        self.root().join("disk.swap")
    }
    /// The config drive (ISO9660 `config-2`), when the server asked for one.
    pub fn config_drive(&self) -> PathBuf {
        self.root().join("disk.config")
    }
    /// The UEFI variable store of a `hw_firmware_type=uefi` guest.
    pub fn nvram(&self) -> PathBuf {
        self.root().join("nvram.fd")
    }
    /// The rescue overlay; its presence means "rescued".
    pub fn rescue_disk(&self) -> PathBuf {
        self.root().join("disk.rescue")
    }
    /// Whether the guest is booted (or to be booted) from its rescue disk.
    pub fn is_rescued(&self) -> bool {
        self.rescue_disk().exists()
    }
    /// Whether the directory exists at all.
    pub fn exists(&self) -> bool {
        self.root().is_dir()
    }

    /// The `stratus-qemu` spec of this server: flavor, image hardware properties,
    /// disks present in the directory, ports as taps.
    pub fn qemu_spec(
        &self,
        spec: &GuestSpec,
        accel: ResolvedAccel,
        boot: &BootFiles,
    ) -> Result<stratus_qemu::GuestSpec, VirtError> {
        let uuid = uuid::Uuid::parse_str(&spec.uuid)
            .map_err(|_| VirtError::Failed(format!("server id {:?} is not a UUID", spec.uuid)))?;
        let memory = u32::try_from(spec.flavor.memory_mb).unwrap_or(u32::MAX);
        let mut q = stratus_qemu::GuestSpec::new(spec.uuid.clone(), uuid, memory, accel);
        q.vcpus = spec.flavor.vcpus.max(1);
        let image = spec.image.as_ref();
        if let Some(m) = prop(image, "hw_machine_type") {
            q.machine = m.to_string();
        }
        if let Some(code) = &boot.uefi_code {
            q.uefi = Some(stratus_qemu::cmdline::Uefi { code: code.clone(), vars: self.nvram() });
        }
        // Nova's libvirt driver for `os_type=windows`: the clock in local time, Hyper-V
        // enlightenments (which only KVM has; the renderer leaves them out under TCG).
        if prop(image, "os_type") == Some("windows") {
            q.rtc_localtime = true;
            q.hyperv = true;
        }
        let bus = match prop(image, "hw_disk_bus") {
            Some("ide") => DiskBus::Ide,
            Some("scsi") => DiskBus::Scsi,
            _ => DiskBus::Virtio,
        };
        let disk = |path: PathBuf| DiskSpec { bus, ..DiskSpec::qcow2(path) };
        if self.is_rescued() {
            q.disks.push(disk(self.rescue_disk()));
        }
        // Booted from a volume: that volume is the root disk, in place of an overlay.
        match spec.volumes.iter().find(|v| v.is_root()) {
            Some(root) => q.disks.push(super::volumes::disk_spec(root, bus)?),
            None => q.disks.push(disk(self.disk())),
        }
        if self.ephemeral().exists() {
            q.disks.push(disk(self.ephemeral()));
        }
        if self.swap().exists() {
            q.disks.push(disk(self.swap()));
        }
        if self.config_drive().exists() {
            // A CD-ROM like Nova's default (`config_drive_format = iso9660`); virtio has no CD-ROM.
            q.disks.push(DiskSpec {
                format: DiskFormat::Raw,
                bus: DiskBus::Ide,
                cdrom: true,
                read_only: true,
                ..DiskSpec::qcow2(self.config_drive())
            });
        }
        // Attached volumes after the local disks, in the order they were attached.
        for v in spec.volumes.iter().filter(|v| !v.is_root()) {
            q.disks.push(super::volumes::disk_spec(v, DiskBus::Virtio)?);
        }
        if let Some(kernel) = &boot.kernel {
            q.kernel = Some(KernelBoot {
                kernel: kernel.clone(),
                initrd: boot.ramdisk.clone(),
                append: Some(
                    boot.cmdline.clone().unwrap_or_else(|| "root=/dev/vda console=tty0 console=ttyS0,115200n8".into()),
                ),
            });
        }
        let model = match prop(image, "hw_vif_model") {
            Some("e1000") => NicModel::E1000,
            _ => NicModel::Virtio,
        };
        for p in &spec.ports {
            q.nics.push(NicSpec {
                mac: p.mac_address.clone(),
                backend: NicBackend::TapName(tap_name(&p.id)),
                model,
                mtu: p.mtu,
            });
        }
        q.validate().map_err(|e| VirtError::Failed(format!("cannot boot {}: {e}", spec.uuid)))?;
        Ok(q)
    }
}

/// The metadata a config drive carries, from what the controller sent.
pub fn metadata_facts(spec: &GuestSpec) -> stratus_compute_proto::metadata::InstanceFacts {
    use base64::Engine;
    let user_data =
        spec.user_data.as_deref().and_then(|u| base64::engine::general_purpose::STANDARD.decode(u.trim()).ok());
    stratus_compute_proto::metadata::InstanceFacts {
        uuid: spec.uuid.clone(),
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        project_id: spec.project_id.clone(),
        availability_zone: "nova".into(),
        flavor_name: spec.flavor.name.clone(),
        image_id: spec.image.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
        key: spec.key_data.clone().map(|k| ("key".to_string(), k)),
        user_data,
        meta: spec.metadata.clone(),
        nics: spec
            .ports
            .iter()
            .map(|p| stratus_compute_proto::metadata::NicFacts {
                port_id: p.id.clone(),
                network_id: p.network_id.clone(),
                mac: p.mac_address.clone(),
                mtu: p.mtu,
                ips: Vec::new(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Writes `files` into an ISO9660 image labelled `config-2` at `out` (genisoimage, or
/// mkisofs/xorrisofs, as scripts/install-host-packages.sh installs).
pub async fn write_config_drive(
    out: &Path,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<(), VirtError> {
    let fail = |e: String| VirtError::Failed(format!("config drive: {e}"));
    let tree = out.with_extension("tree");
    let _ = tokio::fs::remove_dir_all(&tree).await;
    for (rel, content) in files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(fail(format!("bad path {rel:?}")));
        }
        let p = tree.join(rel);
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| fail(e.to_string()))?;
        }
        tokio::fs::write(&p, content).await.map_err(|e| fail(e.to_string()))?;
    }
    let tool = ["genisoimage", "mkisofs", "xorrisofs"]
        .into_iter()
        .find(|t| stratus_qemu::binary::which(t).is_some())
        .ok_or_else(|| fail("genisoimage is not installed (scripts/install-host-packages.sh)".into()))?;
    let part = out.with_extension("part");
    let st = tokio::process::Command::new(tool)
        .args(["-quiet", "-o"])
        .arg(&part)
        .args(["-V", "config-2", "-r", "-J"])
        .arg(&tree)
        .output()
        .await
        .map_err(|e| fail(format!("{tool}: {e}")))?;
    let _ = tokio::fs::remove_dir_all(&tree).await;
    if !st.status.success() {
        return Err(fail(format!("{tool} failed: {}", String::from_utf8_lossy(&st.stderr))));
    }
    tokio::fs::rename(&part, out).await.map_err(|e| fail(e.to_string()))
}

/// The raw disk format for blank disks and overlays.
pub const OVERLAY_FORMAT: DiskFormat = DiskFormat::Qcow2;

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_compute_proto::spec::{FlavorSpec, PortSpec};

    #[test]
    fn spec_maps_flavor_image_properties_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f";
        let inst = Instance::new(dir.path(), uuid);
        std::fs::create_dir_all(inst.root()).unwrap();
        std::fs::write(inst.ephemeral(), b"").unwrap();
        let mut image = ImageSpec { id: "img".into(), ..Default::default() };
        image.properties.insert("hw_disk_bus".into(), "scsi".into());
        image.properties.insert("hw_machine_type".into(), "q35".into());
        let spec = GuestSpec {
            uuid: uuid.into(),
            flavor: FlavorSpec { vcpus: 2, memory_mb: 128, ..Default::default() },
            image: Some(image),
            ports: vec![PortSpec {
                id: "0123456789abcdef".into(),
                mac_address: "fa:16:3e:00:00:01".into(),
                mtu: Some(1450),
                ..Default::default()
            }],
            ..Default::default()
        };
        let q = inst.qemu_spec(&spec, ResolvedAccel::Tcg, &BootFiles::default()).unwrap();
        assert_eq!((q.vcpus, q.memory_mib, q.machine.as_str()), (2, 128, "q35"));
        assert_eq!(q.disks.len(), 2);
        assert_eq!(q.disks[0].bus, DiskBus::Scsi);
        assert_eq!(q.nics[0].backend, NicBackend::TapName("tap0123456789a".into()));
        assert_eq!(q.nics[0].mtu, Some(1450));
        assert_eq!(tap_name("68a56d59-2a9f-4c1e-8d0b-000000000000"), "tap68a56d592a9");
        std::fs::write(inst.rescue_disk(), b"").unwrap();
        let q = inst.qemu_spec(&spec, ResolvedAccel::Tcg, &BootFiles::default()).unwrap();
        assert_eq!(q.disks[0].path, inst.rescue_disk());
        let mut small = spec.clone();
        small.flavor.memory_mb = 64;
        assert!(inst.qemu_spec(&small, ResolvedAccel::Tcg, &BootFiles::default()).is_err());
    }

    #[test]
    fn windows_and_uefi_images_get_their_clock_and_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f";
        let inst = Instance::new(dir.path(), uuid);
        let mut image = ImageSpec { id: "img".into(), ..Default::default() };
        image.properties.insert("os_type".into(), "windows".into());
        let spec = GuestSpec {
            uuid: uuid.into(),
            flavor: FlavorSpec { vcpus: 1, memory_mb: 256, ..Default::default() },
            image: Some(image),
            ..Default::default()
        };
        let boot = BootFiles { uefi_code: Some("/fw/OVMF_CODE_4M.fd".into()), ..Default::default() };
        let q = inst.qemu_spec(&spec, ResolvedAccel::Kvm, &boot).unwrap();
        assert!(q.rtc_localtime && q.hyperv);
        let uefi = q.uefi.expect("UEFI firmware");
        assert_eq!((uefi.code.as_path(), uefi.vars), (Path::new("/fw/OVMF_CODE_4M.fd"), inst.nvram()));
        let linux = GuestSpec { image: Some(ImageSpec { id: "img".into(), ..Default::default() }), ..spec };
        let q = inst.qemu_spec(&linux, ResolvedAccel::Kvm, &BootFiles::default()).unwrap();
        assert!(!q.rtc_localtime && !q.hyperv && q.uefi.is_none(), "BIOS and UTC by default");
    }
}
