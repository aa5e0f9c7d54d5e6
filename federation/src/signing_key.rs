//! This server's signing key: key ids, the Ed25519 key and its file (docs/protocol.md#server-server-api).
//!
//! - [`KeyId`]: `ed25519:` + `[A-Za-z0-9_]+`.
//! - [`ServerSigningKey`]: this server's Ed25519 key; generated once, kept in
//!   `<data_dir>/`[`KEY_FILE_NAME`], zeroized on drop, never printed.
//!
//! It sits below [`crate::signatures`] (which signs with it) and [`crate::keys`] (the key
//! document that publishes it); [`crate::keys`] re-exports its items.
//!
//! # Key file format
//!
//! One line of ASCII, as Synapse writes its signing key:
//!
//! ```text
//! ed25519 <version> <seed>\n
//! ```
//!
//! where `<version>` is the key id without its `ed25519:` prefix (`[A-Za-z0-9_]+`) and
//! `<seed>` the 32-byte Ed25519 secret seed in unpadded standard base64 (43 characters).
//! The file is created with mode 0600 on unix, written to a temporary file and linked into
//! place only when complete, so a crash never leaves a half-written key and two processes
//! starting at once end up with the same key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::{b64, Error, Result};

/// File name of the signing key inside the data directory.
pub const KEY_FILE_NAME: &str = "federation_signing.key";

/// The only signing algorithm of v1.
pub const ED25519: &str = "ed25519";

// ------------------------------------------------------------------------------------------
// Key ids
// ------------------------------------------------------------------------------------------

/// A signing key id: `ed25519:` followed by one or more of `[A-Za-z0-9_]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Validates a full key id such as `ed25519:a_1`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        match id.strip_prefix("ed25519:") {
            Some(version) if is_valid_version(version) => Ok(KeyId(id)),
            _ => Err(Error::InvalidKeyId(id)),
        }
    }

    /// Builds `ed25519:<version>` from a version (`[A-Za-z0-9_]+`).
    pub fn from_version(version: &str) -> Result<Self> {
        Self::new(format!("{ED25519}:{version}"))
    }

    /// A fresh random key id, `ed25519:p_` + 8 random alphanumerics.
    pub fn generate() -> Self {
        KeyId(format!(
            "{ED25519}:p_{}",
            Alphanumeric.sample_string(&mut OsRng, 8)
        ))
    }

    /// The whole id, e.g. `ed25519:p_Ab3dE6gH`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `ed25519:`.
    pub fn version(&self) -> &str {
        &self.0[ED25519.len() + 1..]
    }
}

fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyId::new(s)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KeyId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

// ------------------------------------------------------------------------------------------
// Public keys
// ------------------------------------------------------------------------------------------

/// Decodes an Ed25519 public key from unpadded (or padded) standard base64.
pub fn decode_verifying_key(text: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] =
        b64::decode_array(text).map_err(|_| Error::InvalidEd25519("public key"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| Error::InvalidEd25519("public key"))
}

/// Encodes an Ed25519 public key as unpadded standard base64.
pub fn encode_verifying_key(key: &VerifyingKey) -> String {
    b64::encode(key.as_bytes())
}

// ------------------------------------------------------------------------------------------
// The signing key and its file
// ------------------------------------------------------------------------------------------

/// This server's Ed25519 signing key with its key id. The secret is zeroized on drop and
/// never shown by `Debug`.
pub struct ServerSigningKey {
    key_id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for ServerSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl ServerSigningKey {
    /// Generates a new key from the operating system's random source.
    pub fn generate(key_id: KeyId) -> Self {
        ServerSigningKey {
            key_id,
            key: SigningKey::generate(&mut OsRng),
        }
    }

    /// Builds a key from its 32-byte secret seed.
    pub fn from_seed(key_id: KeyId, seed: &[u8; 32]) -> Self {
        ServerSigningKey {
            key_id,
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The key id, e.g. `ed25519:p_Ab3dE6gH`.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half as unpadded base64 (what `verify_keys` publishes).
    pub fn public_key_base64(&self) -> String {
        encode_verifying_key(&self.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    /// The key file's contents (see the module docs); zeroized when dropped.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        let encoded = Zeroizing::new(b64::encode(seed.as_slice()));
        Zeroizing::new(format!(
            "{ED25519} {} {}\n",
            self.key_id.version(),
            encoded.as_str()
        ))
    }

    /// Parses a key file's contents. `path` only labels errors.
    pub fn from_key_file(contents: &str, path: &Path) -> Result<Self> {
        let invalid = |reason| Error::InvalidKeyFile {
            path: path.to_owned(),
            reason,
        };
        let mut lines = contents.lines().map(str::trim).filter(|l| !l.is_empty());
        let line = lines.next().ok_or_else(|| invalid("the file is empty"))?;
        if lines.next().is_some() {
            return Err(invalid("more than one key line"));
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(alg), Some(version), Some(seed), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(invalid("expected `ed25519 <version> <base64 seed>`"));
        };
        if alg != ED25519 {
            return Err(invalid("unsupported algorithm (only ed25519)"));
        }
        let key_id = KeyId::from_version(version).map_err(|_| invalid("invalid key version"))?;
        let seed = Zeroizing::new(b64::decode(seed).map_err(|_| invalid("seed is not base64"))?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| invalid("seed is not 32 bytes"))?,
        );
        Ok(Self::from_seed(key_id, &seed))
    }

    /// Loads the key from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let contents =
            Zeroizing::new(fs::read_to_string(path).map_err(|source| io_error(path, source))?);
        Self::from_key_file(&contents, path)
    }

    /// Writes the key to `path`, which must not exist yet (mode 0600 on unix).
    ///
    /// The key is written to a temporary file in the same directory, synced, then hard-linked
    /// to `path`, so `path` appears complete or not at all. If `path` already exists the
    /// error is [`Error::KeyFileIo`] with kind `AlreadyExists`.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{KEY_FILE_NAME}.tmp-{}",
            Alphanumeric.sample_string(&mut OsRng, 12)
        ));
        let written = write_private_file(&tmp, self.to_key_file().as_bytes())
            .and_then(|()| fs::hard_link(&tmp, path));
        // The temporary name goes away whatever happened; `path` (if linked) keeps the data.
        let _ = fs::remove_file(&tmp);
        written.map_err(|source| io_error(path, source))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Loads `<data_dir>/`[`KEY_FILE_NAME`], generating and saving a new key if it does not
    /// exist. Returns the key and whether it was created now.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, bool)> {
        let path = data_dir.join(KEY_FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok((Self::load(&path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&path, source)),
        }
        let key = Self::generate(KeyId::generate());
        match key.save_new(&path) {
            Ok(()) => Ok((key, true)),
            // Another process created it first: use theirs.
            Err(Error::KeyFileIo { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Ok((Self::load(&path)?, false))
            }
            Err(e) => Err(e),
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::KeyFileIo {
        path: path.to_owned(),
        source,
    }
}

fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// The path of the key file inside `data_dir`.
pub fn key_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::from_version(version).unwrap(), &[seed; 32])
    }

    #[test]
    fn key_ids_need_the_ed25519_prefix_and_a_word_version() {
        for ok in ["ed25519:1", "ed25519:a_B9", "ed25519:_"] {
            assert_eq!(KeyId::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ed25519:",
            "ed25519:a-b",
            "ed25519:a b",
            "curve25519:1",
            "ed25519",
            "ed25519:é",
            "",
        ] {
            assert!(
                matches!(KeyId::new(bad), Err(Error::InvalidKeyId(_))),
                "{bad:?}"
            );
        }
        assert_eq!(KeyId::new("ed25519:abc").unwrap().version(), "abc");
    }

    #[test]
    fn generated_key_ids_are_valid_and_distinct() {
        let a = KeyId::generate();
        assert!(KeyId::new(a.as_str()).is_ok());
        assert_ne!(a, KeyId::generate());
    }

    #[test]
    fn key_file_round_trips_in_the_documented_format() {
        let k = key("a_1", 3);
        let text = k.to_key_file();
        assert_eq!(
            text.as_str(),
            format!("ed25519 a_1 {}\n", b64::encode([3u8; 32]))
        );
        let back = ServerSigningKey::from_key_file(&text, Path::new("k")).unwrap();
        assert_eq!(back.key_id(), k.key_id());
        assert_eq!(back.verifying_key(), k.verifying_key());
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let seed = b64::encode([1u8; 32]);
        for bad in [
            String::new(),
            "ed25519 a_1".to_owned(),
            format!("rsa a_1 {seed}"),
            format!("ed25519 a-1 {seed}"),
            "ed25519 a_1 !!!".to_owned(),
            format!("ed25519 a_1 {}", b64::encode([1u8; 31])),
            format!("ed25519 a_1 {seed} extra"),
            format!("ed25519 a_1 {seed}\ned25519 a_2 {seed}"),
        ] {
            assert!(
                matches!(
                    ServerSigningKey::from_key_file(&bad, Path::new("k")),
                    Err(Error::InvalidKeyFile { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret_seed() {
        let k = key("a_1", 9);
        let shown = format!("{k:?}");
        assert!(shown.contains("ed25519:a_1"));
        assert!(!shown.contains(&b64::encode([9u8; 32])));
    }

    #[test]
    fn load_or_generate_creates_the_key_once_and_then_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = ServerSigningKey::load_or_generate(dir.path()).unwrap();
        assert!(created);
        let (second, created) = ServerSigningKey::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.verifying_key(), second.verifying_key());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE_NAME], "no temporary file is left behind");
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_created_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        ServerSigningKey::load_or_generate(dir.path()).unwrap();
        let mode = fs::metadata(key_file_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn save_new_refuses_to_overwrite_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_path(dir.path());
        key("a_1", 1).save_new(&path).unwrap();
        match key("a_2", 2).save_new(&path) {
            Err(Error::KeyFileIo { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ServerSigningKey::load(&path).unwrap().key_id().version(),
            "a_1"
        );
    }

    #[test]
    fn loading_a_missing_key_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ServerSigningKey::load(&dir.path().join("nope")),
            Err(Error::KeyFileIo { .. })
        ));
    }
}
