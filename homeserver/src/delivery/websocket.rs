//! `/ws`: a device's events pushed as they happen. The socket authenticates (header or first
//! frame), then sends everything after its `since` token, reading new messages from the
//! stream tail when the backend keeps one, and re-checks its session while idle.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::http::HeaderMap;
use futures_util::SinkExt;
use parley_client_api::keys::KeyCountResponse;
use parley_client_api::sync::{WsAuth, WsEvent, WsReceived};
use parley_client_api::ErrorBody;
use parley_schema::{GroupMessage, TailRead, Welcome};

use super::error::DeliveryError;
use super::events::welcome_event;
use super::notifier::Changed;
use super::wire_forms::WireForms;
use super::{batch_token, parse_since, trim_to_budget, MAX_BATCH_BYTES, SYNC_LIMIT};
use crate::accounts::{authenticate, Authed};
use crate::keys::key_count;
use crate::state::AppState;

/// How long a WebSocket may take to authenticate.
const WS_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle WebSocket re-checks that its session still exists.
const WS_SESSION_CHECK: Duration = Duration::from_secs(30);

/// Largest WebSocket message or frame a client may send (an auth frame is well under it).
pub const MAX_CLIENT_FRAME_BYTES: usize = 8 * 1024;

/// How a refusal reads in an `error` frame: the API layer's mapping of [`DeliveryError`] to
/// `errcode` and `error`, handed in by the `/ws` handler.
pub type Describe = fn(&DeliveryError) -> ErrorBody;

/// Serves one authenticated (or authenticating) socket until it closes; a refusal is sent as
/// `describe` spells it.
pub async fn run_socket(
    state: AppState,
    mut socket: WebSocket,
    header_auth: Option<Authed>,
    describe: Describe,
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
                    close_with_error(&mut socket, describe(&DeliveryError::Auth(e))).await;
                    return Ok(());
                }
            }
        }
        (None, None) => {
            close_with_error(&mut socket, describe(&DeliveryError::NoAuthFrame)).await;
            return Ok(());
        }
    };
    let mut pos = match parse_since(since.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            close_with_error(&mut socket, describe(&e)).await;
            return Ok(());
        }
    };
    state.received.note(&auth.user_id, &auth.device_id, pos);
    let _open = state.drain.socket_opened();
    let mut wake = state.notifier.subscribe(&auth.user_id, &auth.device_id);
    let mut ephemeral = state.ephemerals.subscribe(&auth.user_id, &auth.device_id);
    let mut seen = *wake.borrow_and_update();
    let mut last_keys: Option<KeyCountResponse> = None;
    // Receipts kept for this device while it was away: pushed once it has caught up.
    let mut kept_pushed = false;
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
        if todo.sessions
            && state
                .store
                .accounts()
                .session(&auth.session_id)
                .await?
                .is_none()
        {
            close_with_error(&mut socket, describe(&DeliveryError::SessionEnded)).await;
            return Ok(());
        }
        while todo.events {
            let from_tail = loop {
                let read = match (state.store.tail(), &tail_groups) {
                    (Some(tail), Some(groups)) => tail.read(
                        &auth.user_id,
                        &auth.device_id,
                        groups,
                        pos,
                        SYNC_LIMIT as usize,
                    ),
                    _ => TailRead::Reread,
                };
                // Other processes' positions: one read fills them for every socket here.
                match read {
                    TailRead::Behind => state.store.stream().fill_tail().await?,
                    read => break read,
                }
            };
            let wrap = |messages: Vec<GroupMessage>| -> Vec<Arc<GroupMessage>> {
                messages.into_iter().map(Arc::new).collect()
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
                        .stream()
                        .device_events_and_groups(&auth.user_id, &auth.device_id, pos, SYNC_LIMIT)
                        .await?;
                    tail_groups = Some(groups.into_iter().collect());
                    (wrap(messages), welcomes, next)
                }
                TailRead::Reread | TailRead::Behind => {
                    let (messages, welcomes, next) = state
                        .store
                        .stream()
                        .device_events(&auth.user_id, &auth.device_id, pos, SYNC_LIMIT)
                        .await?;
                    (wrap(messages), welcomes, next)
                }
            };
            // An expired message is never delivered: the position moves past it.
            super::sync::skip_expired(&mut messages);
            let trimmed = trim_to_budget(
                &mut messages,
                &mut welcomes,
                &mut next,
                MAX_BATCH_BYTES,
                |m| (m.stream_pos, m.message.len()),
            );
            // A kind that filled its limit, or a batch cut at its byte budget, may have more
            // behind it.
            todo.events = trimmed
                || tail_more
                || messages.len() as i64 >= SYNC_LIMIT
                || welcomes.len() as i64 >= parley_schema::stream::WELCOMES_PER_READ;
            // Frames are queued and written together: one write for a whole batch.
            crate::metrics::delivered("websocket", messages.len());
            for frame in ws_frames(&state.wire_forms, &messages, welcomes, next)? {
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
        if !kept_pushed && !todo.events {
            kept_pushed = true;
            for event in state.ephemerals.take_kept(&auth.user_id, &auth.device_id) {
                let frame = WsEvent::Ephemeral {
                    event: (*event).clone(),
                };
                socket
                    .send(Message::Text(serde_json::to_string(&frame)?.into()))
                    .await?;
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
            // An ephemeral message: pushed as is, nothing to re-read.
            Some(event) = ephemeral.messages.recv() => {
                let frame = WsEvent::Ephemeral { event: (*event).clone() };
                socket
                    .send(Message::Text(serde_json::to_string(&frame)?.into()))
                    .await?;
                Changed::default()
            }
            // The server drains: the client reconnects (to another process, or after the
            // restart) from the last token it was sent.
            _ = state.drain.started() => {
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: crate::drain::RESTART_CLOSE_CODE,
                        reason: "server restarting; reconnect".into(),
                    })))
                    .await;
                return Ok(());
            }
            // Idle: re-check the session, and the key count (packages expire with time).
            _ = tokio::time::sleep(WS_SESSION_CHECK) => Changed { events: false, keys: true, sessions: true },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                // The client processed its events up to a token this socket sent (a later
                // one is not believed).
                Some(Ok(Message::Text(text))) => {
                    if let Some(received) = serde_json::from_str::<WsReceived>(text.as_str())
                        .ok()
                        .and_then(|f| parse_since(Some(&f.received)).ok())
                    {
                        state.received.note(&auth.user_id, &auth.device_id, received.min(pos));
                    }
                    Changed::default()
                }
                // Pings are answered by the library; other frames are ignored.
                Some(Ok(_)) => Changed::default(),
            },
        };
    }
}

/// Frames for a batch of events in stream order; each carries the token to resume after it,
/// the last one the token to resume after everything read.
fn ws_frames(
    forms: &WireForms,
    messages: &[Arc<GroupMessage>],
    welcomes: Vec<Welcome>,
    next: i64,
) -> serde_json::Result<Vec<String>> {
    let mut items: Vec<(i64, Frame)> = Vec::with_capacity(messages.len() + welcomes.len());
    items.extend(messages.iter().map(|m| (m.stream_pos, Frame::Message(m))));
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
                Frame::Message(m) => message_frame(m, &forms.of(m)?, &token),
                Frame::Welcome(w) => serde_json::to_string(&WsEvent::Welcome {
                    welcome: welcome_event(w),
                    next_batch: token,
                }),
            }
        })
        .collect()
}

/// One event of a batch, in stream order.
enum Frame<'a> {
    Message(&'a GroupMessage),
    Welcome(Welcome),
}

/// The `message` frame of [`WsEvent::Message`], built around the message's wire form
/// ([`WireForms`]: serialised once and shared by every socket that sends it).
fn message_frame(m: &GroupMessage, wire: &str, next_batch: &str) -> serde_json::Result<String> {
    // `{"seq":…}` → its fields, spliced between the frame's own (`message` is flattened).
    let fields = wire
        .strip_prefix('{')
        .and_then(|w| w.strip_suffix('}'))
        .unwrap_or_default();
    let group_id = serde_json::to_string(&m.group_id)?;
    let next_batch = serde_json::to_string(next_batch)?;
    Ok(format!(
        r#"{{"type":"message","group_id":{group_id},{fields},"next_batch":{next_batch}}}"#
    ))
}

/// Sends the error as a frame, then closes with code 4001 and the errcode as reason.
async fn close_with_error(socket: &mut WebSocket, error: ErrorBody) {
    let body =
        serde_json::json!({"type": "error", "errcode": &error.errcode, "error": &error.error});
    let _ = socket.send(Message::Text(body.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 4001,
            reason: error.errcode.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_message_frame_is_what_serde_makes_of_the_event() {
        let stored = GroupMessage {
            expires_ts: None,
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
        let forms = WireForms::default();
        for _ in 0..2 {
            // The second time from the shared wire form.
            let wire = forms.of(&stored).unwrap();
            let spliced: serde_json::Value =
                serde_json::from_str(&message_frame(&stored, &wire, "s42").unwrap()).unwrap();
            let expected = serde_json::to_value(WsEvent::Message {
                group_id: stored.group_id.clone(),
                message: super::super::events::message_event(&stored),
                next_batch: "s42".into(),
            })
            .unwrap();
            assert_eq!(spliced, expected);
        }
    }
}
