//! The media repository (docs/protocol.md#media): encrypted attachments, stored as files and
//! indexed in the database ([`parley_schema::media`]). Uploads stream to a temporary file
//! and are renamed into place once complete and synced; downloads stream from the file, one
//! byte range if asked. Another server's media is fetched over federation on first download
//! (streamed to disk as well), then served from the cache.
//!
//! Bounds: an upload is at most `limits.max_upload_bytes` and within the uploader's quota
//! (checked from the declared length before a byte is read, while the bytes arrive, and
//! again when the row is written); a user runs a bounded number of uploads at once; a body
//! that stops arriving times out, and a whole transfer has a deadline; remote fetches run a
//! bounded number at a time, one per media, and the remote cache has a size, past which the
//! least recently read go.

pub mod error;
pub mod files;
pub mod range;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use parley_client_api::media::UploadMediaResponse;
use parley_schema::media::{MediaRow, UploadRefused};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::clock::now_ms;
use crate::federation::remote_errors::RemoteError;
use crate::state::AppState;
pub use error::MediaError;
use files::{commit_file, ensure_parent, new_media_id, TempFile};
use range::Wanted;

/// Bytes read from a file per chunk of a download.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes gathered before a write reaches the file (each write is a trip to a blocking
/// thread; the network hands over much smaller pieces).
const WRITE_BUFFER: usize = 256 * 1024;

/// A media file being written.
type MediaWriter = tokio::io::BufWriter<tokio::fs::File>;

/// Rows retention reads per pass.
const RETENTION_PAGE: i64 = 500;

/// Body bytes read and dropped after refusing an upload, so that a client that sent a little
/// too much reads the refusal rather than a reset connection.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// Longest time spent draining a refused upload.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Stores an upload of `uploader`'s: the body streamed to disk within the size limit, the
/// quota and the time limits, then recorded. A refusal for size or quota first reads and
/// drops up to [`DRAIN_BYTES`] more of the body (within [`DRAIN_TIME`]): a server that
/// answered and closed with the client still sending would reset the connection under the
/// answer.
pub async fn upload(
    state: &AppState,
    uploader: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<UploadMediaResponse, MediaError> {
    let mut stream = body.into_data_stream();
    let result = store_upload(state, uploader, headers, &mut stream).await;
    if matches!(
        result,
        Err(MediaError::TooLarge { .. } | MediaError::QuotaExceeded { .. })
    ) {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut dropped: u64 = 0;
            while let Some(Ok(chunk)) = stream.next().await {
                dropped += chunk.len() as u64;
                if dropped > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    }
    result
}

async fn store_upload(
    state: &AppState,
    uploader: &str,
    headers: &HeaderMap,
    stream: &mut axum::body::BodyDataStream,
) -> Result<UploadMediaResponse, MediaError> {
    let config = &state.config;
    let _slot = state
        .media
        .upload_slot(uploader, config.media.max_concurrent_uploads_per_user)?;
    let max = config.limits.max_upload_bytes;
    let quota = config.media.user_quota_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(MediaError::TooLarge { limit: max });
    }
    let used = u64::try_from(state.store.media().used_by(uploader).await?).unwrap_or(0);
    let room = quota.saturating_sub(used);
    let over = |written: u64| {
        if written > max {
            MediaError::TooLarge { limit: max }
        } else {
            MediaError::QuotaExceeded { quota, used }
        }
    };
    if let Some(n) = declared.filter(|n| *n > room) {
        return Err(over(n));
    }
    let limit = max.min(room);
    let temp_path = state.media.temp_path();
    ensure_parent(&temp_path).await?;
    let mut file =
        MediaWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::create(&temp_path).await?);
    let temp = TempFile {
        path: Some(temp_path),
    };
    let idle = Duration::from_millis(config.limits.body_read_timeout_ms);
    let deadline = Duration::from_millis(config.media.transfer_timeout_ms);
    let written = tokio::time::timeout(deadline, write_body(stream, &mut file, limit, idle))
        .await
        .map_err(|_| MediaError::Timeout)??;
    if written > limit {
        return Err(over(written));
    }
    file.flush().await?;
    file.get_mut().sync_all().await?;
    drop(file);
    let media_id = new_media_id();
    let server_name = config.server_name.clone();
    let path = state.media.path_of(&server_name, &media_id);
    commit_file(temp, &path).await?;
    let size = i64::try_from(written).unwrap_or(i64::MAX);
    let recorded = state
        .store
        .media()
        .insert_local(
            &server_name,
            &media_id,
            uploader,
            size,
            now_ts(),
            i64::try_from(quota).unwrap_or(i64::MAX),
        )
        .await;
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(UploadRefused::Quota { used })) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(MediaError::QuotaExceeded {
                quota,
                used: u64::try_from(used).unwrap_or(0),
            });
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
    }
    crate::metrics::media_stored("upload", written);
    tracing::info!(%media_id, size = written, "media uploaded");
    Ok(UploadMediaResponse {
        media_id,
        server_name,
        size: written,
    })
}

/// Writes `body` to `file`, each chunk arriving within `idle`; stops as soon as more than
/// `limit` bytes came (the count returned is then past `limit`).
async fn write_body(
    stream: &mut axum::body::BodyDataStream,
    file: &mut MediaWriter,
    limit: u64,
    idle: Duration,
) -> Result<u64, MediaError> {
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(MediaError::Timeout),
            Ok(None) => return Ok(written),
            // A body that fails mid-way (the client went away, or the connection's own
            // limits) is not stored.
            Ok(Some(Err(e))) => return Err(MediaError::Io(format!("reading the body: {e}"))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        written += chunk.len() as u64;
        if written > limit {
            return Ok(written);
        }
        file.write_all(&chunk).await?;
    }
}

/// Answers a download by a client of this server: this server's media from its file,
/// another server's from the cache, fetched first if needed.
pub async fn download(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    headers: &HeaderMap,
) -> Result<Response, MediaError> {
    let store = state.store.media();
    if crate::ids::same_server(server_name, &state.config.server_name) {
        let row = store
            .get(&state.config.server_name, media_id)
            .await?
            .ok_or(MediaError::NotFound)?;
        return serve_row(state, &row, headers).await;
    }
    let server_name = server_name.to_ascii_lowercase();
    if let Some(row) = store.get(&server_name, media_id).await? {
        return serve_row(state, &row, headers).await;
    }
    let lock = state.media.fetch_lock(&server_name, media_id);
    let fetching = lock.lock_owned().await;
    // Someone else's fetch may have finished while this one waited.
    if let Some(row) = store.get(&server_name, media_id).await? {
        return serve_row(state, &row, headers).await;
    }
    if headers.contains_key(header::RANGE) {
        // A part of a file not cached yet: the whole file first, then the part.
        let (head, _) = tokio::sync::oneshot::channel();
        let row = fetch_remote(state.clone(), server_name, media_id.to_owned(), head, None).await?;
        drop(fetching);
        return serve_row(state, &row, headers).await;
    }
    // The whole file: streamed to the client as it arrives, while it is cached. The fetch
    // runs on if the client goes away, so the cache still gets the file.
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel(RELAY_CHUNKS);
    let task_state = state.clone();
    let id = media_id.to_owned();
    tokio::spawn(async move {
        let _fetching = fetching;
        let _ = fetch_remote(task_state, server_name, id, head_tx, Some(body_tx)).await;
    });
    let length = head_rx
        .await
        .map_err(|_| MediaError::Io("the fetch ended before answering".into()))??;
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    byte_headers(response.headers_mut());
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// Chunks of a remote file held between its fetch and a slow client (each at most what one
/// read of the connection gives, typically 16–64 KiB).
const RELAY_CHUNKS: usize = 16;

/// One chunk of a file relayed as it is fetched, or the failure that ends it.
type RelayedChunk = Result<axum::body::Bytes, std::io::Error>;

/// Fetches another server's media into the cache and records it. `head` gets the outcome of
/// the request (the announced length, if any) as soon as the other server answered; `relay`,
/// if given, each chunk as it is written (a client gone away stops only the relay).
async fn fetch_remote(
    state: AppState,
    server_name: String,
    media_id: String,
    head: tokio::sync::oneshot::Sender<Result<Option<u64>, MediaError>>,
    mut relay: Option<tokio::sync::mpsc::Sender<RelayedChunk>>,
) -> Result<MediaRow, MediaError> {
    let limit = state.config.limits.max_upload_bytes;
    let deadline = Duration::from_millis(state.config.media.transfer_timeout_ms);
    let opened = async {
        let _slot = state
            .media
            .fetch_slots
            .acquire()
            .await
            .map_err(|e| MediaError::Io(e.to_string()))?;
        let response = state
            .fed
            .open_media(&server_name, &media_id, limit, deadline)
            .await
            .map_err(|e| fetch_failed(&server_name, e))?;
        Ok::<_, MediaError>((_slot, response))
    }
    .await;
    let (_slot, mut response) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let answer = match &e {
                MediaError::NotFound => MediaError::NotFound,
                _ => MediaError::Remote(RemoteError::Unreachable(format!(
                    "fetching media from {server_name} failed"
                ))),
            };
            let _ = head.send(Err(answer));
            return Err(e);
        }
    };
    let temp_path = state.media.temp_path();
    let prepared = async {
        ensure_parent(&temp_path).await?;
        Ok::<_, MediaError>(MediaWriter::with_capacity(
            WRITE_BUFFER,
            tokio::fs::File::create(&temp_path).await?,
        ))
    }
    .await;
    let mut file = match prepared {
        Ok(file) => file,
        Err(e) => {
            let _ = head.send(Err(MediaError::Io(
                "preparing the cache file failed".into(),
            )));
            return Err(e);
        }
    };
    let temp = TempFile {
        path: Some(temp_path),
    };
    // Room first, so that the cache stays within its bound while the file arrives.
    if let Some(length) = response.content_length() {
        evict_remote_cache(&state, i64::try_from(length).unwrap_or(i64::MAX)).await;
    }
    let _ = head.send(Ok(response.content_length()));
    // The last chunk is held back until the file is cached and recorded: a client that has
    // the whole file finds the cache consistent.
    let mut held: Option<axum::body::Bytes> = None;
    let copied = tokio::time::timeout(deadline, async {
        let mut written: u64 = 0;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(written),
                Err(e) => return Err(format!("reading: {e}")),
            };
            written += chunk.len() as u64;
            if written > limit {
                return Err(format!("media larger than {limit} bytes"));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing: {e}"))?;
            if let (Some(tx), Some(previous)) = (&relay, held.replace(chunk)) {
                if tx.send(Ok(previous)).await.is_err() {
                    relay = None;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("the transfer took too long".into()));
    let written = match copied {
        Ok(n) => n,
        Err(detail) => {
            crate::metrics::media_remote_fetch("failed");
            tracing::warn!(server = %server_name, error = %detail, "remote media fetch failed");
            if let Some(tx) = relay {
                let _ = tx.send(Err(std::io::Error::other(detail))).await;
            }
            return Err(MediaError::Remote(RemoteError::Unreachable(format!(
                "fetching media from {server_name} failed"
            ))));
        }
    };
    file.flush().await?;
    file.get_mut().sync_all().await?;
    drop(file);
    commit_file(temp, &state.media.path_of(&server_name, &media_id)).await?;
    let size = i64::try_from(written).unwrap_or(i64::MAX);
    state
        .store
        .media()
        .insert_remote(&server_name, &media_id, size, now_ts())
        .await?;
    crate::metrics::media_remote_fetch("fetched");
    crate::metrics::media_stored("remote", written);
    evict_remote_cache(&state, 0).await;
    if let (Some(tx), Some(last)) = (relay, held) {
        let _ = tx.send(Ok(last)).await;
    }
    state
        .store
        .media()
        .get(&server_name, &media_id)
        .await?
        .ok_or(MediaError::NotFound)
}

/// A refused or failed request for another server's media, counted and logged.
fn fetch_failed(server_name: &str, e: crate::federation::client::FedError) -> MediaError {
    if let crate::federation::client::FedError::Refused { status: 404, .. } = e {
        crate::metrics::media_remote_fetch("not_found");
        return MediaError::NotFound;
    }
    crate::metrics::media_remote_fetch("failed");
    tracing::warn!(server = %server_name, error = %e, "remote media fetch failed");
    MediaError::Remote(RemoteError::Unreachable(format!(
        "fetching media from {server_name} failed"
    )))
}

/// Answers a federation fetch of this server's media.
pub async fn serve_to_server(
    state: &AppState,
    media_id: &str,
    headers: &HeaderMap,
) -> Result<Response, MediaError> {
    let row = state
        .store
        .media()
        .get(&state.config.server_name, media_id)
        .await?
        .filter(|row| row.uploader.is_some())
        .ok_or(MediaError::NotFound)?;
    serve_row(state, &row, headers).await
}

/// The file of `row` as a response: whole (200) or the one range asked for (206).
async fn serve_row(
    state: &AppState,
    row: &MediaRow,
    headers: &HeaderMap,
) -> Result<Response, MediaError> {
    let path = state.media.path_of(&row.server_name, &row.media_id);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(media_id = %row.media_id, "media file missing");
            return Err(MediaError::NotFound);
        }
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    if let Err(e) = state.store.media().touch(row, now_ts()).await {
        tracing::warn!(error = %e, "noting a media read failed");
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range::parse(range, size) {
        Wanted::All => (StatusCode::OK, 0, size),
        Wanted::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Wanted::Unsatisfiable => return Err(MediaError::RangeNotSatisfiable { size }),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let reader = file.take(len);
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; READ_CHUNK];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
                    reader,
                ))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    crate::metrics::media_served(len);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    byte_headers(h);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// The headers of every media answer: bytes a browser never renders or sniffs (they are
/// ciphertext, never a page), ranges accepted, cacheable for good (an id names one content).
fn byte_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
}

/// Deletes the least recently read remote media while the cache, plus `incoming` bytes
/// about to arrive, is over `media.remote_cache_bytes`.
async fn evict_remote_cache(state: &AppState, incoming: i64) {
    let cap = i64::try_from(state.config.media.remote_cache_bytes)
        .unwrap_or(i64::MAX)
        .saturating_sub(incoming);
    let media = state.store.media();
    let mut total = match media.remote_cache_bytes().await {
        Ok(total) => total,
        Err(e) => {
            tracing::warn!(error = %e, "reading the remote media cache size failed");
            return;
        }
    };
    while total > cap {
        let oldest = match media.least_recently_read_remote(RETENTION_PAGE).await {
            Ok(rows) if !rows.is_empty() => rows,
            _ => return,
        };
        for row in oldest {
            if total <= cap {
                return;
            }
            if delete(state, &row).await {
                total -= row.size;
            }
        }
    }
}

/// Forgets a file, then deletes it; whether it was still recorded.
async fn delete(state: &AppState, row: &MediaRow) -> bool {
    match state
        .store
        .media()
        .delete(&row.server_name, &row.media_id)
        .await
    {
        Ok(true) => {
            let path = state.media.path_of(&row.server_name, &row.media_id);
            if let Err(e) = tokio::fs::remove_file(&path).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(media_id = %row.media_id, error = %e, "deleting a media file failed");
                }
            }
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "forgetting media failed");
            false
        }
    }
}

/// Records that a message `uploader` sent names `media_ids` (theirs, on this server), which
/// keeps them past `retention.unreferenced_media_ms`. Ids that are not theirs change nothing.
pub async fn reference(
    state: &AppState,
    uploader: &str,
    media_ids: &[String],
) -> Result<(), MediaError> {
    if media_ids.is_empty() {
        return Ok(());
    }
    state
        .store
        .media()
        .reference(&state.config.server_name, uploader, media_ids, now_ts())
        .await?;
    Ok(())
}

/// One retention pass over the media store: uploads no message named after
/// `retention.unreferenced_media_ms`, every upload after `retention.media_ms` (if set),
/// cached remote media unread for `retention.remote_media_ms`, and temporary files of
/// transfers that can no longer be running. Returns the files deleted.
pub async fn run_retention(state: &AppState) -> usize {
    let now = now_ts();
    let r = &state.config.retention;
    let ago = |ms: u64| now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
    let mut deleted = 0;
    loop {
        let expired = match state
            .store
            .media()
            .expired(
                ago(r.unreferenced_media_ms),
                r.media_ms.map(ago),
                ago(r.remote_media_ms),
                RETENTION_PAGE,
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "media retention failed");
                break;
            }
        };
        let page = expired.len();
        for row in &expired {
            if delete(state, row).await {
                deleted += 1;
            }
        }
        if page < RETENTION_PAGE as usize {
            break;
        }
    }
    remove_stale_temp_files(state).await;
    deleted
}

/// Deletes temporary files older than the longest transfer (left by a crash).
async fn remove_stale_temp_files(state: &AppState) {
    let dir = state.media.dir.join("tmp");
    let max_age =
        Duration::from_millis(state.config.media.transfer_timeout_ms) + Duration::from_secs(60);
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if stale {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

fn now_ts() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}
