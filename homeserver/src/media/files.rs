//! The media store's files: where each lives (named by a hash of its ids), temporary files
//! for transfers in progress, and the bounds on what runs at once (uploads per user, remote
//! fetches, one fetch per media).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::MediaError;
use crate::config::Config;

/// Held by the one fetch of a remote media running.
type FetchLock = Arc<tokio::sync::Mutex<()>>;

/// The files of the media store and what runs on them now.
pub struct MediaRepo {
    pub(super) dir: PathBuf,
    /// Uploads running per user.
    uploads: Mutex<HashMap<String, usize>>,
    /// Remote fetches running on this process.
    pub(super) fetch_slots: tokio::sync::Semaphore,
    /// One fetch per remote media at a time: later downloads wait for it, then read the cache.
    fetching: Mutex<HashMap<(String, String), FetchLock>>,
}

impl MediaRepo {
    /// The repository of `config` (`media.store_path`, else `media` in the data dir).
    pub fn new(config: &Config) -> MediaRepo {
        MediaRepo {
            dir: config
                .media
                .store_path
                .clone()
                .unwrap_or_else(|| config.data_dir.join("media")),
            uploads: Mutex::default(),
            fetch_slots: tokio::sync::Semaphore::new(
                config.media.max_concurrent_remote_fetches.max(1),
            ),
            fetching: Mutex::default(),
        }
    }

    /// Where the file of `(server_name, media_id)` lives: named by a hash, so that no id
    /// (another server's included) can say anything about the path.
    pub(super) fn path_of(&self, server_name: &str, media_id: &str) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(server_name.as_bytes());
        hash.update([0]);
        hash.update(media_id.as_bytes());
        let name = hex(&hash.finalize());
        self.dir.join(&name[..2]).join(name)
    }

    /// A fresh temporary file name.
    pub(super) fn temp_path(&self) -> PathBuf {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        self.dir.join("tmp").join(hex(&bytes))
    }

    /// Takes one of `user`'s upload slots, given back when the guard drops.
    pub(super) fn upload_slot(
        self: &Arc<Self>,
        user: &str,
        max: usize,
    ) -> Result<UploadSlot, MediaError> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let running = uploads.entry(user.to_owned()).or_default();
        if *running >= max {
            return Err(MediaError::TooManyUploads);
        }
        *running += 1;
        Ok(UploadSlot {
            repo: self.clone(),
            user: user.to_owned(),
        })
    }

    /// The lock that one fetch of a remote media holds.
    pub(super) fn fetch_lock(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        // Locks nobody holds or waits for are dropped, so the map stays as small as the
        // fetches running.
        fetching.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetching
            .entry((server_name.to_owned(), media_id.to_owned()))
            .or_default()
            .clone()
    }
}

/// A running upload of a user; counted until dropped.
pub(super) struct UploadSlot {
    repo: Arc<MediaRepo>,
    user: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut uploads = self.repo.uploads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = uploads.get_mut(&self.user) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                uploads.remove(&self.user);
            }
        }
    }
}

/// A temporary file, deleted when dropped unless it was moved into place.
pub(super) struct TempFile {
    pub(super) path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new media id: 128 random bits, base64url without padding (22 characters).
pub(super) fn new_media_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates `path`'s parent directory if needed.
pub(super) async fn ensure_parent(path: &Path) -> Result<(), MediaError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    Ok(())
}

/// Moves a complete, synced temporary file into place, and syncs the directory so that the
/// rename survives a crash.
pub(super) async fn commit_file(mut temp: TempFile, to: &Path) -> Result<(), MediaError> {
    ensure_parent(to).await?;
    let from = temp
        .path
        .take()
        .ok_or_else(|| MediaError::Io("temporary file already moved".into()))?;
    if let Err(e) = tokio::fs::rename(&from, to).await {
        let _ = tokio::fs::remove_file(&from).await;
        return Err(e.into());
    }
    if let Some(parent) = to.parent() {
        tokio::fs::File::open(parent).await?.sync_all().await?;
    }
    Ok(())
}
