//! Reading the backing file name out of a qcow2 header.
//!
//! Garbage collection walks every file of a backend directory to find which layers are
//! still somebody's backing file; `qemu-img info` per file costs a process each, while
//! the name sits at a fixed place in the first kilobytes: `backing_file_offset` (u64,
//! big-endian, byte 8) and `backing_file_size` (u32, byte 16) of the header; the virtual
//! size is the u64 at byte 24.

use std::io::Read;
use std::path::Path;

/// qcow2's magic, `QFI\xfb`.
const MAGIC: [u8; 4] = *b"QFI\xfb";

/// The guest-visible size a qcow2 header records (`None`: not a qcow2).
pub fn virtual_size(path: &Path) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 32];
    if f.read(&mut head)? < head.len() || head[..4] != MAGIC {
        return Ok(None);
    }
    Ok(Some(u64::from_be_bytes(head[24..32].try_into().unwrap_or_default())))
}

/// The backing file a qcow2 image names (`None`: no backing file, or not a qcow2).
pub fn backing_file(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 20];
    if f.read(&mut head)? < head.len() || head[..4] != MAGIC {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(head[8..16].try_into().unwrap_or_default());
    let size = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default()) as usize;
    if offset == 0 || size == 0 || size > 1023 {
        return Ok(None);
    }
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    let mut name = vec![0u8; size];
    f.read_exact(&mut name)?;
    Ok(Some(String::from_utf8_lossy(&name).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_what_qemu_img_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let img = stratus_qemu::img::QemuImg::default();
        let base = dir.path().join("base");
        img.create(&base, stratus_qemu::cmdline::DiskFormat::Qcow2, 1 << 20).await.unwrap();
        let st = tokio::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b", "base", "-F", "qcow2"])
            .arg(dir.path().join("top"))
            .status()
            .await
            .unwrap();
        assert!(st.success());
        assert_eq!(backing_file(&dir.path().join("top")).unwrap().as_deref(), Some("base"));
        assert_eq!(backing_file(&base).unwrap(), None);
        assert_eq!(virtual_size(&base).unwrap(), Some(1 << 20));
        std::fs::write(dir.path().join("raw"), b"not a qcow2 at all, just bytes").unwrap();
        assert_eq!(backing_file(&dir.path().join("raw")).unwrap(), None);
    }
}
