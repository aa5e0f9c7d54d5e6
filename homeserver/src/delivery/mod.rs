//! Delivery to devices: each device reads its events (messages of its groups, its Welcomes)
//! in stream order from a `since` token, by long-poll ([`sync`]) or pushed on a WebSocket
//! ([`websocket`]); [`notifier`] wakes them, [`events`] gives the wire forms and
//! [`wire_forms`] shares the serialised ones between sockets; [`received`] remembers how far
//! each device has said it received, for message retention; [`ephemeral`] hands typing
//! notices and receipts to the devices connected at the time, storing nothing.

pub mod ephemeral;
pub mod error;
pub mod events;
pub mod notifier;
pub mod received;
pub mod sync;
pub mod websocket;
pub mod wire_forms;

use parley_schema::Welcome;

use error::DeliveryError;

/// Events of each kind per sync response.
pub(crate) const SYNC_LIMIT: i64 = 500;

/// Most MLS bytes one sync answer or WebSocket batch carries (one event always goes, however
/// large: a message is at most `max_message_bytes`, a Welcome at most `max_bundle_bytes`).
pub(crate) const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Parses a `next_batch` token (`s<position>`).
pub(crate) fn parse_since(since: Option<&str>) -> Result<i64, DeliveryError> {
    match since {
        None | Some("") => Ok(0),
        Some(token) => token
            .strip_prefix('s')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or(DeliveryError::BadSince),
    }
}

/// The `next_batch` token of stream position `pos`.
pub(crate) fn batch_token(pos: i64) -> String {
    format!("s{pos}")
}

/// Cuts a batch of events (messages and Welcomes, each in stream order) at `budget` bytes of
/// MLS data, keeping at least the first event, and moves `next` back to just before the first
/// event left out, so the device gets the rest next time. Returns whether it cut.
pub(crate) fn trim_to_budget<M>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
