//! This server's federation signing keys over time: the current key (generated once in the
//! data dir) and retired keys, published under `old_verify_keys` with their `expired_ts`.

use std::collections::BTreeMap;
use std::path::Path;

use parley_federation::keys::{KeyId, OldVerifyKey, ServerSigningKey, KEY_FILE_NAME};

use crate::data_dir::OLD_KEYS_FILE;

/// Retired keys; none when the file does not exist.
pub fn load_old_keys(data_dir: &Path) -> anyhow::Result<BTreeMap<KeyId, OldVerifyKey>> {
    let path = data_dir.join(OLD_KEYS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Retires the current key (its public half is kept with `expired_ts = now_ms`) and generates
/// a new one. Returns the retired and the new key ids. Run while the server is stopped.
pub fn rotate(data_dir: &Path, now_ms: u64) -> anyhow::Result<(KeyId, KeyId)> {
    let (current, _) = ServerSigningKey::load_or_generate(data_dir)?;
    let mut old = load_old_keys(data_dir)?;
    old.insert(
        current.key_id().clone(),
        OldVerifyKey {
            key: current.verifying_key(),
            expired_ts: now_ms,
        },
    );
    // Write the retired list first: if we stop half-way, the old key is still published.
    let list = serde_json::to_vec_pretty(&old)?;
    let tmp = data_dir.join(format!(".{OLD_KEYS_FILE}.tmp"));
    std::fs::write(&tmp, list)?;
    std::fs::rename(&tmp, data_dir.join(OLD_KEYS_FILE))?;
    std::fs::remove_file(data_dir.join(KEY_FILE_NAME))?;
    crate::data_dir::sync_dir(data_dir)?;
    let (new, created) = ServerSigningKey::load_or_generate(data_dir)?;
    anyhow::ensure!(created, "a new signing key appeared while rotating");
    Ok((current.key_id().clone(), new.key_id().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_public_key_and_makes_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = ServerSigningKey::load_or_generate(dir.path()).unwrap();
        let (retired, new) = rotate(dir.path(), 1234).unwrap();
        assert_eq!(&retired, first.key_id());
        assert_ne!(retired, new);
        let old = load_old_keys(dir.path()).unwrap();
        assert_eq!(old[&retired].expired_ts, 1234);
        assert_eq!(old[&retired].key, first.verifying_key());
        let (current, created) = ServerSigningKey::load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(current.key_id(), &new);
        // A second rotation keeps both retired keys.
        rotate(dir.path(), 5678).unwrap();
        assert_eq!(load_old_keys(dir.path()).unwrap().len(), 2);
    }
}
