//! The openmls provider: RustCrypto plus an in-memory store that can be snapshotted.

use std::collections::HashMap;

use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use zeroize::Zeroize;

/// Crypto, randomness and the (exportable) openmls key/value store of one engine.
#[derive(Default, Debug)]
pub struct EngineProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for EngineProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

impl EngineProvider {
    /// A provider whose store starts with `entries`.
    pub(crate) fn with_entries(entries: HashMap<Vec<u8>, Vec<u8>>) -> Self {
        let storage = MemoryStorage::default();
        if let Ok(mut values) = storage.values.write() {
            *values = entries;
        }
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }

    /// The store, for APIs that take it directly.
    pub(crate) fn storage_ref(&self) -> &MemoryStorage {
        &self.storage
    }

    /// A copy of every stored entry (key, value), sorted by key for a deterministic export.
    pub(crate) fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = match self.storage.values.read() {
            Ok(values) => values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Overwrites and empties the store (used by `lock` and on drop).
    pub(crate) fn wipe(&self) {
        let mut guard = match self.storage.values.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (mut k, mut v) in guard.drain() {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl Drop for EngineProvider {
    fn drop(&mut self) {
        self.wipe();
    }
}
