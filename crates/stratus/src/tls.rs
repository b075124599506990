//! TLS on the API listener (`[server] tls_cert` / `tls_key`, rustls), and `stratus up
//! --self-signed` for a first try: a CA and a server certificate made once under
//! `<data_dir>/tls/`, the CA written for clients (`OS_CACERT` in `admin-openrc`).
//!
//! With TLS on, the public URL (and so the catalog and every `Location`) is `https://`.
//! Only TLS 1.2 and 1.3 with rustls's default suites; the handshake must finish within
//! the header deadline, so a client that opens a connection and says nothing holds it no
//! longer than one that sends no headers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Loads the certificate chain and key (PEM) into an acceptor for HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("server.tls_cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("server.tls_cert {}: not PEM certificates", cert.display()))?;
    if certs.is_empty() {
        bail!("server.tls_cert {} holds no certificate", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("server.tls_key {}", key.display()))?,
    ))
    .with_context(|| format!("server.tls_key {}: not a PEM key", key.display()))?
    .with_context(|| format!("server.tls_key {} holds no private key", key.display()))?;
    // ring, not aws-lc-rs: it builds with the C compiler alone (aws-lc needs cmake and
    // minutes of build on a 2-core machine). rustls marks ring's provider deprecated only
    // because it lacks the post-quantum key exchange; its suites are the safe defaults.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls_cert and server.tls_key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Paths of the self-signed set under `<data_dir>/tls/`.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The CA clients trust (`OS_CACERT`).
    pub ca: PathBuf,
    /// The server certificate (signed by the CA).
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// Makes (once) a CA and a server certificate for `host` (a name or an address; the
/// certificate also names `localhost` and 127.0.0.1), readable by the owner only where
/// they are secret.
pub fn self_signed(data_dir: &Path, host: &str) -> anyhow::Result<SelfSigned> {
    let dir = data_dir.join("tls");
    let set = SelfSigned { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    if set.ca.exists() && set.cert.exists() && set.key.exists() {
        return Ok(set);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = rcgen::KeyPair::generate().context("CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Stratus self-signed CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).context("CA certificate")?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !host.is_empty() && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, names.last().cloned().unwrap_or_default());
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => Ok(rcgen::SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().context("server key")?;
    let cert = params.signed_by(&key, &ca, &ca_key).context("server certificate")?;

    write(&set.key, key.serialize_pem().as_bytes(), 0o600)?;
    write(&dir.join("ca-key.pem"), ca_key.serialize_pem().as_bytes(), 0o600)?;
    write(&set.cert, format!("{}{}", cert.pem(), ca.pem()).as_bytes(), 0o644)?;
    // Last: its presence says the set is whole.
    write(&set.ca, ca.pem().as_bytes(), 0o644)?;
    Ok(set)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// This machine's host name (for a certificate of a listener on every address).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Adds `export OS_CACERT=<ca>` to `admin-openrc` unless it is there.
pub fn add_cacert_to_openrc(data_dir: &Path, ca: &Path) -> anyhow::Result<()> {
    let rc = data_dir.join("admin-openrc");
    let Ok(text) = std::fs::read_to_string(&rc) else { return Ok(()) };
    if text.contains("OS_CACERT=") {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&rc)?;
    use std::io::Write;
    writeln!(f, "export OS_CACERT={}", ca.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_set_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "cloud.example").unwrap();
        let first = std::fs::read(&a.cert).unwrap();
        let b = self_signed(dir.path(), "cloud.example").unwrap();
        assert_eq!(std::fs::read(&b.cert).unwrap(), first, "made once");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777, 0o600);
        acceptor(&a.cert, &a.key).expect("loads");
    }

    #[test]
    fn bad_files_are_refused_with_which_one() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = format!("{:#}", acceptor(&junk, &junk).err().unwrap());
        assert!(e.contains("tls_cert") && e.contains("junk.pem"), "{e}");
        let set = self_signed(dir.path(), "").unwrap();
        let e = format!("{:#}", acceptor(&set.cert, &set.ca).err().unwrap());
        assert!(e.contains("tls_key"), "{e}");
    }
}
