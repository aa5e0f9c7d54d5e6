//! Passwordless login (docs/protocol.md#challenge-login): the device signs its server's
//! challenge with its MLS signature key. The engine signs only a challenge of the login
//! layout naming the expected server, this device's user and this device, so a server cannot
//! make it sign anything else (an MLS structure, another device's login): every MLS signed
//! content starts with the length of an `MLS 1.0 …` label, never with `parley-login-v1`.

use openmls_traits::signatures::Signer;

use crate::engine::Engine;
use crate::error::{MlsError, Result};

/// First bytes of every login challenge.
pub const LOGIN_CHALLENGE_PREFIX: &[u8] = b"parley-login-v1\0";
/// Random bytes ending a login challenge.
pub const LOGIN_CHALLENGE_RANDOM_BYTES: usize = 32;

impl Engine {
    /// This device's Ed25519 signature of `challenge`, a login challenge of `server_name`
    /// for this device; anything else is refused unsigned.
    pub fn sign_login_challenge(&self, server_name: &str, challenge: &[u8]) -> Result<Vec<u8>> {
        let device = self.device();
        let mut expected = LOGIN_CHALLENGE_PREFIX.to_vec();
        for part in [server_name, &device.user_id, &device.device_id] {
            expected.extend_from_slice(part.as_bytes());
            expected.push(0);
        }
        let refused = |why: &str| MlsError::LoginChallenge(why.to_owned());
        let random = challenge
            .strip_prefix(expected.as_slice())
            .ok_or_else(|| refused("not a login challenge of this server for this device"))?;
        if random.len() != LOGIN_CHALLENGE_RANDOM_BYTES {
            return Err(refused("the challenge's random part is not 32 bytes"));
        }
        self.identity
            .signer
            .sign(challenge)
            .map_err(|e| MlsError::Crypto(format!("signing the login challenge: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    fn engine() -> Engine {
        Engine::new("@al:a.example", "DEV", EngineConfig::default()).unwrap()
    }

    fn challenge(server: &str, user: &str, device: &str) -> Vec<u8> {
        let mut c = LOGIN_CHALLENGE_PREFIX.to_vec();
        for part in [server, user, device] {
            c.extend_from_slice(part.as_bytes());
            c.push(0);
        }
        c.extend_from_slice(&[9; 32]);
        c
    }

    #[test]
    fn only_a_challenge_of_the_expected_server_for_this_device_is_signed() {
        use openmls_traits::crypto::OpenMlsCrypto;
        let e = engine();
        let good = challenge("a.example", "@al:a.example", "DEV");
        let sig = e.sign_login_challenge("a.example", &good).unwrap();
        openmls_rust_crypto::RustCrypto::default()
            .verify_signature(
                openmls_traits::types::SignatureScheme::ED25519,
                &good,
                &e.signature_public_key(),
                &sig,
            )
            .unwrap();
        for bad in [
            challenge("b.example", "@al:a.example", "DEV"),
            challenge("a.example", "@bo:a.example", "DEV"),
            challenge("a.example", "@al:a.example", "OTHER"),
            good[..good.len() - 1].to_vec(),
            b"MLS 1.0 anything".to_vec(),
        ] {
            assert!(matches!(
                e.sign_login_challenge("a.example", &bad),
                Err(MlsError::LoginChallenge(_))
            ));
        }
    }
}
