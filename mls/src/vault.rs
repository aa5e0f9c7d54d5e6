//! The vault: engine state sealed under a passphrase (Argon2id → AES-256-GCM).
//!
//! Layout: `"PLYVAULT"` ‖ version u8 (= 1) ‖ kdf u8 (1 = Argon2id v1.3) ‖ m_cost KiB u32 ‖
//! t_cost u32 ‖ p_cost u32 ‖ salt (16) ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag 16).
//! Integers are big-endian; the whole header (everything before the ciphertext) is the AEAD's
//! associated data, so a changed parameter, salt or nonce fails like a wrong passphrase.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::random::OpenMlsRand as _;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{MlsError, Result};

const MAGIC: &[u8; 8] = b"PLYVAULT";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 8 + 1 + 1 + 12 + SALT_LEN + NONCE_LEN;
/// Largest memory cost accepted when opening (1 GiB), so a forged header cannot exhaust memory.
const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest time cost accepted when opening.
const MAX_T_COST: u32 = 64;
/// Largest parallelism accepted when opening.
const MAX_P_COST: u32 = 16;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultParams {
    /// Memory in KiB (default 19456 = 19 MiB, OWASP's interactive recommendation).
    pub m_cost_kib: u32,
    /// Iterations (default 2).
    pub t_cost: u32,
    /// Lanes (default 1).
    pub p_cost: u32,
}

impl Default for VaultParams {
    fn default() -> Self {
        Self {
            m_cost_kib: 19456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

fn derive_key(passphrase: &[u8], salt: &[u8], p: VaultParams) -> Result<Zeroizing<[u8; 32]>> {
    if p.m_cost_kib > MAX_M_COST_KIB || p.t_cost > MAX_T_COST || p.p_cost > MAX_P_COST {
        return Err(MlsError::VaultFormat(
            "Argon2 parameters out of range".into(),
        ));
    }
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| MlsError::VaultFormat(format!("Argon2 parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| MlsError::Crypto(format!("Argon2: {e}")))?;
    Ok(key)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Seals `state` under `passphrase` with default parameters.
pub fn seal(state: &[u8], passphrase: &str) -> Result<Vec<u8>> {
    seal_with(state, passphrase, VaultParams::default())
}

/// Seals `state` under `passphrase` with explicit Argon2id parameters.
pub fn seal_with(state: &[u8], passphrase: &str, params: VaultParams) -> Result<Vec<u8>> {
    let rng = RustCrypto::default();
    let salt: [u8; SALT_LEN] = rng
        .random_array()
        .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
    let nonce: [u8; NONCE_LEN] = rng
        .random_array()
        .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
    let key = derive_key(passphrase.as_bytes(), &salt, params)?;
    let mut out = Vec::with_capacity(HEADER_LEN + state.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    out.extend_from_slice(&params.t_cost.to_be_bytes());
    out.extend_from_slice(&params.p_cost.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let cipher =
        Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| MlsError::Crypto(e.to_string()))?;
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: state,
                aad: &out,
            },
        )
        .map_err(|_| MlsError::Crypto("AES-GCM encryption failed".into()))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The Argon2id parameters in a vault's header.
pub fn vault_params(blob: &[u8]) -> Result<VaultParams> {
    if blob.len() < HEADER_LEN + 16 {
        return Err(MlsError::VaultFormat("too short".into()));
    }
    if &blob[..8] != MAGIC {
        return Err(MlsError::VaultFormat("bad magic".into()));
    }
    if blob[8] != VERSION {
        return Err(MlsError::VaultFormat(format!(
            "unknown version {}",
            blob[8]
        )));
    }
    if blob[9] != KDF_ARGON2ID {
        return Err(MlsError::VaultFormat(format!("unknown KDF {}", blob[9])));
    }
    Ok(VaultParams {
        m_cost_kib: u32_at(blob, 10),
        t_cost: u32_at(blob, 14),
        p_cost: u32_at(blob, 18),
    })
}

/// Opens a vault. A wrong passphrase or any changed byte gives [`MlsError::VaultDecrypt`];
/// a malformed header gives [`MlsError::VaultFormat`].
pub fn open(blob: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>> {
    let params = vault_params(blob)?;
    let salt = &blob[22..22 + SALT_LEN];
    let nonce = &blob[22 + SALT_LEN..HEADER_LEN];
    let key = derive_key(passphrase.as_bytes(), salt, params)?;
    let cipher =
        Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| MlsError::Crypto(e.to_string()))?;
    let mut plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &blob[..HEADER_LEN],
            },
        )
        .map_err(|_| MlsError::VaultDecrypt)?;
    let out = Zeroizing::new(plain.clone());
    plain.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: VaultParams = VaultParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn sealed_state_opens_with_the_right_passphrase() {
        let blob = seal_with(b"secret state", "correct horse", FAST).unwrap();
        assert_eq!(
            open(&blob, "correct horse").unwrap().as_slice(),
            b"secret state"
        );
        assert_eq!(vault_params(&blob).unwrap(), FAST);
        assert!(!blob.windows(12).any(|w| w == b"secret state"));
    }

    #[test]
    fn default_parameters_follow_owasp_and_round_trip() {
        let p = VaultParams::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (19456, 2, 1));
        let blob = seal(b"x", "pw").unwrap();
        assert_eq!(vault_params(&blob).unwrap(), p);
        assert_eq!(open(&blob, "pw").unwrap().as_slice(), b"x");
    }

    #[test]
    fn wrong_passphrase_is_a_typed_error() {
        let blob = seal_with(b"secret", "right", FAST).unwrap();
        assert!(matches!(open(&blob, "wrong"), Err(MlsError::VaultDecrypt)));
    }

    #[test]
    fn tampered_vault_is_refused() {
        let blob = seal_with(b"secret state", "pw", FAST).unwrap();
        for at in [HEADER_LEN - 1, 25, HEADER_LEN, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&bad, "pw"), Err(MlsError::VaultDecrypt)),
                "{at}"
            );
        }
        let mut bad = blob.clone();
        bad[14..18].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(open(&bad, "pw"), Err(MlsError::VaultDecrypt)));
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert!(matches!(open(&bad, "pw"), Err(MlsError::VaultFormat(_))));
        assert!(matches!(
            open(&blob[..20], "pw"),
            Err(MlsError::VaultFormat(_))
        ));
        let mut huge = blob.clone();
        huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(open(&huge, "pw"), Err(MlsError::VaultFormat(_))));
    }
}
