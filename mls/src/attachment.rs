//! Encrypted attachments: files are encrypted on the client, the server only stores ciphertext.
//!
//! # Wire format (version 1, [`ATTACHMENT_VERSION`])
//!
//! Every attachment (and every thumbnail) is encrypted under its own fresh random secrets:
//!
//! - `key`: 32 random bytes, the AES-256-GCM key;
//! - `nonce_prefix`: 7 random bytes.
//!
//! The plaintext is split into chunks of [`CHUNK_SIZE`] = 65536 bytes; the last chunk holds the
//! remaining 1..=65536 bytes, and is empty only when the whole file is empty (an empty file is
//! one empty chunk). A file of `n > 0` bytes thus has `ceil(n / 65536)` chunks: a file of
//! exactly 65536 bytes is one (final) chunk, never a full chunk followed by an empty one.
//!
//! Chunk `i` (counting from 0) is encrypted with AES-256-GCM, no associated data, under the
//! 12-byte nonce
//!
//! ```text
//! nonce_prefix (7 bytes) ‖ i as u32 big-endian (4 bytes) ‖ flag (1 byte)
//! ```
//!
//! where `flag` is `0x01` for the last chunk and `0x00` for every other chunk (the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár). The ciphertext is the concatenation,
//! in order, of each encrypted chunk followed by its 16-byte tag:
//!
//! ```text
//! AES-GCM(chunk 0) ‖ tag 0 ‖ AES-GCM(chunk 1) ‖ tag 1 ‖ … ‖ AES-GCM(last chunk) ‖ tag last
//! ```
//!
//! so every chunk but the last is exactly 65552 bytes of ciphertext, the last one 16..=65552
//! bytes, and the ciphertext size is `n + 16 * max(1, ceil(n / 65536))` ([`ciphertext_size`]).
//! Since the index and the last-chunk flag are in the nonce, a reordered, dropped, duplicated or
//! truncated chunk and any appended bytes all fail authentication. At most 2^32 chunks
//! (256 TiB) can be encrypted under one key; a chunk index never wraps.
//!
//! `sha256` is the SHA-256 of the whole ciphertext. A receiver downloads the ciphertext, checks
//! its SHA-256 against the descriptor **before** decrypting ([`MlsError::AttachmentHashMismatch`]
//! otherwise), then decrypts chunk by chunk; any failing tag, a final chunk without the last
//! flag (truncation) or bytes after the flagged chunk is [`MlsError::AttachmentCorrupt`].
//!
//! The descriptor ([`AttachmentDescriptor`], JSON with snake_case keys, `None` fields left out)
//! travels inside an MLS application message; `key`, `nonce_prefix` and `sha256` in it are
//! standard padded base64 (RFC 4648 §4), decoded strictly (no whitespace, canonical padding).
//!
//! [`encrypt_attachment`] / [`decrypt_attachment`] work on whole buffers;
//! [`AttachmentEncryptor`] / [`AttachmentDecryptor`] stream large files and are what the
//! whole-buffer functions are built on.

use base64::Engine as _;
use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::random::OpenMlsRand as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{MlsError, Result};

/// Version of the attachment format and of [`AttachmentDescriptor`] (its `v` field).
pub const ATTACHMENT_VERSION: u32 = 1;
/// Plaintext bytes per chunk (every chunk but the last is exactly this long).
pub const CHUNK_SIZE: usize = 65536;
/// Length of an attachment key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// Length of the random nonce prefix in bytes.
pub const NONCE_PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// Ciphertext bytes of a full chunk.
const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// Largest plaintext the format allows: 2^32 chunks.
const MAX_PLAINTEXT_SIZE: u64 = (CHUNK_SIZE as u64) << 32;

fn format_error(what: impl Into<String>) -> MlsError {
    MlsError::AttachmentFormat(what.into())
}

fn corrupt(what: impl Into<String>) -> MlsError {
    MlsError::AttachmentCorrupt(what.into())
}

/// The secrets of one attachment: AES-256 key (zeroized on drop) and 7-byte nonce prefix.
#[derive(Clone)]
pub struct AttachmentKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl AttachmentKey {
    /// A fresh random key and nonce prefix.
    pub fn generate() -> Result<Self> {
        let rng = RustCrypto::default();
        let key: [u8; KEY_LEN] = rng
            .random_array()
            .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        let key = Zeroizing::new(key);
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = rng
            .random_array()
            .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        Ok(Self { key, nonce_prefix })
    }

    /// From raw bytes; a key other than 32 bytes or a prefix other than 7 is `AttachmentFormat`.
    pub fn from_bytes(key: &[u8], nonce_prefix: &[u8]) -> Result<Self> {
        let key: [u8; KEY_LEN] = key
            .try_into()
            .map_err(|_| format_error(format!("key must be {KEY_LEN} bytes, not {}", key.len())))?;
        let key = Zeroizing::new(key);
        let nonce_prefix = nonce_prefix.try_into().map_err(|_| {
            format_error(format!(
                "nonce prefix must be {NONCE_PREFIX_LEN} bytes, not {}",
                nonce_prefix.len()
            ))
        })?;
        Ok(Self { key, nonce_prefix })
    }

    /// From the standard padded base64 strings of a descriptor.
    pub fn from_base64(key: &str, nonce_prefix: &str) -> Result<Self> {
        let key = Zeroizing::new(
            base64_decode(key).ok_or_else(|| format_error("key is not valid base64"))?,
        );
        let nonce_prefix = base64_decode(nonce_prefix)
            .ok_or_else(|| format_error("nonce prefix is not valid base64"))?;
        Self::from_bytes(&key, &nonce_prefix)
    }

    /// The raw 32-byte AES-256 key (secret).
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The raw 7-byte nonce prefix.
    pub fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }

    /// The key as standard padded base64 (secret).
    pub fn key_base64(&self) -> String {
        base64_encode(self.key.as_ref())
    }

    /// The nonce prefix as standard padded base64.
    pub fn nonce_prefix_base64(&self) -> String {
        base64_encode(&self.nonce_prefix)
    }
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentKey")
            .field("key", &"<redacted>")
            .field("nonce_prefix", &self.nonce_prefix)
            .finish()
    }
}

/// A whole encrypted file, as [`encrypt_attachment`] returns it.
#[derive(Debug, Clone)]
pub struct EncryptedAttachment {
    /// The ciphertext to upload (what the server stores).
    pub ciphertext: Vec<u8>,
    /// The key and nonce prefix (go into the descriptor, never to the server in the clear).
    pub key: AttachmentKey,
    /// SHA-256 of `ciphertext`.
    pub sha256: [u8; 32],
    /// Size of the plaintext in bytes.
    pub plaintext_size: u64,
}

/// Ciphertext size of a `plaintext_size`-byte file, `None` above the format's 2^48-byte limit.
pub fn ciphertext_size(plaintext_size: u64) -> Option<u64> {
    if plaintext_size > MAX_PLAINTEXT_SIZE {
        return None;
    }
    let chunks = plaintext_size.div_ceil(CHUNK_SIZE as u64).max(1);
    Some(plaintext_size + chunks * TAG_LEN as u64)
}

/// SHA-256 of a whole ciphertext (what a descriptor's `sha256` names).
pub fn ciphertext_sha256(ciphertext: &[u8]) -> [u8; 32] {
    Sha256::digest(ciphertext).into()
}

/// Streaming SHA-256 of a ciphertext, for files too large to hold in memory.
#[derive(Clone, Default)]
pub struct CiphertextHasher(Sha256);

impl CiphertextHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next ciphertext bytes.
    pub fn update(&mut self, ciphertext: &[u8]) {
        self.0.update(ciphertext);
    }

    /// The SHA-256 of everything hashed.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    /// `AttachmentHashMismatch` unless everything hashed has SHA-256 `expected`.
    pub fn verify(self, expected: &[u8]) -> Result<()> {
        check_hash(self.finish(), expected)
    }
}

fn check_hash(actual: [u8; 32], expected: &[u8]) -> Result<()> {
    if expected.len() != 32 {
        return Err(format_error(format!(
            "sha256 must be 32 bytes, not {}",
            expected.len()
        )));
    }
    if actual[..] != *expected {
        return Err(MlsError::AttachmentHashMismatch);
    }
    Ok(())
}

/// Encrypts a whole file under a fresh key.
pub fn encrypt_attachment(plaintext: &[u8]) -> Result<EncryptedAttachment> {
    encrypt_with(AttachmentKey::generate()?, plaintext)
}

fn encrypt_with(key: AttachmentKey, plaintext: &[u8]) -> Result<EncryptedAttachment> {
    let size =
        ciphertext_size(plaintext.len() as u64).ok_or_else(|| format_error("file too large"))?;
    let mut encryptor = AttachmentEncryptor::with_key(key);
    let mut ciphertext = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    ciphertext.extend_from_slice(&encryptor.update(plaintext)?);
    let (last, key, sha256, plaintext_size) = encryptor.finish()?;
    ciphertext.extend_from_slice(&last);
    Ok(EncryptedAttachment {
        ciphertext,
        key,
        sha256,
        plaintext_size,
    })
}

/// Checks the ciphertext's SHA-256, then decrypts it (raw 32-byte key, 7-byte nonce prefix).
pub fn decrypt_attachment(
    ciphertext: &[u8],
    key: &[u8],
    nonce_prefix: &[u8],
    sha256: &[u8],
) -> Result<Vec<u8>> {
    decrypt_verified(
        ciphertext,
        &AttachmentKey::from_bytes(key, nonce_prefix)?,
        sha256,
    )
}

fn decrypt_verified(ciphertext: &[u8], key: &AttachmentKey, sha256: &[u8]) -> Result<Vec<u8>> {
    check_hash(ciphertext_sha256(ciphertext), sha256)?;
    let mut decryptor = AttachmentDecryptor::with_key(key);
    let mut plaintext = decryptor.update(ciphertext)?;
    plaintext.extend_from_slice(&decryptor.finish()?);
    Ok(plaintext)
}

/// Buffers a stream and hands out `unit`-byte pieces, always keeping back the last 0..=`unit`
/// bytes: whether a piece is the final one is only known at the end of the stream.
struct Chunker {
    /// Never longer than `unit` (allocated once, so never reallocated and copied).
    pending: Zeroizing<Vec<u8>>,
    unit: usize,
}

impl Chunker {
    fn new(unit: usize) -> Self {
        Self {
            pending: Zeroizing::new(Vec::with_capacity(unit)),
            unit,
        }
    }

    /// Calls `f` on each complete piece that is known not to be the last one.
    fn push(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        // Invariant: pending.len() <= unit, so the split points below are in range.
        while self.pending.len() + data.len() > self.unit {
            if self.pending.is_empty() {
                let (piece, rest) = data.split_at(self.unit);
                f(piece)?;
                data = rest;
            } else {
                let (fill, rest) = data.split_at(self.unit - self.pending.len());
                self.pending.extend_from_slice(fill);
                data = rest;
                f(&self.pending)?;
                self.pending.clear();
            }
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }
}

/// AES-256-GCM with the STREAM nonces of the format.
struct ChunkCipher {
    cipher: Aes256Gcm,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Index of the next chunk.
    next: u64,
}

impl ChunkCipher {
    fn new(key: &AttachmentKey) -> Self {
        Self {
            cipher: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&key.key[..])),
            nonce_prefix: key.nonce_prefix,
            next: 0,
        }
    }

    fn nonce(&self, last: bool) -> Result<[u8; 12]> {
        let index = u32::try_from(self.next)
            .map_err(|_| format_error("more than 2^32 chunks (256 TiB)"))?;
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        Ok(nonce)
    }

    /// Appends the encrypted `chunk` and its tag to `out`.
    fn seal(&mut self, chunk: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        let nonce = self.nonce(last)?;
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut out[start..])
            .map_err(|_| MlsError::Crypto("AES-GCM encryption failed".into()))?;
        out.extend_from_slice(&tag);
        self.next += 1;
        Ok(())
    }

    /// Appends the plaintext of `sealed` (ciphertext ‖ tag) to `out`; on failure `out` is left
    /// as it was, so unauthenticated plaintext is never released.
    fn open(&mut self, sealed: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        let nonce = self.nonce(last)?;
        let body_len = sealed
            .len()
            .checked_sub(TAG_LEN)
            .ok_or_else(|| corrupt(format!("chunk {} is shorter than its tag", self.next)))?;
        let (body, tag) = sealed.split_at(body_len);
        let start = out.len();
        out.extend_from_slice(body);
        if self
            .cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                b"",
                &mut out[start..],
                Tag::from_slice(tag),
            )
            .is_err()
        {
            out[start..].zeroize();
            out.truncate(start);
            return Err(corrupt(if last {
                format!(
                    "final chunk {} failed authentication (tampered or truncated)",
                    self.next
                )
            } else {
                format!("chunk {} failed authentication", self.next)
            }));
        }
        self.next += 1;
        Ok(())
    }
}

/// Streaming encryption under a fresh key: feed plaintext to `update`, then `finish`.
///
/// Concatenating every `update` output and the `finish` output gives the same ciphertext as
/// [`encrypt_attachment`] would under the same key.
pub struct AttachmentEncryptor {
    key: AttachmentKey,
    cipher: ChunkCipher,
    chunker: Chunker,
    hasher: Sha256,
    plaintext_size: u64,
}

impl AttachmentEncryptor {
    /// A new encryptor with a fresh random key and nonce prefix.
    pub fn new() -> Result<Self> {
        Ok(Self::with_key(AttachmentKey::generate()?))
    }

    fn with_key(key: AttachmentKey) -> Self {
        Self {
            cipher: ChunkCipher::new(&key),
            key,
            chunker: Chunker::new(CHUNK_SIZE),
            hasher: Sha256::new(),
            plaintext_size: 0,
        }
    }

    /// Encrypts more plaintext; returns the ciphertext of the chunks completed so far (the
    /// last 1..=65536 bytes seen are kept back: only `finish` knows which chunk is the last).
    pub fn update(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let Self {
            cipher, chunker, ..
        } = self;
        let mut out = Vec::with_capacity(
            (chunker.pending.len() + plaintext.len()) / CHUNK_SIZE * SEALED_CHUNK_SIZE,
        );
        chunker.push(plaintext, |chunk| cipher.seal(chunk, false, &mut out))?;
        self.hasher.update(&out);
        self.plaintext_size += plaintext.len() as u64;
        Ok(out)
    }

    /// Encrypts the last chunk. Returns its ciphertext (to append to the `update` outputs), the
    /// key, the SHA-256 of the whole ciphertext and the plaintext size in bytes.
    pub fn finish(mut self) -> Result<(Vec<u8>, AttachmentKey, [u8; 32], u64)> {
        let mut out = Vec::with_capacity(self.chunker.pending.len() + TAG_LEN);
        self.cipher.seal(&self.chunker.pending, true, &mut out)?;
        self.hasher.update(&out);
        Ok((
            out,
            self.key,
            self.hasher.finalize().into(),
            self.plaintext_size,
        ))
    }
}

/// Streaming decryption: feed ciphertext to `update`, then `finish`.
///
/// It cannot check the SHA-256 before decrypting: verify the downloaded ciphertext first (with
/// [`ciphertext_sha256`] or [`CiphertextHasher`]), as [`decrypt_attachment`] does. Each chunk
/// released is authenticated, but the file is complete and untruncated only once `finish`
/// returns `Ok`. After an error every later call fails.
pub struct AttachmentDecryptor {
    cipher: ChunkCipher,
    chunker: Chunker,
    failed: bool,
}

impl AttachmentDecryptor {
    /// A decryptor from a raw 32-byte key and 7-byte nonce prefix (other lengths: `AttachmentFormat`).
    pub fn new(key: &[u8], nonce_prefix: &[u8]) -> Result<Self> {
        Ok(Self::with_key(&AttachmentKey::from_bytes(
            key,
            nonce_prefix,
        )?))
    }

    /// A decryptor for an [`AttachmentKey`].
    pub fn with_key(key: &AttachmentKey) -> Self {
        Self {
            cipher: ChunkCipher::new(key),
            chunker: Chunker::new(SEALED_CHUNK_SIZE),
            failed: false,
        }
    }

    /// Decrypts more ciphertext; returns the plaintext of complete chunks, keeping back the
    /// last chunk seen until more ciphertext arrives or `finish` (it may be the final one).
    pub fn update(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        if self.failed {
            return Err(corrupt("an earlier chunk failed"));
        }
        let Self {
            cipher, chunker, ..
        } = self;
        let mut out = Vec::with_capacity(
            (chunker.pending.len() + ciphertext.len()) / SEALED_CHUNK_SIZE * CHUNK_SIZE,
        );
        let result = chunker.push(ciphertext, |sealed| cipher.open(sealed, false, &mut out));
        if let Err(e) = result {
            self.failed = true;
            return Err(e);
        }
        Ok(out)
    }

    /// Decrypts the final chunk, which must carry the last-chunk flag (else the ciphertext was
    /// truncated or extended); returns its plaintext.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.failed {
            return Err(corrupt("an earlier chunk failed"));
        }
        let last = &self.chunker.pending;
        if last.len() < TAG_LEN {
            return Err(corrupt(if self.cipher.next == 0 && last.is_empty() {
                "empty ciphertext".to_string()
            } else {
                format!(
                    "truncated: final chunk {} is shorter than its tag",
                    self.cipher.next
                )
            }));
        }
        if last.len() == TAG_LEN && self.cipher.next > 0 {
            return Err(corrupt("empty final chunk after a full one"));
        }
        let mut out = Vec::with_capacity(last.len() - TAG_LEN);
        self.cipher.open(last, true, &mut out)?;
        Ok(out)
    }
}

/// What a message says about an attachment: where it is, how to decrypt and check it, and what
/// it is. `mime` and `name` come from the sender: sanitize before using them as a file name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentDescriptor {
    /// Format version, [`ATTACHMENT_VERSION`].
    pub v: u32,
    /// Media id of the ciphertext on its server.
    pub media_id: String,
    /// Server storing the ciphertext.
    pub server_name: String,
    /// AES-256 key, standard padded base64 (secret).
    pub key: String,
    /// 7-byte nonce prefix, standard padded base64.
    pub nonce_prefix: String,
    /// SHA-256 of the ciphertext, standard padded base64.
    pub sha256: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// Plaintext size in bytes.
    pub plaintext_size: u64,
    /// MIME type of the plaintext, as the sender claims it.
    pub mime: String,
    /// File name, as the sender gives it.
    pub name: String,
    /// Image or video width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Image or video height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Encrypted preview image, under its own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Box<ThumbnailDescriptor>>,
}

/// An attachment's encrypted thumbnail (its own media id, key, nonce prefix and hash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailDescriptor {
    /// Media id of the thumbnail's ciphertext.
    pub media_id: String,
    /// Server storing the thumbnail's ciphertext.
    pub server_name: String,
    /// AES-256 key, standard padded base64 (secret).
    pub key: String,
    /// 7-byte nonce prefix, standard padded base64.
    pub nonce_prefix: String,
    /// SHA-256 of the thumbnail's ciphertext, standard padded base64.
    pub sha256: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// MIME type of the thumbnail image.
    pub mime: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Checks the hash and size of `ciphertext` against a descriptor's fields, then decrypts it.
fn decrypt_described(
    ciphertext: &[u8],
    key: &str,
    nonce_prefix: &str,
    sha256: &str,
    size: u64,
) -> Result<Vec<u8>> {
    let key = AttachmentKey::from_base64(key, nonce_prefix)?;
    let sha256 = base64_decode(sha256).ok_or_else(|| format_error("sha256 is not valid base64"))?;
    check_hash(ciphertext_sha256(ciphertext), &sha256)?;
    if ciphertext.len() as u64 != size {
        return Err(format_error(format!(
            "descriptor says {size} bytes, ciphertext has {}",
            ciphertext.len()
        )));
    }
    decrypt_verified(ciphertext, &key, &sha256)
}

impl AttachmentDescriptor {
    /// A descriptor for `encrypted` once uploaded as `media_id` on `server_name`.
    pub fn new(
        media_id: impl Into<String>,
        server_name: impl Into<String>,
        encrypted: &EncryptedAttachment,
        mime: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            v: ATTACHMENT_VERSION,
            media_id: media_id.into(),
            server_name: server_name.into(),
            key: encrypted.key.key_base64(),
            nonce_prefix: encrypted.key.nonce_prefix_base64(),
            sha256: base64_encode(&encrypted.sha256),
            size: encrypted.ciphertext.len() as u64,
            plaintext_size: encrypted.plaintext_size,
            mime: mime.into(),
            name: name.into(),
            width: None,
            height: None,
            thumbnail: None,
        }
    }

    /// Checks the downloaded ciphertext (version, SHA-256, sizes) and decrypts it.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        if self.v != ATTACHMENT_VERSION {
            return Err(format_error(format!("unknown version {}", self.v)));
        }
        let plaintext = decrypt_described(
            ciphertext,
            &self.key,
            &self.nonce_prefix,
            &self.sha256,
            self.size,
        )?;
        if plaintext.len() as u64 != self.plaintext_size {
            return Err(format_error(format!(
                "descriptor says {} plaintext bytes, file has {}",
                self.plaintext_size,
                plaintext.len()
            )));
        }
        Ok(plaintext)
    }
}

impl ThumbnailDescriptor {
    /// A descriptor for an encrypted thumbnail once uploaded as `media_id` on `server_name`.
    pub fn new(
        media_id: impl Into<String>,
        server_name: impl Into<String>,
        encrypted: &EncryptedAttachment,
        mime: impl Into<String>,
        width: u32,
        height: u32,
    ) -> Self {
        Self {
            media_id: media_id.into(),
            server_name: server_name.into(),
            key: encrypted.key.key_base64(),
            nonce_prefix: encrypted.key.nonce_prefix_base64(),
            sha256: base64_encode(&encrypted.sha256),
            size: encrypted.ciphertext.len() as u64,
            mime: mime.into(),
            width,
            height,
        }
    }

    /// Checks the downloaded thumbnail ciphertext (SHA-256, size) and decrypts it.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        decrypt_described(
            ciphertext,
            &self.key,
            &self.nonce_prefix,
            &self.sha256,
            self.size,
        )
    }
}

impl fmt::Debug for AttachmentDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentDescriptor")
            .field("v", &self.v)
            .field("media_id", &self.media_id)
            .field("server_name", &self.server_name)
            .field("key", &"<redacted>")
            .field("nonce_prefix", &self.nonce_prefix)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("plaintext_size", &self.plaintext_size)
            .field("mime", &self.mime)
            .field("name", &self.name)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("thumbnail", &self.thumbnail)
            .finish()
    }
}

impl fmt::Debug for ThumbnailDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThumbnailDescriptor")
            .field("media_id", &self.media_id)
            .field("server_name", &self.server_name)
            .field("key", &"<redacted>")
            .field("nonce_prefix", &self.nonce_prefix)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("mime", &self.mime)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Standard padded base64 (RFC 4648 §4).
fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Strict standard padded base64 (the `base64` crate refuses whitespace, bad padding and
/// non-zero unused bits).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 6] = [0, 1, 65535, 65536, 65537, 3 * 65536 + 5];

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn fixed_key() -> AttachmentKey {
        AttachmentKey::from_bytes(&[7u8; 32], &[1, 2, 3, 4, 5, 6, 7]).unwrap()
    }

    fn decrypt(e: &EncryptedAttachment, ciphertext: &[u8], sha256: &[u8]) -> Result<Vec<u8>> {
        decrypt_attachment(ciphertext, e.key.key(), e.key.nonce_prefix(), sha256)
    }

    /// Decrypts without the hash check (as if an attacker had also replaced the hash).
    fn decrypt_rehashed(e: &EncryptedAttachment, ciphertext: &[u8]) -> Result<Vec<u8>> {
        decrypt(e, ciphertext, &ciphertext_sha256(ciphertext))
    }

    fn is_corrupt<T>(r: Result<T>) -> bool {
        matches!(r, Err(MlsError::AttachmentCorrupt(_)))
    }

    fn is_format<T>(r: Result<T>) -> bool {
        matches!(r, Err(MlsError::AttachmentFormat(_)))
    }

    /// Feeds `input` in pieces of the given sizes (cycled) to `f`, collecting its output.
    fn in_pieces(
        input: &[u8],
        sizes: &[usize],
        mut f: impl FnMut(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = input;
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            out.extend_from_slice(&f(piece)?);
            rest = tail;
        }
        Ok(out)
    }

    #[test]
    fn round_trip_preserves_files_of_every_size_around_chunk_boundaries() {
        for len in SIZES {
            let plain = data(len);
            let e = encrypt_attachment(&plain).unwrap();
            assert_eq!(e.plaintext_size, len as u64);
            assert_eq!(
                Some(e.ciphertext.len() as u64),
                ciphertext_size(len as u64),
                "{len}"
            );
            assert_eq!(e.sha256, ciphertext_sha256(&e.ciphertext));
            assert_eq!(
                decrypt(&e, &e.ciphertext, &e.sha256).unwrap(),
                plain,
                "{len}"
            );
        }
    }

    #[test]
    fn ciphertext_size_counts_one_tag_per_chunk_and_an_empty_file_as_one_chunk() {
        assert_eq!(ciphertext_size(0), Some(16));
        assert_eq!(ciphertext_size(1), Some(17));
        assert_eq!(ciphertext_size(65536), Some(65552));
        assert_eq!(ciphertext_size(65537), Some(65537 + 32));
        assert_eq!(
            ciphertext_size(MAX_PLAINTEXT_SIZE),
            Some(MAX_PLAINTEXT_SIZE + (16 << 32))
        );
        assert_eq!(ciphertext_size(MAX_PLAINTEXT_SIZE + 1), None);
        assert_eq!(ciphertext_size(u64::MAX), None);
    }

    #[test]
    fn each_file_gets_a_fresh_key_and_nonce_prefix() {
        let a = encrypt_attachment(b"same").unwrap();
        let b = encrypt_attachment(b"same").unwrap();
        assert_ne!(a.key.key(), b.key.key());
        assert_ne!(a.key.nonce_prefix(), b.key.nonce_prefix());
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn chunks_use_stream_nonces_prefix_index_last_flag_without_aad() {
        // Decrypt each chunk with plain AES-256-GCM and the documented nonce, independently of
        // ChunkCipher: this pins the wire format.
        let key = fixed_key();
        let plain = data(2 * CHUNK_SIZE + 10);
        let e = encrypt_with(key.clone(), &plain).unwrap();
        let cipher = Aes256Gcm::new_from_slice(key.key()).unwrap();
        let sealed: Vec<&[u8]> = e.ciphertext.chunks(SEALED_CHUNK_SIZE).collect();
        assert_eq!(sealed.len(), 3);
        for (i, chunk) in sealed.iter().enumerate() {
            let mut nonce = [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, i as u8, 0];
            nonce[11] = u8::from(i == 2);
            let got =
                aes_gcm::aead::Aead::decrypt(&cipher, Nonce::from_slice(&nonce), *chunk).unwrap();
            assert_eq!(
                got,
                plain[i * CHUNK_SIZE..plain.len().min((i + 1) * CHUNK_SIZE)]
            );
        }
        // An empty file is one final chunk: the bare tag of an empty plaintext.
        let empty = encrypt_with(key, b"").unwrap();
        let tag = aes_gcm::aead::Aead::encrypt(
            &cipher,
            Nonce::from_slice(&[1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 1]),
            &b""[..],
        )
        .unwrap();
        assert_eq!(empty.ciphertext, tag);
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_whole_buffer_ciphertext_and_decrypts_both_ways() {
        for len in SIZES {
            let plain = data(len);
            let whole = encrypt_with(fixed_key(), &plain).unwrap();

            let mut enc = AttachmentEncryptor::with_key(fixed_key());
            let mut streamed = in_pieces(&plain, &[1, 7, 0, 4095, 65536, 65537, 100_003], |p| {
                enc.update(p)
            })
            .unwrap();
            let (last, key, sha256, size) = enc.finish().unwrap();
            streamed.extend_from_slice(&last);
            assert_eq!(streamed, whole.ciphertext, "{len}");
            assert_eq!(sha256, whole.sha256);
            assert_eq!(size, len as u64);
            assert_eq!(key.key(), whole.key.key());

            assert_eq!(decrypt(&whole, &streamed, &sha256).unwrap(), plain);
            let mut dec = AttachmentDecryptor::new(key.key(), key.nonce_prefix()).unwrap();
            let mut out = in_pieces(&streamed, &[3, 65552, 1, 65551, 70_000, 16], |p| {
                dec.update(p)
            })
            .unwrap();
            out.extend_from_slice(&dec.finish().unwrap());
            assert_eq!(out, plain, "{len}");
        }
    }

    #[test]
    fn streaming_encryption_of_a_fresh_key_decrypts() {
        let plain = data(65536 * 2 + 3);
        let mut enc = AttachmentEncryptor::new().unwrap();
        let mut ct = in_pieces(&plain, &[1000], |p| enc.update(p)).unwrap();
        let (last, key, sha256, size) = enc.finish().unwrap();
        ct.extend_from_slice(&last);
        assert_eq!(size, plain.len() as u64);
        let out = decrypt_attachment(&ct, key.key(), key.nonce_prefix(), &sha256).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn decryptor_holds_back_the_last_full_chunk_until_more_arrives_or_finish() {
        let plain = data(2 * CHUNK_SIZE);
        let e = encrypt_with(fixed_key(), &plain).unwrap();
        let mut dec = AttachmentDecryptor::with_key(&e.key);
        assert!(dec
            .update(&e.ciphertext[..SEALED_CHUNK_SIZE])
            .unwrap()
            .is_empty());
        assert_eq!(
            dec.update(&e.ciphertext[SEALED_CHUNK_SIZE..SEALED_CHUNK_SIZE + 1])
                .unwrap(),
            plain[..CHUNK_SIZE]
        );
        assert!(dec
            .update(&e.ciphertext[SEALED_CHUNK_SIZE + 1..])
            .unwrap()
            .is_empty());
        assert_eq!(dec.finish().unwrap(), plain[CHUNK_SIZE..]);

        // One exactly full chunk is the final chunk: nothing before finish.
        let one = encrypt_with(fixed_key(), &plain[..CHUNK_SIZE]).unwrap();
        assert_eq!(one.ciphertext.len(), SEALED_CHUNK_SIZE);
        let mut dec = AttachmentDecryptor::with_key(&one.key);
        assert!(dec.update(&one.ciphertext).unwrap().is_empty());
        assert_eq!(dec.finish().unwrap(), plain[..CHUNK_SIZE]);
    }

    #[test]
    fn encryptor_keeps_back_a_full_chunk_so_the_last_flag_lands_on_it() {
        let mut enc = AttachmentEncryptor::with_key(fixed_key());
        assert!(enc.update(&data(CHUNK_SIZE)).unwrap().is_empty());
        let (last, ..) = enc.finish().unwrap();
        assert_eq!(last.len(), SEALED_CHUNK_SIZE);
    }

    #[test]
    fn flipped_ciphertext_byte_is_refused_by_the_hash_check() {
        let e = encrypt_attachment(&data(65537)).unwrap();
        for at in [0, 65551, 65552, e.ciphertext.len() - 1] {
            let mut bad = e.ciphertext.clone();
            bad[at] ^= 0x01;
            assert!(
                matches!(
                    decrypt(&e, &bad, &e.sha256),
                    Err(MlsError::AttachmentHashMismatch)
                ),
                "{at}"
            );
        }
        let mut wrong_hash = e.sha256;
        wrong_hash[0] ^= 1;
        assert!(matches!(
            decrypt(&e, &e.ciphertext, &wrong_hash),
            Err(MlsError::AttachmentHashMismatch)
        ));
    }

    #[test]
    fn flipped_byte_with_a_recomputed_hash_is_refused_by_the_tag() {
        let e = encrypt_attachment(&data(2 * 65536 + 5)).unwrap();
        let len = e.ciphertext.len();
        for at in [0, 100, 65535, 65540, 65552, 2 * 65552, len - 17, len - 1] {
            let mut bad = e.ciphertext.clone();
            bad[at] ^= 0x80;
            assert!(is_corrupt(decrypt_rehashed(&e, &bad)), "{at}");
        }
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_refused_even_with_a_recomputed_hash() {
        let e = encrypt_attachment(&data(3 * 65536 + 5)).unwrap();
        for chunks in 0..=3 {
            let cut = &e.ciphertext[..chunks * SEALED_CHUNK_SIZE];
            assert!(
                is_corrupt(decrypt_rehashed(&e, cut)),
                "{chunks} chunks kept"
            );
        }
        // Within the final chunk, and through its tag.
        for cut in [
            e.ciphertext.len() - 1,
            e.ciphertext.len() - 16,
            3 * SEALED_CHUNK_SIZE + 3,
        ] {
            assert!(
                is_corrupt(decrypt_rehashed(&e, &e.ciphertext[..cut])),
                "{cut}"
            );
        }
    }

    #[test]
    fn swapping_two_chunks_is_refused() {
        let e = encrypt_attachment(&data(3 * 65536 + 5)).unwrap();
        let c = &e.ciphertext;
        let (a, b) = (
            0..SEALED_CHUNK_SIZE,
            SEALED_CHUNK_SIZE..2 * SEALED_CHUNK_SIZE,
        );
        let swapped = [&c[b.clone()], &c[a.clone()], &c[2 * SEALED_CHUNK_SIZE..]].concat();
        assert!(is_corrupt(decrypt_rehashed(&e, &swapped)));
        // Moving the short final chunk earlier, and a full chunk to the end.
        let last = &c[3 * SEALED_CHUNK_SIZE..];
        let moved = [last, &c[..3 * SEALED_CHUNK_SIZE]].concat();
        assert!(is_corrupt(decrypt_rehashed(&e, &moved)));
        let moved = [&c[a], &c[2 * SEALED_CHUNK_SIZE..], &c[b]].concat();
        assert!(is_corrupt(decrypt_rehashed(&e, &moved)));
    }

    #[test]
    fn appended_bytes_or_a_repeated_final_chunk_are_refused() {
        for len in [0, 5, 65536, 65537] {
            let e = encrypt_attachment(&data(len)).unwrap();
            let last_start = (e.ciphertext.len() - 1) / SEALED_CHUNK_SIZE * SEALED_CHUNK_SIZE;
            let extended = [&e.ciphertext[..], &[0u8]].concat();
            assert!(is_corrupt(decrypt_rehashed(&e, &extended)), "{len}");
            let repeated = [&e.ciphertext[..], &e.ciphertext[last_start..]].concat();
            assert!(is_corrupt(decrypt_rehashed(&e, &repeated)), "{len}");
            let bare_tag = [&e.ciphertext[..], &[0u8; 16]].concat();
            assert!(is_corrupt(decrypt_rehashed(&e, &bare_tag)), "{len}");
        }
    }

    #[test]
    fn wrong_key_or_nonce_prefix_is_refused() {
        let e = encrypt_attachment(&data(70_000)).unwrap();
        let mut key = *e.key.key();
        key[31] ^= 1;
        assert!(is_corrupt(decrypt_attachment(
            &e.ciphertext,
            &key,
            e.key.nonce_prefix(),
            &e.sha256
        )));
        let mut prefix = *e.key.nonce_prefix();
        prefix[0] ^= 1;
        assert!(is_corrupt(decrypt_attachment(
            &e.ciphertext,
            e.key.key(),
            &prefix,
            &e.sha256
        )));
    }

    #[test]
    fn bad_key_nonce_and_hash_lengths_are_refused_without_panicking() {
        let e = encrypt_attachment(b"hello").unwrap();
        let (k, p, h) = (e.key.key(), e.key.nonce_prefix(), &e.sha256);
        for bad in [&[][..], &k[..16], &k[..31], &[0u8; 33][..], &[0u8; 64][..]] {
            assert!(is_format(decrypt_attachment(&e.ciphertext, bad, p, h)));
            assert!(is_format(AttachmentDecryptor::new(bad, p)));
        }
        for bad in [&[][..], &p[..6], &[0u8; 8][..], &[0u8; 12][..]] {
            assert!(is_format(decrypt_attachment(&e.ciphertext, k, bad, h)));
            assert!(is_format(AttachmentDecryptor::new(k, bad)));
        }
        for bad in [&[][..], &h[..31], &[0u8; 33][..]] {
            assert!(is_format(decrypt_attachment(&e.ciphertext, k, p, bad)));
        }
    }

    #[test]
    fn short_or_garbage_ciphertext_is_refused_without_panicking() {
        let e = encrypt_attachment(b"").unwrap();
        for len in [0, 1, 15, 16, 17, 65551, 65552, 65553, 2 * 65552 + 15] {
            let junk = data(len);
            assert!(is_corrupt(decrypt_rehashed(&e, &junk)), "{len}");
        }
    }

    #[test]
    fn decryptor_refuses_everything_after_a_failed_chunk() {
        let e = encrypt_attachment(&data(3 * 65536)).unwrap();
        let mut bad = e.ciphertext.clone();
        bad[10] ^= 1;
        let mut dec = AttachmentDecryptor::with_key(&e.key);
        assert!(is_corrupt(dec.update(&bad[..SEALED_CHUNK_SIZE + 1])));
        assert!(is_corrupt(dec.update(&bad[SEALED_CHUNK_SIZE + 1..])));
        assert!(is_corrupt(dec.finish()));
    }

    #[test]
    fn streaming_hasher_equals_the_one_shot_hash_and_verifies() {
        let e = encrypt_attachment(&data(100_000)).unwrap();
        let mut h = CiphertextHasher::new();
        for piece in e.ciphertext.chunks(777) {
            h.update(piece);
        }
        assert_eq!(h.clone().finish(), e.sha256);
        h.clone().verify(&e.sha256).unwrap();
        h.update(b"x");
        assert!(matches!(
            h.verify(&e.sha256),
            Err(MlsError::AttachmentHashMismatch)
        ));
    }

    fn descriptor(
        with_thumbnail: bool,
    ) -> (
        AttachmentDescriptor,
        EncryptedAttachment,
        EncryptedAttachment,
    ) {
        let file = encrypt_attachment(&data(70_000)).unwrap();
        let thumb = encrypt_attachment(&data(300)).unwrap();
        let mut d = AttachmentDescriptor::new("m1", "a.example", &file, "image/png", "cat.png");
        if with_thumbnail {
            d.width = Some(640);
            d.height = Some(480);
            d.thumbnail = Some(Box::new(ThumbnailDescriptor::new(
                "m2",
                "a.example",
                &thumb,
                "image/jpeg",
                64,
                48,
            )));
        }
        (d, file, thumb)
    }

    #[test]
    fn descriptor_json_round_trips_without_thumbnail_and_leaves_out_none_fields() {
        let (d, file, _) = descriptor(false);
        let json = serde_json::to_value(&d).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "key",
                "media_id",
                "mime",
                "name",
                "nonce_prefix",
                "plaintext_size",
                "server_name",
                "sha256",
                "size",
                "v"
            ]
        );
        assert_eq!(json["v"], 1);
        assert_eq!(json["size"], file.ciphertext.len());
        assert_eq!(json["key"], file.key.key_base64());
        let back: AttachmentDescriptor = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.decrypt(&file.ciphertext).unwrap(), data(70_000));
    }

    #[test]
    fn descriptor_json_round_trips_with_thumbnail() {
        let (d, file, thumb) = descriptor(true);
        let text = serde_json::to_string(&d).unwrap();
        let back: AttachmentDescriptor = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        assert_eq!((back.width, back.height), (Some(640), Some(480)));
        let t = back.thumbnail.as_ref().unwrap();
        assert_eq!((t.media_id.as_str(), t.width, t.height), ("m2", 64, 48));
        assert_eq!(t.decrypt(&thumb.ciphertext).unwrap(), data(300));
        assert_eq!(back.decrypt(&file.ciphertext).unwrap(), data(70_000));
        // The thumbnail has its own key: the file's ciphertext is not it.
        assert!(matches!(
            t.decrypt(&file.ciphertext),
            Err(MlsError::AttachmentHashMismatch)
        ));
    }

    #[test]
    fn descriptor_refuses_unknown_version_bad_base64_and_wrong_sizes() {
        let (d, file, _) = descriptor(false);
        let mut bad = d.clone();
        bad.v = 2;
        assert!(is_format(bad.decrypt(&file.ciphertext)));
        let mut bad = d.clone();
        bad.key = bad.key.trim_end_matches('=').to_string();
        assert!(is_format(bad.decrypt(&file.ciphertext)));
        let mut bad = d.clone();
        bad.sha256 = "!!!!".into();
        assert!(is_format(bad.decrypt(&file.ciphertext)));
        let mut bad = d.clone();
        bad.size += 1;
        assert!(is_format(bad.decrypt(&file.ciphertext)));
        let mut bad = d.clone();
        bad.plaintext_size -= 1;
        assert!(is_format(bad.decrypt(&file.ciphertext)));
        let mut tampered = file.ciphertext.clone();
        tampered[0] ^= 1;
        assert!(matches!(
            d.decrypt(&tampered),
            Err(MlsError::AttachmentHashMismatch)
        ));
    }

    #[test]
    fn keys_are_redacted_from_debug_output() {
        let (d, file, _) = descriptor(true);
        let key_b64 = file.key.key_base64();
        assert!(!format!("{d:?}").contains(&key_b64));
        assert!(!format!("{file:?}").contains(&key_b64));
        assert!(!format!("{:?}", file.key).contains(&format!("{:?}", file.key.key())));
    }

    #[test]
    fn base64_is_standard_padded_and_strict() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff, 0xbf], "+/+/"),
        ] {
            assert_eq!(base64_encode(raw), text);
            assert_eq!(base64_decode(text).as_deref(), Some(raw));
        }
        for bad in [
            "Zg", "Zg=", "Zh==", "Zm9=", "Z===", "====", "Zg==Zg==", "Zm9v\n", " Zm9v", "-_-_",
            "Zm=v",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
        let key = fixed_key();
        let back =
            AttachmentKey::from_base64(&key.key_base64(), &key.nonce_prefix_base64()).unwrap();
        assert_eq!(back.key(), key.key());
        assert_eq!(back.nonce_prefix(), key.nonce_prefix());
    }

    // proptest is a native-only dev-dependency (the wasm tests are tests/wasm_node.rs).
    #[cfg(not(target_arch = "wasm32"))]
    mod random_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_ciphertext_and_parameters_never_panic(
                ciphertext in proptest::collection::vec(any::<u8>(), 0..300),
                key in proptest::collection::vec(any::<u8>(), 0..40),
                prefix in proptest::collection::vec(any::<u8>(), 0..10),
                hash_it in any::<bool>(),
            ) {
                let sha256 = if hash_it { ciphertext_sha256(&ciphertext).to_vec() } else { key.clone() };
                prop_assert!(decrypt_attachment(&ciphertext, &key, &prefix, &sha256).is_err());
            }

            #[test]
            fn any_proper_prefix_of_a_ciphertext_is_refused(cut in 0usize..(2 * 65552 + 21)) {
                let e = encrypt_with(fixed_key(), &data(2 * 65536 + 5)).unwrap();
                prop_assert_eq!(e.ciphertext.len(), 2 * 65552 + 21);
                prop_assert!(is_corrupt(decrypt_rehashed(&e, &e.ciphertext[..cut])));
            }

            #[test]
            fn any_split_of_the_stream_decrypts_the_same(
                splits in proptest::collection::vec(1usize..70_000, 1..8),
            ) {
                let plain = data(2 * 65536 + 5);
                let e = encrypt_with(fixed_key(), &plain).unwrap();
                let mut dec = AttachmentDecryptor::with_key(&e.key);
                let mut out = in_pieces(&e.ciphertext, &splits, |p| dec.update(p)).unwrap();
                out.extend_from_slice(&dec.finish().unwrap());
                prop_assert_eq!(out, plain);
            }
        }
    }
}
