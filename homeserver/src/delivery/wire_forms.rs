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
    slots: Vec<Option<(i64, Arc<str>)>>,
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

/// The slot of position `pos`.
fn slot(pos: i64) -> usize {
    pos.rem_euclid(CAPACITY as i64) as usize
}

impl Inner {
    /// Forgets the form in slot `i` if it is position `pos`'s.
    fn evict(&mut self, i: usize, pos: i64) {
        if matches!(&self.slots[i], Some((p, _)) if *p == pos) {
            if let Some((_, gone)) = self.slots[i].take() {
                self.bytes -= gone.len();
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
        if let Some((p, form)) = &inner.slots[i] {
            if *p == pos {
                return Ok(form.clone());
            }
        }
        // Made under the lock: a socket woken with others for this message waits for this
        // form instead of making its own.
        let made: Arc<str> = serde_json::to_string(&message_event(m))?.into();
        if let Some((_, replaced)) = inner.slots[i].take() {
            inner.bytes -= replaced.len();
        }
        inner.slots[i] = Some((pos, made.clone()));
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

    /// The ring, even if a thread panicked holding it (it stays consistent: each step above
    /// leaves it whole).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the form of `pos` is kept (for tests).
    #[cfg(test)]
    fn keeps(&self, pos: i64) -> bool {
        matches!(&self.lock().slots[slot(pos)], Some((p, _)) if *p == pos)
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
