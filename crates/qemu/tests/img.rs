//! `qemu-img` wrappers against the real tool (no guest needed).

use stratus_qemu::cmdline::DiskFormat;
use stratus_qemu::img::QemuImg;

#[tokio::test]
async fn create_overlay_info_resize_convert() {
    let d = tempfile::tempdir().unwrap();
    let q = QemuImg::default();
    let base = d.path().join("base.qcow2");
    q.create(&base, DiskFormat::Qcow2, 16 << 20).await.unwrap();
    let info = q.info(&base, None).await.unwrap();
    assert_eq!((info.format.as_str(), info.virtual_size), ("qcow2", 16 << 20));
    info.check_safe_upload(Some("qcow2")).unwrap();

    let overlay = d.path().join("overlay.qcow2");
    q.create_overlay(&base, DiskFormat::Qcow2, &overlay, Some(32 << 20)).await.unwrap();
    let oi = q.info(&overlay, Some(DiskFormat::Qcow2)).await.unwrap();
    assert_eq!(oi.virtual_size, 32 << 20);
    assert_eq!(oi.backing_filename.as_deref(), Some(base.to_str().unwrap()));
    assert_eq!(oi.backing_filename_format.as_deref(), Some("qcow2"));
    assert!(oi.check_safe_upload(None).is_err());

    q.resize(&overlay, DiskFormat::Qcow2, 64 << 20, false).await.unwrap();
    assert_eq!(q.info(&overlay, None).await.unwrap().virtual_size, 64 << 20);

    // Flatten the chain into a standalone raw image.
    let flat = d.path().join("flat.raw");
    q.convert(&overlay, DiskFormat::Qcow2, &flat, DiskFormat::Raw, false).await.unwrap();
    let fi = q.info(&flat, Some(DiskFormat::Raw)).await.unwrap();
    assert_eq!((fi.format.as_str(), fi.virtual_size), ("raw", 64 << 20));
    assert!(fi.backing_filename.is_none());

    // A qcow2 with an external data file is flagged.
    let df = d.path().join("with-data-file.qcow2");
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("data_file={}", d.path().join("data.raw").display()))
        .arg(&df)
        .arg("1M")
        .status()
        .await
        .unwrap();
    assert!(out.success());
    let dfi = q.info(&df, Some(DiskFormat::Qcow2)).await.unwrap();
    assert!(dfi.data_file().is_some());
    assert!(dfi.check_safe_upload(None).is_err());

    // Errors carry qemu-img's message.
    let e = q.info(&d.path().join("missing"), None).await.unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}
