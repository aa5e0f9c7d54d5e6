//! Key packages: ordinary ones and the RFC 9420 last-resort package. The engine keeps a
//! [`KeyPackageRecord`] of each (in [`crate::engine`], beside the engine's other records).

use openmls::prelude::{
    tls_codec::{Deserialize as _, Serialize as _},
    KeyPackage, KeyPackageBundle, KeyPackageIn, KeyPackageRef, Lifetime, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, ProtocolVersion,
};
use openmls_traits::{storage::StorageProvider as _, OpenMlsProvider as _};

use crate::ciphersuite::{leaf_capabilities, CIPHERSUITE};
use crate::engine::{Engine, KeyPackageRecord};
use crate::error::{mls, MlsError, Result};

/// Parses a key package given as a TLS-serialised `MLSMessage` (or a bare `KeyPackage`) and
/// verifies its signature, ciphersuite and lifetime.
pub(crate) fn parse_key_package(
    bytes: &[u8],
    provider: &crate::provider::EngineProvider,
) -> std::result::Result<KeyPackage, String> {
    let kp_in = match MlsMessageIn::tls_deserialize_exact(bytes) {
        Ok(msg) => match msg.extract() {
            MlsMessageBodyIn::KeyPackage(kp) => kp,
            _ => return Err("MLSMessage is not a key package".into()),
        },
        Err(_) => KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| e.to_string())?,
    };
    let kp = kp_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| format!("{e:?}"))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err("unsupported ciphersuite".into());
    }
    Ok(kp)
}

impl Engine {
    /// Generates `count` ordinary key packages (lifetime from the config), each serialised as
    /// an `MLSMessage`, ready for `POST /keys/upload`.
    pub fn generate_key_packages(&mut self, count: usize) -> Result<Vec<Vec<u8>>> {
        (0..count).map(|_| self.generate_one(false)).collect()
    }

    /// Generates a last-resort key package (extension 0x000A); it is never consumed on join.
    pub fn generate_last_resort_key_package(&mut self) -> Result<Vec<u8>> {
        self.generate_one(true)
    }

    fn generate_one(&mut self, last_resort: bool) -> Result<Vec<u8>> {
        let mut builder = KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(self.config.key_package_lifetime_secs))
            .leaf_node_capabilities(leaf_capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.identity.signer,
                self.identity.credential_with_key(),
            )
            .map_err(mls)?;
        let hash_ref = bundle
            .key_package()
            .hash_ref(self.provider.crypto())
            .map_err(mls)?;
        self.key_packages.push(KeyPackageRecord {
            hash_ref,
            last_resort,
        });
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .map_err(mls)
    }

    fn key_package_present(&self, record: &KeyPackageRecord) -> bool {
        matches!(
            self.provider
                .storage()
                .key_package::<KeyPackageRef, KeyPackageBundle>(&record.hash_ref),
            Ok(Some(_))
        )
    }

    /// How many ordinary (non-last-resort) key packages still have their private keys here.
    pub fn unused_key_package_count(&self) -> usize {
        self.key_packages
            .iter()
            .filter(|r| !r.last_resort && self.key_package_present(r))
            .count()
    }

    /// Whether a last-resort key package with private keys is held.
    pub fn has_last_resort_key_package(&self) -> bool {
        self.key_packages
            .iter()
            .any(|r| r.last_resort && self.key_package_present(r))
    }

    /// Forgets records of packages whose private keys openmls already deleted (consumed by a
    /// join) and returns how many were dropped.
    pub fn prune_consumed_key_packages(&mut self) -> usize {
        let before = self.key_packages.len();
        let keep: Vec<KeyPackageRecord> = self
            .key_packages
            .iter()
            .filter(|r| self.key_package_present(r))
            .cloned()
            .collect();
        self.key_packages = keep;
        before - self.key_packages.len()
    }

    /// Deletes the private keys of the given key packages (each an `MLSMessage` or bare
    /// `KeyPackage` as generated here), e.g. once the app knows they were consumed.
    pub fn delete_key_packages(&mut self, key_packages: &[Vec<u8>]) -> Result<usize> {
        let mut deleted = 0;
        for (index, bytes) in key_packages.iter().enumerate() {
            let kp = parse_key_package(bytes, &self.provider)
                .map_err(|reason| MlsError::InvalidKeyPackage { index, reason })?;
            let r = kp.hash_ref(self.provider.crypto()).map_err(mls)?;
            let Some(pos) = self.key_packages.iter().position(|rec| rec.hash_ref == r) else {
                continue;
            };
            self.provider
                .storage()
                .delete_key_package(&r)
                .map_err(mls)?;
            self.key_packages.remove(pos);
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use openmls::prelude::{Extension, ExtensionType};

    fn engine() -> Engine {
        Engine::new("@alice:example.org", "ALICEDEV01", EngineConfig::default()).unwrap()
    }

    #[test]
    fn generated_packages_are_counted_and_valid() {
        let mut e = engine();
        let kps = e.generate_key_packages(3).unwrap();
        assert_eq!(kps.len(), 3);
        assert_eq!(e.unused_key_package_count(), 3);
        assert!(!e.has_last_resort_key_package());
        let kp = parse_key_package(&kps[0], &e.provider).unwrap();
        assert!(!kp.last_resort());
        let caps = kp.leaf_node().capabilities();
        assert_eq!(
            caps.extensions(),
            &[
                ExtensionType::LastResort,
                ExtensionType::Unknown(crate::ROLES_EXTENSION_TYPE),
                ExtensionType::Unknown(crate::JOIN_RULES_EXTENSION_TYPE),
                ExtensionType::Unknown(crate::DISAPPEARING_EXTENSION_TYPE)
            ]
        );
        assert!(caps.proposals().is_empty());
        let lt = kp.life_time();
        assert_eq!(
            lt.not_after() - lt.not_before(),
            30 * 24 * 3600 + 3600,
            "openmls adds one hour of leeway before not_before"
        );
    }

    #[test]
    fn last_resort_package_carries_extension_and_is_not_counted() {
        let mut e = engine();
        let bytes = e.generate_last_resort_key_package().unwrap();
        let kp = parse_key_package(&bytes, &e.provider).unwrap();
        assert!(kp.last_resort());
        assert!(kp
            .extensions()
            .iter()
            .any(|x| matches!(x, Extension::LastResort(_))));
        assert!(kp
            .leaf_node()
            .capabilities()
            .extensions()
            .contains(&ExtensionType::LastResort));
        assert_eq!(e.unused_key_package_count(), 0);
        assert!(e.has_last_resort_key_package());
    }

    #[test]
    fn deleting_a_package_removes_its_private_keys() {
        let mut e = engine();
        let kps = e.generate_key_packages(2).unwrap();
        assert_eq!(e.delete_key_packages(&kps[..1]).unwrap(), 1);
        assert_eq!(e.unused_key_package_count(), 1);
        assert_eq!(e.delete_key_packages(&kps[..1]).unwrap(), 0);
    }

    #[test]
    fn garbage_key_package_is_refused_with_index() {
        let mut e = engine();
        let err = e.delete_key_packages(&[vec![1, 2, 3]]).unwrap_err();
        assert!(matches!(err, MlsError::InvalidKeyPackage { index: 0, .. }));
    }
}
