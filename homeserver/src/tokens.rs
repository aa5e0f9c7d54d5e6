//! Access tokens (JWTs signed with a key kept in the data dir) and refresh tokens.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// File in the data dir holding the JWT signing secret.
const JWT_KEY_FILE: &str = "jwt_signing.key";
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

/// Signs and verifies access tokens with this server's persistent key.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    server_name: String,
}

impl TokenKeys {
    /// Loads the signing key from `data_dir`, generating it (mode 0600) on first start.
    pub fn load_or_generate(data_dir: &Path, server_name: &str) -> anyhow::Result<TokenKeys> {
        let path = data_dir.join(JWT_KEY_FILE);
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
        }
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
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
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

/// A random identifier of `len` characters from `alphabet`.
pub fn random_id(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| {
            let i = (rng.next_u32() as usize) % alphabet.len();
            char::from(alphabet[i])
        })
        .collect()
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

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }
}
