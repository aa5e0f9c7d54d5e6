//! Delivery to devices: `/sync` long-poll, `/ws` push, welcome acknowledgement.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::SinkExt;
use parley_client_api::endpoint::Empty;
use parley_client_api::groups::DeviceRef;
use parley_client_api::keys::KeyCountResponse;
use parley_client_api::sync::{
    DeleteWelcome, GroupEvents, MessageEvent, Sync, SyncRequest, SyncResponse, WelcomeEvent,
    WsAuth, WsEvent, WS_PATH,
};
use parley_schema::{GroupMessage, TailMessage, TailRead, Welcome};

use crate::error::{ApiResult, Error};
use crate::http::{authenticate, route, ApiPath as Path, ApiQuery, Authed};
use crate::notifier::Changed;
use crate::state::{now_ms, AppState};

/// Longest long-poll wait.
const MAX_TIMEOUT_MS: u64 = 30_000;
/// Events of each kind per sync response.
const SYNC_LIMIT: i64 = 500;
/// Most MLS bytes one sync answer or WebSocket batch carries (one event always goes, however
/// large: a message is at most `max_message_bytes`, a Welcome at most `max_bundle_bytes`).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a WebSocket may take to authenticate.
const WS_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle WebSocket re-checks that its session still exists.
const WS_SESSION_CHECK: Duration = Duration::from_secs(30);

/// The delivery endpoints.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new();
    let r = route::<Sync, _, _>(r, state, sync);
    let r = route::<DeleteWelcome, _, _>(r, state, delete_welcome);
    r.route(WS_PATH, axum::routing::get(websocket))
}

/// Parses a `next_batch` token (`s<position>`).
fn parse_since(since: Option<&str>) -> ApiResult<i64> {
    match since {
        None | Some("") => Ok(0),
        Some(token) => token
            .strip_prefix('s')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::BadJson("since is not a token this server issued".into())),
    }
}

fn batch_token(pos: i64) -> String {
    format!("s{pos}")
}

async fn sync(
    State(state): State<AppState>,
    auth: Authed,
    ApiQuery(req): ApiQuery<SyncRequest>,
) -> ApiResult<Json<SyncResponse>> {
    let since = parse_since(req.since.as_deref())?;
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(0).min(MAX_TIMEOUT_MS));
    // Subscribe before reading so an event committed in between still wakes us.
    let mut wake = state.notifier.subscribe(&auth.user_id, &auth.device_id);
    let mut seen = *wake.borrow_and_update();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (mut messages, mut welcomes, mut next) = state
            .store
            .device_events(&auth.user_id, &auth.device_id, since, SYNC_LIMIT)
            .await?;
        trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            MAX_BATCH_BYTES,
            |m| (m.stream_pos, m.message.len()),
        );
        let now = tokio::time::Instant::now();
        if !messages.is_empty() || !welcomes.is_empty() || now >= deadline {
            let key_packages = key_count(&state, &auth.user_id, &auth.device_id).await?;
            return Ok(Json(build_sync(messages, welcomes, next, key_packages)));
        }
        if tokio::time::timeout_at(deadline, wake.changed())
            .await
            .is_err()
        {
            continue; // deadline: one last read, then answer
        }
        let current = *wake.borrow_and_update();
        let changed = current.since(&seen);
        seen = current;
        if changed.sessions && state.store.session(&auth.session_id).await?.is_none() {
            return Err(Error::UnknownToken);
        }
        if changed.keys && !changed.events {
            // A new key-package count is news for a long-poll too.
            let (messages, welcomes, next) = (Vec::new(), Vec::new(), since);
            let key_packages = key_count(&state, &auth.user_id, &auth.device_id).await?;
            return Ok(Json(build_sync(messages, welcomes, next, key_packages)));
        }
    }
}

/// Cuts a batch of events (messages and Welcomes, each in stream order) at `budget` bytes of
/// MLS data, keeping at least the first event, and moves `next` back to just before the first
/// event left out, so the device gets the rest next time. Returns whether it cut.
fn trim_to_budget<M>(
    messages: &mut Vec<M>,
    welcomes: &mut Vec<Welcome>,
    next: &mut i64,
    budget: usize,
    position_and_size: impl Fn(&M) -> (i64, usize),
) -> bool {
    let (mut i, mut j, mut used) = (0usize, 0usize, 0usize);
    loop {
        let m = messages.get(i).map(&position_and_size);
        let w = welcomes.get(j).map(|w| (w.stream_pos, w.welcome.len()));
        let (pos, size, is_message) = match (m, w) {
            (None, None) => return false,
            (Some((pm, sm)), Some((pw, _))) if pm < pw => (pm, sm, true),
            (Some((pm, sm)), None) => (pm, sm, true),
            (_, Some((pw, sw))) => (pw, sw, false),
        };
        if (i + j) > 0 && used + size > budget {
            messages.truncate(i);
            welcomes.truncate(j);
            *next = pos - 1;
            return true;
        }
        used += size;
        if is_message {
            i += 1;
        } else {
            j += 1;
        }
    }
}

/// The device's key-package counts, as sent in sync and pushed on `/ws`.
pub async fn key_count(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> ApiResult<KeyCountResponse> {
    let (count, last_resort) = state
        .store
        .key_package_count(user_id, device_id, now_ms() as i64)
        .await?;
    Ok(KeyCountResponse { count, last_resort })
}

fn build_sync(
    messages: Vec<GroupMessage>,
    welcomes: Vec<Welcome>,
    next: i64,
    key_packages: KeyCountResponse,
) -> SyncResponse {
    let mut groups: BTreeMap<String, GroupEvents> = BTreeMap::new();
    for m in messages {
        let group_id = m.group_id.clone();
        groups
            .entry(group_id)
            .or_default()
            .messages
            .push(message_event(&m));
    }
    SyncResponse {
        next_batch: batch_token(next),
        welcomes: welcomes.into_iter().map(welcome_event).collect(),
        groups,
        key_packages,
    }
}

/// The wire form of a stored message.
pub fn message_event(m: &GroupMessage) -> MessageEvent {
    let parse = |json: &Option<String>| {
        json.as_deref()
            .and_then(|s| serde_json::from_str::<Vec<DeviceRef>>(s).ok())
    };
    MessageEvent {
        seq: m.seq.max(0) as u64,
        sender: DeviceRef {
            user_id: m.sender_user.clone(),
            device_id: m.sender_device.clone(),
        },
        kind: m.kind.clone(),
        epoch: m.epoch.max(0) as u64,
        message: STANDARD.encode(&m.message),
        ts: m.ts.max(0) as u64,
        adds: parse(&m.adds),
        removes: parse(&m.removes),
    }
}

fn welcome_event(w: Welcome) -> WelcomeEvent {
    WelcomeEvent {
        id: w.id.to_string(),
        group_id: w.group_id,
        sender: DeviceRef {
            user_id: w.sender_user,
            device_id: w.sender_device,
        },
        welcome: STANDARD.encode(&w.welcome),
        ts: w.ts.max(0) as u64,
    }
}

async fn delete_welcome(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Empty>> {
    let id: i64 = id
        .parse()
        .map_err(|_| Error::NotFound("no such welcome".into()))?;
    if !state
        .store
        .delete_welcome(&auth.user_id, &auth.device_id, id)
        .await?
    {
        return Err(Error::NotFound("no such welcome".into()));
    }
    Ok(Json(Empty {}))
}

/// Largest WebSocket message or frame a client may send (an auth frame is well under it).
const MAX_CLIENT_FRAME_BYTES: usize = 8 * 1024;

/// `GET /ws`: authenticates with an `Authorization` header (native clients) or a first
/// `{"access_token", "since"}` frame (browsers), then pushes events as they happen.
async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_auth = if headers.contains_key(axum::http::header::AUTHORIZATION) {
        match authenticate(&headers, &state).await {
            Ok(auth) => Some(auth),
            Err(e) => return axum::response::IntoResponse::into_response(e),
        }
    } else {
        None
    };
    upgrade
        // Small buffers: tungstenite's 128 KiB defaults dominated an idle connection's memory.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        // Clients send only the auth frame (a token and a `since`), and pings: nothing
        // larger is read, before authentication or after.
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            if let Err(e) = run_socket(state, socket, header_auth).await {
                tracing::debug!(error = %e, "websocket closed");
            }
        })
}

async fn run_socket(
    state: AppState,
    mut socket: WebSocket,
    header_auth: Option<Authed>,
) -> anyhow::Result<()> {
    // First frame: the auth frame (or, with header auth, an optional `{"since"}` frame).
    let first = tokio::time::timeout(WS_AUTH_TIMEOUT, socket.recv()).await;
    let frame: Option<WsAuth> = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(text.as_str()).ok(),
        _ => None,
    };
    let (auth, since) = match (header_auth, frame) {
        (Some(auth), frame) => (auth, frame.and_then(|f| f.since)),
        (None, Some(frame)) => {
            let mut headers = HeaderMap::new();
            let value = format!("Bearer {}", frame.access_token);
            headers.insert(axum::http::header::AUTHORIZATION, value.parse()?);
            match authenticate(&headers, &state).await {
                Ok(auth) => (auth, frame.since),
                Err(e) => {
                    close_with_error(&mut socket, &e).await;
                    return Ok(());
                }
            }
        }
        (None, None) => {
            close_with_error(&mut socket, &Error::MissingToken).await;
            return Ok(());
        }
    };
    let mut pos = match parse_since(since.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            close_with_error(&mut socket, &e).await;
            return Ok(());
        }
    };
    let mut wake = state.notifier.subscribe(&auth.user_id, &auth.device_id);
    let mut seen = *wake.borrow_and_update();
    let mut last_keys: Option<KeyCountResponse> = None;
    // The device's groups as of `pos`, once read with events from the database: with them, new
    // messages come from the stream tail instead of a query per wake-up.
    let mut tail_groups: Option<HashSet<String>> = None;
    // What to re-read on this turn: everything at first, then only what changed.
    let mut todo = Changed {
        events: true,
        keys: true,
        sessions: false, // just authenticated
    };
    loop {
        if todo.sessions && state.store.session(&auth.session_id).await?.is_none() {
            close_with_error(&mut socket, &Error::UnknownToken).await;
            return Ok(());
        }
        while todo.events {
            let from_tail = match (state.store.tail(), &tail_groups) {
                (Some(tail), Some(groups)) => tail.read(
                    &auth.user_id,
                    &auth.device_id,
                    groups,
                    pos,
                    SYNC_LIMIT as usize,
                ),
                _ => TailRead::Reread,
            };
            let wrap = |messages: Vec<GroupMessage>| -> Vec<Arc<TailMessage>> {
                messages
                    .into_iter()
                    .map(|m| Arc::new(TailMessage::new(m)))
                    .collect()
            };
            let mut tail_more = false;
            let (mut messages, mut welcomes, mut next) = match from_tail {
                TailRead::Messages { messages, next } => {
                    // Stopped short of the tail's end (its count or byte budget): read on.
                    tail_more = state.store.tail().is_some_and(|t| next < t.last());
                    (messages, Vec::new(), next)
                }
                TailRead::Reread if state.store.tail().is_some() => {
                    let (messages, welcomes, next, groups) = state
                        .store
                        .device_events_and_groups(&auth.user_id, &auth.device_id, pos, SYNC_LIMIT)
                        .await?;
                    tail_groups = Some(groups.into_iter().collect());
                    (wrap(messages), welcomes, next)
                }
                TailRead::Reread => {
                    let (messages, welcomes, next) = state
                        .store
                        .device_events(&auth.user_id, &auth.device_id, pos, SYNC_LIMIT)
                        .await?;
                    (wrap(messages), welcomes, next)
                }
            };
            let trimmed = trim_to_budget(
                &mut messages,
                &mut welcomes,
                &mut next,
                MAX_BATCH_BYTES,
                |m| (m.message.stream_pos, m.message.message.len()),
            );
            // A kind that filled its limit, or a batch cut at its byte budget, may have more
            // behind it.
            todo.events = trimmed
                || tail_more
                || messages.len() as i64 >= SYNC_LIMIT
                || welcomes.len() as i64 >= parley_schema::groups::WELCOMES_PER_READ;
            // Frames are queued and written together: one write for a whole batch.
            for frame in ws_frames(&messages, welcomes, next)? {
                socket.feed(Message::Text(frame.into())).await?;
            }
            socket.flush().await?;
            pos = next;
        }
        if todo.keys {
            let keys = key_count(&state, &auth.user_id, &auth.device_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if last_keys != Some(keys) {
                let frame = WsEvent::KeyPackages {
                    key_packages: keys,
                    next_batch: batch_token(pos),
                };
                socket
                    .send(Message::Text(serde_json::to_string(&frame)?.into()))
                    .await?;
                last_keys = Some(keys);
            }
        }
        todo = tokio::select! {
            changed = wake.changed() => {
                changed?;
                let current = *wake.borrow_and_update();
                let mut changed = current.since(&seen);
                // Events notified with a position this socket has already read past (several
                // sends committed together wake it once each) need no new read.
                changed.events = current.events != seen.events || current.events_pos > pos;
                seen = current;
                changed
            }
            // Idle: re-check the session, and the key count (packages expire with time).
            _ = tokio::time::sleep(WS_SESSION_CHECK) => Changed { events: false, keys: true, sessions: true },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                // Pings are answered by the library; other frames are ignored.
                Some(Ok(_)) => Changed::default(),
            },
        };
    }
}

/// Frames for a batch of events in stream order; each carries the token to resume after it,
/// the last one the token to resume after everything read.
fn ws_frames(
    messages: &[Arc<TailMessage>],
    welcomes: Vec<Welcome>,
    next: i64,
) -> serde_json::Result<Vec<String>> {
    let mut items: Vec<(i64, Frame)> = Vec::with_capacity(messages.len() + welcomes.len());
    items.extend(
        messages
            .iter()
            .map(|m| (m.message.stream_pos, Frame::Message(m))),
    );
    items.extend(
        welcomes
            .into_iter()
            .map(|w| (w.stream_pos, Frame::Welcome(w))),
    );
    items.sort_by_key(|(pos, _)| *pos);
    let last = items.len().saturating_sub(1);
    items
        .into_iter()
        .enumerate()
        .map(|(i, (pos, frame))| {
            let token = batch_token(if i == last { next } else { pos });
            match frame {
                Frame::Message(m) => message_frame(m, &token),
                Frame::Welcome(w) => serde_json::to_string(&WsEvent::Welcome {
                    welcome: welcome_event(w),
                    next_batch: token,
                }),
            }
        })
        .collect()
}

enum Frame<'a> {
    Message(&'a TailMessage),
    Welcome(Welcome),
}

/// The `message` frame of [`WsEvent::Message`], built around the message's wire form, which
/// is serialised once and shared by every socket that sends it.
fn message_frame(m: &TailMessage, next_batch: &str) -> serde_json::Result<String> {
    let wire = match m.wire.get() {
        Some(wire) => wire,
        None => {
            let made = serde_json::to_string(&message_event(&m.message))?;
            m.wire.get_or_init(|| made)
        }
    };
    // `{"seq":…}` → its fields, spliced between the frame's own (`message` is flattened).
    let fields = wire
        .strip_prefix('{')
        .and_then(|w| w.strip_suffix('}'))
        .unwrap_or_default();
    let group_id = serde_json::to_string(&m.message.group_id)?;
    let next_batch = serde_json::to_string(next_batch)?;
    Ok(format!(
        r#"{{"type":"message","group_id":{group_id},{fields},"next_batch":{next_batch}}}"#
    ))
}

async fn close_with_error(socket: &mut WebSocket, error: &Error) {
    let body = serde_json::json!({"type": "error", "errcode": error.errcode().as_str(), "error": error.to_string()});
    let _ = socket.send(Message::Text(body.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 4001,
            reason: error.errcode().as_str().into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_message_frame_is_what_serde_makes_of_the_event() {
        let stored = GroupMessage {
            group_id: "!g\"x:h.example".into(),
            seq: 7,
            stream_pos: 42,
            sender_user: "@a:h.example".into(),
            sender_device: "DEV".into(),
            kind: "commit".into(),
            epoch: 3,
            message: vec![0, 1, 2, 250],
            adds: Some(r#"[{"user_id":"@b:h.example","device_id":"B"}]"#.into()),
            removes: Some("[]".into()),
            ts: 1234,
        };
        let m = TailMessage::new(stored.clone());
        for _ in 0..2 {
            // The second time from the shared wire form.
            let spliced: serde_json::Value =
                serde_json::from_str(&message_frame(&m, "s42").unwrap()).unwrap();
            let expected = serde_json::to_value(WsEvent::Message {
                group_id: stored.group_id.clone(),
                message: message_event(&stored),
                next_batch: "s42".into(),
            })
            .unwrap();
            assert_eq!(spliced, expected);
        }
    }

    fn welcome_at(pos: i64, size: usize) -> Welcome {
        Welcome {
            id: pos,
            stream_pos: pos,
            user_id: "@u:h.example".into(),
            device_id: "D".into(),
            group_id: "!g:h.example".into(),
            sender_user: "@a:h.example".into(),
            sender_device: "A".into(),
            welcome: vec![0; size],
            ts: 0,
        }
    }

    #[test]
    fn a_batch_is_cut_at_its_byte_budget_and_resumes_at_the_first_event_left_out() {
        // Messages at 1, 2, 4 and 5 (100 bytes each), a Welcome at 3 (500 bytes).
        let mut messages: Vec<(i64, usize)> = vec![(1, 100), (2, 100), (4, 100), (5, 100)];
        let mut welcomes = vec![welcome_at(3, 500)];
        let mut next = 5;
        assert!(trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            650,
            |m| *m
        ));
        assert_eq!(messages, [(1, 100), (2, 100)]);
        assert_eq!(welcomes.len(), 0);
        assert_eq!(next, 2);
        // Within budget: nothing changes.
        let mut messages: Vec<(i64, usize)> = vec![(1, 100), (4, 100)];
        let mut welcomes = vec![welcome_at(3, 500)];
        let mut next = 9;
        assert!(!trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            700,
            |m| *m
        ));
        assert_eq!((messages.len(), welcomes.len(), next), (2, 1, 9));
        // One event larger than the budget still goes alone.
        let mut messages: Vec<(i64, usize)> = vec![(2, 100)];
        let mut welcomes = vec![welcome_at(1, 5000)];
        let mut next = 2;
        assert!(trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            10,
            |m| *m
        ));
        assert_eq!((messages.len(), welcomes.len(), next), (0, 1, 1));
    }
}
