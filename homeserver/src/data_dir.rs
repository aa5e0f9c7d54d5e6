//! The data directory: created private (0700) and kept that way, with the database and key
//! files in it readable by this user only (0600). They hold password hashes and secret keys.

use std::path::Path;

/// The JWT signing secret.
pub const JWT_KEY_FILE: &str = "jwt_signing.key";

/// Retired federation verify keys, still published.
pub const OLD_KEYS_FILE: &str = "federation_old_keys.json";

/// Files of the data dir that hold secrets or the database.
const PRIVATE_FILES: [&str; 7] = [
    "parley.db",
    "parley.db-wal",
    "parley.db-shm",
    "parley.db-journal",
    JWT_KEY_FILE,
    OLD_KEYS_FILE,
    parley_federation::keys::KEY_FILE_NAME,
];

/// Makes everything this process creates from now on private to its user (umask 077), creates
/// `dir` if needed, and narrows the modes of an existing `dir` (0700) and its known files
/// (0600), logging what it changed.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        restrict(dir, 0o700)?;
        for name in PRIVATE_FILES {
            let path = dir.join(name);
            if path.exists() {
                restrict(&path, 0o600)?;
            }
        }
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode` if they allow more.
#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("reading the mode of {}: {e}", path.display()))?;
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow::anyhow!("restricting {}: {e}", path.display()))?;
        tracing::warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "narrowed the permissions of a data file");
    }
    Ok(())
}

/// Flushes `dir`'s entries to disk, so a file just created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_data_dir_and_its_database_are_narrowed_to_their_owner() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("parley.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // Files created afterwards are private too (umask).
        let later = dir.join("parley.db-wal");
        std::fs::write(&later, b"y").unwrap();
        assert_eq!(mode(&later), 0o600);
        let sub = root.path().join("fresh");
        prepare(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }
}
