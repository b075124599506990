//! Format inspection of uploaded image data: what the bytes really are.
//!
//! A hypervisor that opens an image trusts its header. A qcow2 that names a backing file
//! or an external data file makes QEMU open that path on the compute host (the class of
//! bug behind OpenStack's format-inspector advisories, OSSA-2024-001/002); a VMDK
//! descriptor can name extent files the same way, and a VHD can be a differencing disk
//! with a parent. So every upload is inspected while it streams: [`Inspector`] keeps
//! the first [`HEAD_BYTES`] and the last 512 bytes (a fixed VHD's footer), and
//! [`Inspector::finish`] parses them in Rust. The declared `disk_format` must match
//! ([`verify`]), unsafe features are rejected whatever was declared, and `qemu-img info`
//! ([`qemu_second_opinion`]) is asked too, but only after the Rust parser found the data
//! safe to hand to it, and always with the format pinned so it never probes.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Bytes kept from the start of the stream: every header we parse lives in the first MiB.
pub const HEAD_BYTES: usize = 1024 * 1024;
const TAIL_BYTES: usize = 512;

/// Disk formats the inspector recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No known header: raw disk bytes (possibly MBR/GPT-partitioned).
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware sparse (monolithic or stream-optimized) or a descriptor file.
    Vmdk,
    /// Virtual PC / Hyper-V VHD (fixed or dynamic).
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// ISO 9660.
    Iso,
}

impl Format {
    /// Glance's `disk_format` name.
    pub fn glance_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
        }
    }

    /// `qemu-img`'s driver name.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw | Format::Iso => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
        }
    }
}

/// What the data is.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// Detected format.
    pub format: Format,
    /// Size of the disk the image represents, when the header says.
    pub virtual_size: Option<u64>,
    /// Why the image is unsafe to use whatever its declared format, if it is.
    pub unsafe_reason: Option<String>,
}

/// Streaming inspector: feed every chunk, then [`Inspector::finish`].
#[derive(Debug, Default)]
pub struct Inspector {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl Inspector {
    /// A fresh inspector.
    pub fn new() -> Self {
        Inspector { head: Vec::with_capacity(64 * 1024), tail: Vec::with_capacity(2 * TAIL_BYTES), total: 0 }
    }

    /// Takes the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if self.head.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..n]);
        }
        if chunk.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > TAIL_BYTES {
                let cut = self.tail.len() - TAIL_BYTES;
                self.tail.drain(..cut);
            }
        }
    }

    /// Bytes seen.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Parses what was seen.
    pub fn finish(&self) -> Inspection {
        inspect(&self.head, &self.tail, self.total)
    }
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
fn be64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
}
fn le16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// Inspects `head` (the first bytes), `tail` (the last up to 512) of a `total`-byte image.
pub fn inspect(head: &[u8], tail: &[u8], total: u64) -> Inspection {
    let found = |format, virtual_size, unsafe_reason| Inspection { format, virtual_size, unsafe_reason };
    if head.starts_with(b"QFI\xfb") {
        return qcow2(head);
    }
    if head.starts_with(b"vhdxfile") {
        return found(Format::Vhdx, None, None);
    }
    if head.starts_with(b"KDMV") {
        return vmdk_sparse(head);
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return found(
            Format::Vmdk,
            None,
            Some("VMDK descriptor files name extent files on the host and are not accepted".into()),
        );
    }
    if le32(head, 0x40) == Some(0xbeda_107f) {
        return found(Format::Vdi, le64(head, 0x170), None);
    }
    if head.starts_with(b"conectix") {
        return vhd(&head[..head.len().min(512)]);
    }
    if tail.len() == TAIL_BYTES && tail.starts_with(b"conectix") {
        return vhd(tail);
    }
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        let blocks = le32(head, 0x8000 + 80).unwrap_or(0) as u64;
        let block_size = le16(head, 0x8000 + 128).unwrap_or(0) as u64;
        let size = blocks * block_size;
        return found(Format::Iso, Some(if size > 0 { size } else { total }), None);
    }
    found(Format::Raw, Some(total), None)
}

/// qcow2 incompatible feature bit: the guest data lives in an external file.
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bits qemu knows (dirty, corrupt, data file, compression, extended L2).
const QCOW2_KNOWN_INCOMPAT: u64 = 0b1_1111;
/// Header extension naming an external data file ("DATA" ... no: 0x44415441).
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;

fn qcow2(h: &[u8]) -> Inspection {
    let bad = |why: String| Inspection { format: Format::Qcow2, virtual_size: None, unsafe_reason: Some(why) };
    let (Some(version), Some(backing_off), Some(cluster_bits), Some(size)) =
        (be32(h, 4), be64(h, 8), be32(h, 20), be64(h, 24))
    else {
        return bad("qcow2 header is truncated".into());
    };
    if !(2..=3).contains(&version) {
        return bad(format!("qcow2 version {version} is not supported"));
    }
    if !(9..=21).contains(&cluster_bits) {
        return bad(format!("qcow2 cluster_bits {cluster_bits} is invalid"));
    }
    if backing_off != 0 {
        return Inspection {
            format: Format::Qcow2,
            virtual_size: Some(size),
            unsafe_reason: Some("qcow2 images with a backing file are not accepted".into()),
        };
    }
    let mut ext_start = 72usize;
    if version == 3 {
        let (Some(incompat), Some(header_len)) = (be64(h, 72), be32(h, 100)) else {
            return bad("qcow2 v3 header is truncated".into());
        };
        if incompat & QCOW2_INCOMPAT_DATA_FILE != 0 {
            return Inspection {
                format: Format::Qcow2,
                virtual_size: Some(size),
                unsafe_reason: Some("qcow2 images with an external data file are not accepted".into()),
            };
        }
        if incompat & !QCOW2_KNOWN_INCOMPAT != 0 {
            return bad(format!("qcow2 has unknown incompatible features {incompat:#x}"));
        }
        if header_len < 104 {
            return bad(format!("qcow2 header_length {header_len} is invalid"));
        }
        ext_start = header_len as usize;
    }
    // Header extensions run until a zero type, within the first cluster.
    let cluster = 1usize << cluster_bits;
    let mut off = ext_start;
    for _ in 0..64 {
        if off + 8 > cluster.min(h.len()) {
            break;
        }
        let (Some(ty), Some(len)) = (be32(h, off), be32(h, off + 4)) else { break };
        if ty == 0 {
            break;
        }
        if ty == QCOW2_EXT_DATA_FILE {
            return Inspection {
                format: Format::Qcow2,
                virtual_size: Some(size),
                unsafe_reason: Some("qcow2 images naming an external data file are not accepted".into()),
            };
        }
        off += 8 + (len as usize).div_ceil(8) * 8;
    }
    Inspection { format: Format::Qcow2, virtual_size: Some(size), unsafe_reason: None }
}

fn vmdk_sparse(h: &[u8]) -> Inspection {
    let capacity = le64(h, 12).map(|s| s.saturating_mul(512));
    let desc_off = le64(h, 28).unwrap_or(0).saturating_mul(512) as usize;
    let desc_len = le64(h, 36).unwrap_or(0).saturating_mul(512) as usize;
    let unsafe_reason = if desc_off == 0 || desc_len == 0 {
        // Stream-optimized images may carry the descriptor at the end; without one
        // there is nothing naming other files.
        None
    } else {
        match h.get(desc_off..desc_off.saturating_add(desc_len).min(h.len())) {
            Some(d) if !d.is_empty() => vmdk_descriptor_problem(&String::from_utf8_lossy(d)),
            _ => Some("VMDK embedded descriptor lies outside the inspected header".into()),
        }
    };
    Inspection { format: Format::Vmdk, virtual_size: capacity, unsafe_reason }
}

/// Only single-file VMDKs are safe: a descriptor may name other files as extents.
fn vmdk_descriptor_problem(desc: &str) -> Option<String> {
    let desc = desc.trim_end_matches('\0');
    let create_type =
        desc.lines().find_map(|l| l.trim().strip_prefix("createType=")).map(|v| v.trim().trim_matches('"').to_string());
    match create_type.as_deref() {
        Some("monolithicSparse") | Some("streamOptimized") => {}
        Some(other) => return Some(format!("VMDK createType {other:?} is not accepted (only single-file images)")),
        None => return Some("VMDK descriptor has no createType".into()),
    }
    let extents = desc
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("RW ") || t.starts_with("RDONLY ") || t.starts_with("NOACCESS ")
        })
        .count();
    if extents > 1 {
        return Some(format!("VMDK descriptor lists {extents} extents; only single-file images are accepted"));
    }
    if desc.lines().any(|l| l.trim_start().starts_with("parentFileNameHint")) {
        return Some("VMDK images with a parent are not accepted".into());
    }
    None
}

fn vhd(footer: &[u8]) -> Inspection {
    let size = be64(footer, 48);
    let disk_type = be32(footer, 60).unwrap_or(0);
    let unsafe_reason = (disk_type == 4).then(|| "differencing VHDs (with a parent disk) are not accepted".into());
    Inspection { format: Format::Vhd, virtual_size: size, unsafe_reason }
}

/// Checks the inspection against the declared formats. `Err` is the message the client
/// gets (and the reason the image is killed).
pub fn verify(declared_disk: &str, container: Option<&str>, found: &Inspection) -> Result<(), String> {
    if let Some(why) = &found.unsafe_reason {
        return Err(format!("Image data is not safe to use: {why}"));
    }
    // Other containers (ova, docker, compressed) wrap the disk: the bytes are not the disk.
    if !matches!(container, None | Some("bare") | Some("ovf")) {
        return Ok(());
    }
    let ok = match declared_disk {
        "qcow2" => found.format == Format::Qcow2,
        "vmdk" => found.format == Format::Vmdk,
        "vhd" => found.format == Format::Vhd,
        "vhdx" => found.format == Format::Vhdx,
        "vdi" => found.format == Format::Vdi,
        "iso" => found.format == Format::Iso,
        // Raw-like formats: any bytes, but not another image format in disguise.
        "raw" | "ami" | "aki" | "ari" | "ploop" => matches!(found.format, Format::Raw | Format::Iso),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Image data does not match the declared disk_format: declared {declared_disk}, but the data is {}",
            found.format.glance_name()
        ))
    }
}

/// What `qemu-img info --output=json` says.
#[derive(Debug, Clone, Deserialize)]
pub struct QemuInfo {
    /// Driver name.
    pub format: String,
    /// Disk size in bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: Option<u64>,
    /// Backing file, if any.
    #[serde(rename = "backing-filename")]
    pub backing_filename: Option<String>,
    /// Format-specific details (qcow2's `data-file`).
    #[serde(rename = "format-specific")]
    pub format_specific: Option<serde_json::Value>,
}

/// Asks `qemu-img` about `path`, pinned to the format the Rust inspector found (so it
/// never probes, and never opens a file the header names). `Ok(None)` when qemu-img is
/// not installed; `Err` when it disagrees or sees a backing/data file.
pub async fn qemu_second_opinion(path: &Path, found: Format) -> Result<Option<QemuInfo>, String> {
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.arg("info").arg("--output=json").arg("-f").arg(found.qemu_name()).arg(path);
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Err(_) => return Err("qemu-img info timed out inspecting the image".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(Err(e)) => return Err(format!("could not run qemu-img: {e}")),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "qemu-img cannot read the data as {}: {}",
            found.glance_name(),
            err.trim().lines().last().unwrap_or("")
        ));
    }
    let info: QemuInfo = serde_json::from_slice(&out.stdout).map_err(|e| format!("unexpected qemu-img output: {e}"))?;
    if info.format != found.qemu_name() {
        return Err(format!("qemu-img reads the data as {}, not {}", info.format, found.glance_name()));
    }
    if info.backing_filename.is_some() {
        return Err("Image data is not safe to use: qemu-img reports a backing file".into());
    }
    let data_file = info.format_specific.as_ref().and_then(|f| f.pointer("/data/data-file")).is_some();
    if data_file {
        return Err("Image data is not safe to use: qemu-img reports an external data file".into());
    }
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal qcow2 v3 header: 1 GiB, 64 KiB clusters.
    fn qcow2_header(backing: Option<&str>, incompat: u64, data_ext: bool) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        let mut off = 112;
        if data_ext {
            let name = b"/etc/shadow";
            h[off..off + 4].copy_from_slice(&QCOW2_EXT_DATA_FILE.to_be_bytes());
            h[off + 4..off + 8].copy_from_slice(&(name.len() as u32).to_be_bytes());
            h[off + 8..off + 8 + name.len()].copy_from_slice(name);
            off += 8 + name.len().div_ceil(8) * 8;
        }
        if let Some(b) = backing {
            let at = off + 64;
            h[8..16].copy_from_slice(&(at as u64).to_be_bytes());
            h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            h[at..at + b.len()].copy_from_slice(b.as_bytes());
        }
        h
    }

    fn run(data: &[u8], chunk: usize) -> Inspection {
        let mut i = Inspector::new();
        for c in data.chunks(chunk.max(1)) {
            i.feed(c);
        }
        i.finish()
    }

    #[test]
    fn crafted_qcow2_headers() {
        let ok = run(&qcow2_header(None, 0, false), 7);
        assert_eq!(ok.format, Format::Qcow2);
        assert_eq!(ok.virtual_size, Some(1 << 30));
        assert!(ok.unsafe_reason.is_none());
        assert!(verify("qcow2", Some("bare"), &ok).is_ok());
        assert!(verify("raw", Some("bare"), &ok).unwrap_err().contains("declared raw"));

        let backing = run(&qcow2_header(Some("/etc/passwd"), 0, false), 4096);
        assert!(backing.unsafe_reason.as_deref().unwrap().contains("backing file"));
        assert!(verify("qcow2", Some("bare"), &backing).is_err());

        let data_bit = run(&qcow2_header(None, QCOW2_INCOMPAT_DATA_FILE, false), 100);
        assert!(data_bit.unsafe_reason.as_deref().unwrap().contains("external data file"));
        let data_ext = run(&qcow2_header(None, 0, true), 100);
        assert!(data_ext.unsafe_reason.as_deref().unwrap().contains("external data file"));

        let mut v9 = qcow2_header(None, 0, false);
        v9[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert!(run(&v9, 512).unsafe_reason.is_some());
        assert!(run(b"QFI\xfb\0\0", 1).unsafe_reason.as_deref().unwrap().contains("truncated"));
    }

    #[test]
    fn other_formats_and_raw() {
        let raw = run(&vec![0u8; 10_000], 333);
        assert_eq!((raw.format, raw.virtual_size), (Format::Raw, Some(10_000)));
        assert!(verify("raw", Some("bare"), &raw).is_ok());
        assert!(verify("qcow2", Some("bare"), &raw).unwrap_err().contains("the data is raw"));
        // Not a disk in a `docker` container: no format match is required.
        assert!(verify("qcow2", Some("docker"), &raw).is_ok());

        let mut iso = vec![0u8; 40_000];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8000 + 80..0x8000 + 84].copy_from_slice(&20u32.to_le_bytes());
        iso[0x8000 + 128..0x8000 + 130].copy_from_slice(&2048u16.to_le_bytes());
        let i = run(&iso, 4096);
        assert_eq!((i.format, i.virtual_size), (Format::Iso, Some(40_960)));
        assert!(verify("iso", None, &i).is_ok() && verify("raw", None, &i).is_ok());

        // Fixed VHD: footer only at the end.
        let mut vhd = vec![0u8; 8192 + 512];
        let f = 8192;
        vhd[f..f + 8].copy_from_slice(b"conectix");
        vhd[f + 48..f + 56].copy_from_slice(&8192u64.to_be_bytes());
        vhd[f + 60..f + 64].copy_from_slice(&2u32.to_be_bytes());
        let v = run(&vhd, 1000);
        assert_eq!((v.format, v.virtual_size), (Format::Vhd, Some(8192)));
        vhd[f + 60..f + 64].copy_from_slice(&4u32.to_be_bytes());
        assert!(run(&vhd, 1000).unsafe_reason.unwrap().contains("differencing"));

        let desc = run(b"# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"/etc/shadow\" 0\n", 5);
        assert_eq!(desc.format, Format::Vmdk);
        assert!(verify("vmdk", None, &desc).is_err());

        let mut sparse = vec![0u8; 4096];
        sparse[0..4].copy_from_slice(b"KDMV");
        sparse[12..20].copy_from_slice(&2048u64.to_le_bytes());
        sparse[28..36].copy_from_slice(&1u64.to_le_bytes());
        sparse[36..44].copy_from_slice(&2u64.to_le_bytes());
        let d = b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"x.vmdk\"\n";
        sparse[512..512 + d.len()].copy_from_slice(d);
        let s = run(&sparse, 512);
        assert_eq!((s.format, s.virtual_size, s.unsafe_reason.clone()), (Format::Vmdk, Some(2048 * 512), None));
        let d2 = b"# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\nRW 1 SPARSE \"a\"\nRW 1 SPARSE \"b\"\n";
        sparse[512..512 + d2.len()].copy_from_slice(d2);
        assert!(run(&sparse, 512).unsafe_reason.is_some());

        let mut vdi = vec![0u8; 1024];
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        vdi[0x170..0x178].copy_from_slice(&(5u64 << 20).to_le_bytes());
        assert_eq!(run(&vdi, 64).virtual_size, Some(5 << 20));
        assert_eq!(run(b"vhdxfile....", 3).format, Format::Vhdx);
    }

    /// Real images made by `qemu-img create`, checked by both the Rust parser and qemu-img.
    #[tokio::test]
    async fn real_qemu_images() {
        if std::process::Command::new("qemu-img").arg("--version").output().is_err() {
            panic!("qemu-img is required for this test (Debian package qemu-utils)");
        }
        let dir = tempfile::tempdir().unwrap();
        let mk = |args: &[&str]| {
            let st = std::process::Command::new("qemu-img").args(args).current_dir(dir.path()).output().unwrap();
            assert!(st.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&st.stderr));
        };
        mk(&["create", "-f", "qcow2", "base.qcow2", "64M"]);
        mk(&["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "overlay.qcow2"]);
        mk(&["create", "-f", "qcow2", "-o", "data_file=ext.raw", "withdata.qcow2", "16M"]);
        mk(&["create", "-f", "vmdk", "disk.vmdk", "16M"]);
        mk(&["create", "-f", "vpc", "disk.vhd", "16M"]);
        mk(&["create", "-f", "vhdx", "disk.vhdx", "16M"]);
        mk(&["create", "-f", "raw", "disk.raw", "1M"]);
        let read = |n: &str| run(&std::fs::read(dir.path().join(n)).unwrap(), 65536);

        let base = read("base.qcow2");
        assert_eq!((base.format, base.virtual_size, base.unsafe_reason.clone()), (Format::Qcow2, Some(64 << 20), None));
        let q = qemu_second_opinion(&dir.path().join("base.qcow2"), Format::Qcow2).await.unwrap().unwrap();
        assert_eq!(q.virtual_size, Some(64 << 20));

        assert!(read("overlay.qcow2").unsafe_reason.unwrap().contains("backing file"));
        let e = qemu_second_opinion(&dir.path().join("overlay.qcow2"), Format::Qcow2).await.unwrap_err();
        assert!(e.contains("backing file"), "{e}");
        assert!(read("withdata.qcow2").unsafe_reason.unwrap().contains("data file"));

        let vmdk = read("disk.vmdk");
        assert_eq!((vmdk.format, vmdk.unsafe_reason.clone()), (Format::Vmdk, None));
        assert_eq!(vmdk.virtual_size, Some(16 << 20));
        let vhd = read("disk.vhd");
        assert_eq!(vhd.format, Format::Vhd);
        assert!(verify("vhd", Some("bare"), &vhd).is_ok());
        assert_eq!(read("disk.vhdx").format, Format::Vhdx);
        assert!(qemu_second_opinion(&dir.path().join("disk.vhdx"), Format::Vhdx).await.unwrap().is_some());
        assert_eq!(read("disk.raw").format, Format::Raw);
        // qemu-img pinned to the wrong format disagrees.
        assert!(qemu_second_opinion(&dir.path().join("disk.raw"), Format::Qcow2).await.is_err());
    }
}
