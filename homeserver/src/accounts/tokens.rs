//! Access tokens (JWTs signed with a key kept in the data dir) and refresh tokens.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// File in the data dir holding the JWT signing secret.
/// Length of the HS256 secret.
const JWT_KEY_BYTES: usize = 64;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Device id.
    pub did: String,
    /// Session id; checked against the store on every request.
    pub sid: String,
    /// Issuer: this server's name.
    pub iss: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expiry, seconds.
    pub exp: u64,
}

/// Most verified tokens remembered; past it the memory starts over (a token verifies again).
const VERIFIED_CACHE_ENTRIES: usize = 16_384;

/// Signs and verifies access tokens with this server's persistent key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    server_name: String,
    /// Claims of tokens whose signature already verified, by SHA-256 of the token. Every
    /// request carries its token, and checking an HS256 JWT (two base64 decodes, two JSON
    /// parses, an HMAC) costs ten times the hash. Keyed by digest, so the map holds no tokens
    /// and its lookups compare nothing an attacker could learn a token from; only tokens
    /// that verified go in, so forged ones cannot crowd it.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
    /// Key deriving a refresh token's successor (see [`TokenKeys::successor_refresh_token`]).
    successor_key: Zeroizing<[u8; 32]>,
}

impl TokenKeys {
    /// Loads the signing key from `data_dir`, generating it (mode 0600) on first start.
    pub fn load_or_generate(data_dir: &Path, server_name: &str) -> anyhow::Result<TokenKeys> {
        let path = data_dir.join(crate::data_dir::JWT_KEY_FILE);
        let secret = match std::fs::read(&path) {
            Ok(bytes) => {
                let secret = Zeroizing::new(bytes);
                if secret.len() < 32 {
                    anyhow::bail!("{} is shorter than 32 bytes", path.display());
                }
                secret
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = Zeroizing::new(vec![0u8; JWT_KEY_BYTES]);
                rand::rngs::OsRng.fill_bytes(&mut secret);
                write_private_file(&path, &secret)?;
                crate::data_dir::sync_dir(data_dir)
                    .map_err(|e| anyhow::anyhow!("syncing {}: {e}", data_dir.display()))?;
                secret
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        Ok(TokenKeys::from_secret(&secret, server_name))
    }

    /// Keys from a raw secret.
    pub fn from_secret(secret: &[u8], server_name: &str) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[server_name]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            server_name: server_name.to_owned(),
            verified: Mutex::new(HashMap::new()),
            successor_key: {
                let mut h = Sha256::new();
                h.update(b"parley refresh successor v1\0");
                h.update(secret);
                Zeroizing::new(h.finalize().into())
            },
        }
    }

    /// The refresh token that replaces `old` when it is rotated, and its hash: derived from
    /// `old` under a server secret, so a retried refresh (within the grace window) hands out
    /// the same successor, and nobody without `old` and the secret can predict it.
    pub fn successor_refresh_token(&self, old: &str) -> (String, Vec<u8>) {
        let mut h = Sha256::new();
        h.update(self.successor_key.as_ref());
        h.update(old.as_bytes());
        let raw = Zeroizing::new(h.finalize());
        let token = format!("pr_{}", URL_SAFE_NO_PAD.encode(raw.as_slice()));
        let hash = hash_refresh_token(&token);
        (token, hash)
    }

    /// Issues an access token for a session, valid for `ttl_ms`.
    pub fn issue(
        &self,
        user_id: &str,
        device_id: &str,
        session_id: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user_id.to_owned(),
            did: device_id.to_owned(),
            sid: session_id.to_owned(),
            iss: self.server_name.clone(),
            iat: now_ms / 1000,
            // Rounded down, so a token never outlives its configured lifetime.
            exp: (now_ms + ttl_ms) / 1000,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature, issuer and expiry; `None` for any bad token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now_s = crate::clock::now_ms() / 1000;
        let remembered = self.verified_cache().get(&digest).cloned();
        if let Some(claims) = remembered {
            // The same test as a fresh decode (no leeway): expired is expired.
            return (claims.exp >= now_s).then_some(claims);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        let mut cache = self.verified_cache();
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, claims.clone());
        Some(claims)
    }

    fn verified_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        // A panic while holding it leaves only whole entries: carry on with them.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new random refresh token and the hash under which the store keeps it.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    let token = format!("pr_{}", URL_SAFE_NO_PAD.encode(raw.as_ref()));
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// SHA-256 of a refresh token: the store never holds the token itself.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Writes a secret file readable only by its owner.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;

    #[test]
    fn token_signed_with_another_key_is_refused() {
        let ours = TokenKeys::from_secret(&[1u8; 64], "a.example");
        let theirs = TokenKeys::from_secret(&[2u8; 64], "a.example");
        let now = 1_700_000_000_000;
        let token = theirs.issue("@u:a.example", "D", "s", now, 60_000).unwrap();
        assert!(ours.verify(&token).is_none());
        let token = ours
            .issue("@u:a.example", "D", "s", now_ms(), 60_000)
            .unwrap();
        assert_eq!(ours.verify(&token).unwrap().sid, "s");
    }

    #[test]
    fn expired_token_is_refused() {
        let keys = TokenKeys::from_secret(&[1u8; 64], "a.example");
        let token = keys
            .issue("@u:a.example", "D", "s", now_ms() - 120_000, 60_000)
            .unwrap();
        assert!(keys.verify(&token).is_none());
    }

    #[test]
    fn a_remembered_token_is_refused_once_it_expires() {
        let keys = TokenKeys::from_secret(&[1u8; 64], "a.example");
        // Valid for the rest of this second only (expiry is rounded down to the second).
        let now = now_ms();
        let token = keys
            .issue("@u:a.example", "D", "s", now, 1000 - now % 1000)
            .unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "@u:a.example");
        assert_eq!(keys.verify(&token).unwrap().sub, "@u:a.example");
        std::thread::sleep(std::time::Duration::from_millis(2100 - now % 1000));
        assert!(
            keys.verify(&token).is_none(),
            "served from the cache after expiry"
        );
    }

    #[test]
    fn a_token_altered_after_a_good_one_was_remembered_is_still_refused() {
        let keys = TokenKeys::from_secret(&[1u8; 64], "a.example");
        let token = keys
            .issue("@u:a.example", "D", "s", now_ms(), 60_000)
            .unwrap();
        assert!(keys.verify(&token).is_some());
        // A character in the middle of the claims: still base64, no longer what was signed.
        let mut altered = token.clone().into_bytes();
        let at = token.find('.').unwrap() + 8;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(keys.verify(&altered).is_none());
        assert!(keys.verify(&token).is_some());
    }

    #[test]
    fn token_for_another_issuer_is_refused() {
        let a = TokenKeys::from_secret(&[1u8; 64], "a.example");
        let b = TokenKeys::from_secret(&[1u8; 64], "b.example");
        let token = b.issue("@u:b.example", "D", "s", now_ms(), 60_000).unwrap();
        assert!(a.verify(&token).is_none());
    }

    #[test]
    fn signing_key_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = TokenKeys::load_or_generate(dir.path(), "a.example").unwrap();
        let token = first
            .issue("@u:a.example", "D", "s", now_ms(), 60_000)
            .unwrap();
        let second = TokenKeys::load_or_generate(dir.path(), "a.example").unwrap();
        assert!(second.verify(&token).is_some());
    }
}
