//! Fernet tokens and their key repository.
//!
//! The format is the Fernet spec Keystone uses (AES-128-CBC with PKCS#7 padding, then
//! HMAC-SHA256 over version, timestamp, IV and ciphertext; keys are 32 random bytes in
//! URL-safe base64, the first half signing, the second half encrypting). We chose it
//! over AES-GCM because it is what operators already know how to rotate and back up:
//! a `fernet-keys` directory laid out exactly like `keystone-manage fernet_setup`
//! makes, with `0` the staged key, the highest number the primary, and the rest
//! secondaries that still decrypt. Tokens are not stored anywhere; every node holding
//! the keys validates them.

use std::path::{Path, PathBuf};

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 0x80;

/// One Fernet key: signing half and encryption half.
#[derive(Clone)]
pub struct FernetKey {
    signing: [u8; 16],
    encryption: [u8; 16],
}

impl std::fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetKey(..)")
    }
}

impl FernetKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Self::from_bytes(&b)
    }

    fn from_bytes(b: &[u8; 32]) -> Self {
        let mut signing = [0u8; 16];
        let mut encryption = [0u8; 16];
        signing.copy_from_slice(&b[..16]);
        encryption.copy_from_slice(&b[16..]);
        FernetKey { signing, encryption }
    }

    /// Parses the URL-safe base64 text of a key file.
    pub fn parse(text: &str) -> Option<Self> {
        let raw = URL_SAFE.decode(text.trim()).or_else(|_| URL_SAFE_NO_PAD.decode(text.trim())).ok()?;
        let arr: [u8; 32] = raw.try_into().ok()?;
        Some(Self::from_bytes(&arr))
    }

    /// The key file's text.
    pub fn encode(&self) -> String {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&self.signing);
        b[16..].copy_from_slice(&self.encryption);
        URL_SAFE.encode(b)
    }

    /// Encrypts `payload` into a Fernet token (URL-safe base64, padding stripped as
    /// Keystone does).
    pub fn encrypt(&self, payload: &[u8], timestamp: u64) -> String {
        let mut iv = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut iv);
        let ct = Aes128CbcEnc::new(&self.encryption.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(payload);
        let mut msg = Vec::with_capacity(1 + 8 + 16 + ct.len() + 32);
        msg.push(VERSION);
        msg.extend_from_slice(&timestamp.to_be_bytes());
        msg.extend_from_slice(&iv);
        msg.extend_from_slice(&ct);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.signing).expect("HMAC takes any key length");
        mac.update(&msg);
        msg.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(msg)
    }

    /// Verifies and decrypts already-decoded token bytes; `None` when this key did not
    /// make them or they were altered. The MAC is compared in constant time.
    fn decrypt_raw(&self, raw: &[u8]) -> Option<(u64, Vec<u8>)> {
        if raw.len() < 1 + 8 + 16 + 16 + 32 || raw[0] != VERSION {
            return None;
        }
        let (msg, tag) = raw.split_at(raw.len() - 32);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.signing).ok()?;
        mac.update(msg);
        mac.verify_slice(tag).ok()?;
        let ts = u64::from_be_bytes(msg[1..9].try_into().ok()?);
        let iv: [u8; 16] = msg[9..25].try_into().ok()?;
        let ct = &msg[25..];
        if ct.len() % 16 != 0 {
            return None;
        }
        let pt = Aes128CbcDec::new(&self.encryption.into(), &iv.into()).decrypt_padded_vec_mut::<Pkcs7>(ct).ok()?;
        Some((ts, pt))
    }
}

/// The active keys: the primary encrypts, all of them decrypt.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// Keys by number, highest (the primary) first.
    keys: Vec<(u32, FernetKey)>,
}

/// Decodes a token's base64 (padding optional).
fn decode_token(token: &str) -> Option<Vec<u8>> {
    let t = token.trim().trim_end_matches('=');
    if t.len() > 4096 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(t).ok()
}

impl KeyRing {
    /// Encrypts with the primary key.
    pub fn encrypt(&self, payload: &[u8]) -> String {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        self.keys[0].1.encrypt(payload, now)
    }

    /// Decrypts with whichever key made the token.
    pub fn decrypt(&self, token: &str) -> Option<Vec<u8>> {
        let raw = decode_token(token)?;
        self.keys.iter().find_map(|(_, k)| k.decrypt_raw(&raw)).map(|(_, p)| p)
    }

    /// Key numbers, primary first.
    pub fn numbers(&self) -> Vec<u32> {
        self.keys.iter().map(|(n, _)| *n).collect()
    }
}

/// The on-disk key repository (`<data_dir>/identity/fernet-keys/`).
#[derive(Debug, Clone)]
pub struct KeyRepository {
    dir: PathBuf,
    max_active_keys: usize,
}

impl KeyRepository {
    /// A repository in `dir` keeping at most `max_active_keys` keys (staged + primary +
    /// secondaries; Keystone's `max_active_keys`, at least 3).
    pub fn new(dir: impl Into<PathBuf>, max_active_keys: usize) -> Self {
        KeyRepository { dir: dir.into(), max_active_keys: max_active_keys.max(3) }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> anyhow::Result<Vec<(u32, FernetKey)>> {
        let mut keys = Vec::new();
        if !self.dir.exists() {
            return Ok(keys);
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let text = std::fs::read_to_string(entry.path())?;
            let key = FernetKey::parse(&text)
                .ok_or_else(|| anyhow::anyhow!("{} is not a Fernet key", entry.path().display()))?;
            keys.push((n, key));
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        Ok(keys)
    }

    fn write_key(&self, n: u32, key: &FernetKey) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.dir.join(format!(".tmp-{n}"));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(key.encode().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(n.to_string()))?;
        Ok(())
    }

    /// Creates the repository with a staged key `0` and a primary `1` when it is empty
    /// (`keystone-manage fernet_setup`). Idempotent.
    pub fn setup(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let keys = self.list()?;
        if keys.is_empty() {
            self.write_key(1, &FernetKey::generate())?;
            self.write_key(0, &FernetKey::generate())?;
        } else if !keys.iter().any(|(n, _)| *n == 0) {
            self.write_key(0, &FernetKey::generate())?;
        }
        Ok(())
    }

    /// Loads the active keys.
    pub fn load(&self) -> anyhow::Result<KeyRing> {
        let mut keys = self.list()?;
        if keys.is_empty() {
            anyhow::bail!("no Fernet keys in {}", self.dir.display());
        }
        // The staged key (0) is never primary while a numbered key exists, but it must
        // decrypt: another node may already have promoted it.
        if keys.len() > 1 {
            if let Some(pos) = keys.iter().position(|(n, _)| *n == 0) {
                let staged = keys.remove(pos);
                keys.push(staged);
            }
        }
        Ok(KeyRing { keys })
    }

    /// `keystone-manage fernet_rotate`: the staged key becomes the new primary, a new
    /// staged key is made, and the oldest secondaries beyond `max_active_keys` are removed.
    /// Returns the new primary's number.
    pub fn rotate(&self) -> anyhow::Result<u32> {
        self.setup()?;
        let keys = self.list()?;
        let highest = keys.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let new_primary = highest + 1;
        let staged = keys.iter().find(|(n, _)| *n == 0).map(|(_, k)| k.clone()).unwrap_or_else(FernetKey::generate);
        self.write_key(new_primary, &staged)?;
        self.write_key(0, &FernetKey::generate())?;
        let mut numbered: Vec<u32> = self.list()?.into_iter().map(|(n, _)| n).filter(|n| *n != 0).collect();
        numbered.sort_unstable();
        // staged + numbered keys <= max_active_keys
        while numbered.len() + 1 > self.max_active_keys {
            let oldest = numbered.remove(0);
            std::fs::remove_file(self.dir.join(oldest.to_string()))?;
        }
        Ok(new_primary)
    }
}

// --- payload ------------------------------------------------------------------------

/// Authentication methods, as a bit set in the payload.
pub const METHODS: &[(&str, u8)] = &[("password", 1), ("token", 2), ("application_credential", 4)];

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// No scope.
    Unscoped,
    /// A project.
    Project(String),
    /// A domain.
    Domain(String),
    /// The whole deployment (`system: all`).
    System,
}

/// What a token carries (everything else is looked up at validation).
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// Bit set of [`METHODS`].
    pub methods: u8,
    /// The user.
    pub user_id: String,
    /// The scope.
    pub scope: Scope,
    /// Issue time, microseconds since the epoch.
    pub issued_at: i64,
    /// Expiry, microseconds since the epoch.
    pub expires_at: i64,
    /// This token's audit id (16 bytes).
    pub audit_id: [u8; 16],
    /// Audit id of the token it was made from, if any.
    pub parent_audit_id: Option<[u8; 16]>,
    /// Application credential it was made with.
    pub app_cred_id: Option<String>,
    /// Trust it was made with (OS-TRUST).
    pub trust_id: Option<String>,
}

const PAYLOAD_VERSION: u8 = 1;

fn put_id(out: &mut Vec<u8>, id: &str) {
    let b = id.as_bytes();
    if b.len() == 32 && b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        out.push(0);
        for i in 0..16 {
            let hex = std::str::from_utf8(&b[2 * i..2 * i + 2]).unwrap_or("00");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
        }
    } else {
        out.push(1);
        let n = b.len().min(255);
        out.push(n as u8);
        out.extend_from_slice(&b[..n]);
    }
}

fn get_id(b: &[u8], pos: &mut usize) -> Option<String> {
    let tag = *b.get(*pos)?;
    *pos += 1;
    match tag {
        0 => {
            let raw = b.get(*pos..*pos + 16)?;
            *pos += 16;
            let mut s = String::with_capacity(32);
            for x in raw {
                s.push_str(&format!("{x:02x}"));
            }
            Some(s)
        }
        1 => {
            let n = *b.get(*pos)? as usize;
            *pos += 1;
            let raw = b.get(*pos..*pos + n)?;
            *pos += n;
            String::from_utf8(raw.to_vec()).ok()
        }
        _ => None,
    }
}

fn get_i64(b: &[u8], pos: &mut usize) -> Option<i64> {
    let raw: [u8; 8] = b.get(*pos..*pos + 8)?.try_into().ok()?;
    *pos += 8;
    Some(i64::from_be_bytes(raw))
}

fn get_16(b: &[u8], pos: &mut usize) -> Option<[u8; 16]> {
    let raw: [u8; 16] = b.get(*pos..*pos + 16)?.try_into().ok()?;
    *pos += 16;
    Some(raw)
}

impl Payload {
    /// Compact binary form (about 60 bytes for uuid ids).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.push(PAYLOAD_VERSION);
        out.push(self.methods);
        put_id(&mut out, &self.user_id);
        match &self.scope {
            Scope::Unscoped => out.push(0),
            Scope::Project(p) => {
                out.push(1);
                put_id(&mut out, p);
            }
            Scope::Domain(d) => {
                out.push(2);
                put_id(&mut out, d);
            }
            Scope::System => out.push(3),
        }
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.audit_id);
        match &self.parent_audit_id {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p);
            }
            None => out.push(0),
        }
        for id in [&self.app_cred_id, &self.trust_id] {
            match id {
                Some(a) => {
                    out.push(1);
                    put_id(&mut out, a);
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Parses [`Payload::encode`]'s output.
    pub fn decode(b: &[u8]) -> Option<Payload> {
        if b.first() != Some(&PAYLOAD_VERSION) {
            return None;
        }
        let mut pos = 1;
        let methods = *b.get(pos)?;
        pos += 1;
        let user_id = get_id(b, &mut pos)?;
        let tag = *b.get(pos)?;
        pos += 1;
        let scope = match tag {
            0 => Scope::Unscoped,
            1 => Scope::Project(get_id(b, &mut pos)?),
            2 => Scope::Domain(get_id(b, &mut pos)?),
            3 => Scope::System,
            _ => return None,
        };
        let issued_at = get_i64(b, &mut pos)?;
        let expires_at = get_i64(b, &mut pos)?;
        let audit_id = get_16(b, &mut pos)?;
        let parent_audit_id = match *b.get(pos)? {
            0 => {
                pos += 1;
                None
            }
            _ => {
                pos += 1;
                Some(get_16(b, &mut pos)?)
            }
        };
        let app_cred_id = match *b.get(pos)? {
            0 => {
                pos += 1;
                None
            }
            _ => {
                pos += 1;
                Some(get_id(b, &mut pos)?)
            }
        };
        // Tokens made before trusts existed end here.
        let trust_id = match b.get(pos) {
            None | Some(0) => None,
            Some(_) => {
                pos += 1;
                Some(get_id(b, &mut pos)?)
            }
        };
        Some(Payload {
            methods,
            user_id,
            scope,
            issued_at,
            expires_at,
            audit_id,
            parent_audit_id,
            app_cred_id,
            trust_id,
        })
    }

    /// Method names.
    pub fn method_names(&self) -> Vec<&'static str> {
        METHODS.iter().filter(|(_, bit)| self.methods & bit != 0).map(|(n, _)| *n).collect()
    }
}

/// A new random audit id.
pub fn new_audit_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// Audit id text as Keystone shows it (22 characters of URL-safe base64).
pub fn audit_text(a: &[u8; 16]) -> String {
    URL_SAFE_NO_PAD.encode(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload {
            methods: 1 | 2,
            user_id: "0123456789abcdef0123456789abcdef".into(),
            scope: Scope::Project("default".into()),
            issued_at: 1_700_000_000_123_456,
            expires_at: 1_700_086_400_123_456,
            audit_id: [7; 16],
            parent_audit_id: Some([9; 16]),
            app_cred_id: Some("ac".into()),
            trust_id: Some("0123456789abcdef0123456789abcdee".into()),
        }
    }

    #[test]
    fn payload_round_trips_and_tokens_verify() {
        let p = payload();
        assert_eq!(Payload::decode(&p.encode()), Some(p.clone()));
        let mut u = p.clone();
        u.scope = Scope::System;
        u.parent_audit_id = None;
        u.app_cred_id = None;
        assert_eq!(Payload::decode(&u.encode()), Some(u.clone()));
        u.trust_id = None;
        let enc = u.encode();
        assert_eq!(Payload::decode(&enc), Some(u.clone()));
        // A payload from before trusts (no trailing trust byte) still decodes.
        assert_eq!(Payload::decode(&enc[..enc.len() - 1]), Some(u));
        let k = FernetKey::generate();
        let t = k.encrypt(&p.encode(), 1);
        assert!(t.len() < 255, "token is compact: {}", t.len());
        let ring = KeyRing { keys: vec![(1, k.clone())] };
        assert_eq!(ring.decrypt(&t).and_then(|b| Payload::decode(&b)), Some(p));
        // tampering anywhere fails the MAC
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[30] ^= 1;
        assert!(ring.decrypt(&URL_SAFE_NO_PAD.encode(&raw)).is_none());
        let other = KeyRing { keys: vec![(1, FernetKey::generate())] };
        assert!(other.decrypt(&t).is_none());
        assert!(ring.decrypt("not a token").is_none());
        assert_eq!(method_bits(&["password", "token"]), 3);
    }

    fn method_bits(names: &[&str]) -> u8 {
        METHODS.iter().filter(|(n, _)| names.contains(n)).fold(0, |a, (_, b)| a | b)
    }

    #[test]
    fn rotation_promotes_staged_and_keeps_old_tokens_valid() {
        let dir = tempfile::tempdir().unwrap();
        let repo = KeyRepository::new(dir.path().join("keys"), 3);
        repo.setup().unwrap();
        repo.setup().unwrap();
        let ring1 = repo.load().unwrap();
        assert_eq!(ring1.numbers(), vec![1, 0]);
        let t1 = ring1.encrypt(b"one");
        assert_eq!(repo.rotate().unwrap(), 2);
        let ring2 = repo.load().unwrap();
        assert_eq!(ring2.numbers(), vec![2, 1, 0]);
        assert_eq!(ring2.decrypt(&t1).as_deref(), Some(&b"one"[..]));
        // a token made by the previously staged key (another node rotated first) verifies
        let t2 = ring2.encrypt(b"two");
        assert_eq!(ring1.decrypt(&t2).as_deref(), Some(&b"two"[..]));
        repo.rotate().unwrap();
        let ring3 = repo.load().unwrap();
        assert_eq!(ring3.numbers(), vec![3, 2, 0], "oldest secondary pruned at max_active_keys=3");
        assert!(ring3.decrypt(&t1).is_none());
        assert!(ring3.decrypt(&t2).is_some());
    }
}
