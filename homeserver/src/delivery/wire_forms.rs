//! The client wire form of recent group messages, made once and shared: every member's socket
//! sends the same bytes for a message, so the first socket that sends it serialises it and the
//! others reuse that, by stream position (positions are never reused).
//!
//! Forms sit in a ring indexed by position (no hashing on the hot path), and a form is made
//! under the lock, so sockets woken together for the same message serialise it once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use parley_schema::GroupMessage;

use crate::delivery::events::message_event;

/// Wire forms kept (the stream tail keeps as many positions).
const CAPACITY: usize = 16_384;
/// Bytes of wire forms kept: past it the oldest go, whatever their count.
const BYTE_BUDGET: usize = 48 * 1024 * 1024;

/// Recent messages' client wire forms (`{"seq":…}`), by stream position.
#[derive(Debug)]
pub struct WireForms {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The form of position `p` lives in slot `p mod CAPACITY`, with its position.
    slots: Vec<Option<Slot>>,
    /// Positions in the order their forms were made: the oldest goes first.
    order: VecDeque<i64>,
    bytes: usize,
}

impl Default for WireForms {
    fn default() -> Self {
        WireForms {
            inner: Mutex::new(Inner {
                slots: vec![None; CAPACITY],
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }
}

/// One kept form: its message's position and expiry (disappearing messages), and the form.
#[derive(Debug, Clone)]
struct Slot {
    pos: i64,
    expires_ts: Option<i64>,
    form: Arc<str>,
}

/// The slot of position `pos`.
fn slot(pos: i64) -> usize {
    pos.rem_euclid(CAPACITY as i64) as usize
}

impl Inner {
    /// Forgets the form in slot `i` if it is position `pos`'s.
    fn evict(&mut self, i: usize, pos: i64) {
        if matches!(&self.slots[i], Some(s) if s.pos == pos) {
            if let Some(gone) = self.slots[i].take() {
                self.bytes -= gone.form.len();
            }
        }
    }
}

impl WireForms {
    /// The wire form of `m`: the one made earlier, or made now and kept.
    pub fn of(&self, m: &GroupMessage) -> serde_json::Result<Arc<str>> {
        let pos = m.stream_pos;
        let i = slot(pos);
        let mut inner = self.lock();
        if let Some(kept) = &inner.slots[i] {
            if kept.pos == pos {
                return Ok(kept.form.clone());
            }
        }
        // Made under the lock: a socket woken with others for this message waits for this
        // form instead of making its own.
        let made: Arc<str> = serde_json::to_string(&message_event(m))?.into();
        if let Some(replaced) = inner.slots[i].take() {
            inner.bytes -= replaced.form.len();
        }
        inner.slots[i] = Some(Slot {
            pos,
            expires_ts: m.expires_ts,
            form: made.clone(),
        });
        inner.bytes += made.len();
        inner.order.push_back(pos);
        while inner.order.len() > CAPACITY || inner.bytes > BYTE_BUDGET {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.evict(slot(oldest), oldest);
        }
        Ok(made)
    }

    /// Forgets the forms of messages that expired by `now_ms` (they hold the ciphertext, which
    /// the server keeps no copy of once a message disappears). Returns how many went.
    pub fn forget_expired(&self, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let mut forgotten = 0;
        let mut freed = 0;
        for slot in inner.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|s| s.expires_ts.is_some_and(|t| t <= now_ms))
            {
                if let Some(gone) = slot.take() {
                    freed += gone.form.len();
                    forgotten += 1;
                }
            }
        }
        // Their positions stay in `order` and are skipped when they come up (evict checks).
        inner.bytes -= freed;
        forgotten
    }

    /// The ring, even if a thread panicked holding it (it stays consistent: each step above
    /// leaves it whole).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the form of `pos` is kept (for tests).
    #[cfg(test)]
    fn keeps(&self, pos: i64) -> bool {
        matches!(&self.lock().slots[slot(pos)], Some(s) if s.pos == pos)
    }

    /// Forms kept now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pos: i64, bytes: usize) -> GroupMessage {
        GroupMessage {
            expires_ts: None,
            group_id: "!g:h.example".into(),
            seq: pos,
            stream_pos: pos,
            sender_user: "@a:h.example".into(),
            sender_device: "DEV".into(),
            kind: "application".into(),
            epoch: 1,
            message: vec![7; bytes],
            adds: None,
            removes: None,
            ts: 1,
        }
    }

    #[test]
    fn the_forms_of_expired_messages_are_forgotten_and_others_kept() {
        let forms = WireForms::default();
        let expiring = |pos: i64, expires_ts: i64| GroupMessage {
            expires_ts: Some(expires_ts),
            ..message(pos, 100)
        };
        forms.of(&expiring(1, 1_000)).unwrap();
        forms.of(&message(2, 100)).unwrap();
        forms.of(&expiring(3, 5_000)).unwrap();
        let bytes = forms.lock().bytes;
        assert_eq!(forms.forget_expired(999), 0);
        assert_eq!(forms.forget_expired(1_000), 1);
        assert!(!forms.keeps(1) && forms.keeps(2) && forms.keeps(3));
        assert!(forms.lock().bytes < bytes);
        assert_eq!(forms.forget_expired(10_000), 1);
        assert_eq!(forms.len(), 1);
        // The ring goes on working past the forgotten positions.
        for pos in 4..(CAPACITY as i64 + 10) {
            forms.of(&message(pos, 10)).unwrap();
        }
        assert!(forms.lock().bytes <= BYTE_BUDGET);
        assert_eq!(forms.len(), CAPACITY);
    }

    #[test]
    fn a_message_is_serialised_once_and_the_same_form_is_shared() {
        let forms = WireForms::default();
        let first = forms.of(&message(5, 10)).unwrap();
        let second = forms.of(&message(5, 10)).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let expected = serde_json::to_string(&message_event(&message(5, 10))).unwrap();
        assert_eq!(&*first, expected.as_str());
    }

    #[test]
    fn the_oldest_forms_go_past_the_count_and_the_byte_budget() {
        let forms = WireForms::default();
        for pos in 0..(CAPACITY as i64 + 10) {
            forms.of(&message(pos, 1)).unwrap();
        }
        assert_eq!(forms.len(), CAPACITY);
        assert!(!forms.keeps(9) && forms.keeps(10));
        // 1 MiB messages (about 1.4 MiB of base64 each): the byte budget bounds them first.
        let big = WireForms::default();
        for pos in 0..100 {
            big.of(&message(pos, 1024 * 1024)).unwrap();
        }
        assert!(
            big.lock().bytes <= BYTE_BUDGET,
            "{} bytes kept",
            big.lock().bytes
        );
        assert!(big.len() < 100 && !big.keeps(0));
        assert!(big.keeps(99));
    }

    #[test]
    fn positions_sharing_a_slot_never_get_each_others_form() {
        let forms = WireForms::default();
        let (a, b) = (message(3, 10), message(3 + CAPACITY as i64, 20));
        let form_a = forms.of(&a).unwrap();
        let form_b = forms.of(&b).unwrap();
        assert_ne!(form_a, form_b);
        assert_eq!(&*forms.of(&a).unwrap(), &*form_a);
        assert_eq!(
            &*forms.of(&b).unwrap(),
            serde_json::to_string(&message_event(&b)).unwrap().as_str()
        );
        let len_a = forms.of(&a).unwrap().len();
        assert_eq!(forms.lock().bytes, len_a);
    }
}
