//! The client wire form of recent group messages, made once and shared: every member's socket
//! sends the same bytes for a message, so the first socket that sends it serialises it and the
//! others reuse that, by stream position (positions are never reused).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use parley_schema::GroupMessage;

use crate::delivery::events::message_event;

/// Wire forms kept (the stream tail keeps as many positions).
const CAPACITY: usize = 16_384;
/// Bytes of wire forms kept: past it the oldest go, whatever their count.
const BYTE_BUDGET: usize = 48 * 1024 * 1024;

/// Recent messages' client wire forms (`{"seq":…}`), by stream position.
#[derive(Debug, Default)]
pub struct WireForms {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    forms: HashMap<i64, Arc<str>>,
    /// Positions in the order their forms were made: the oldest goes first.
    order: VecDeque<i64>,
    bytes: usize,
}

impl WireForms {
    /// The wire form of `m`: the one made earlier, or made now and kept.
    pub fn of(&self, m: &GroupMessage) -> serde_json::Result<Arc<str>> {
        if let Some(form) = self.lock().forms.get(&m.stream_pos) {
            return Ok(form.clone());
        }
        // Serialised outside the lock; two sockets racing both make it and one is kept.
        let made: Arc<str> = serde_json::to_string(&message_event(m))?.into();
        let mut inner = self.lock();
        if let Some(form) = inner.forms.get(&m.stream_pos) {
            return Ok(form.clone());
        }
        inner.forms.insert(m.stream_pos, made.clone());
        inner.order.push_back(m.stream_pos);
        inner.bytes += made.len();
        while inner.order.len() > CAPACITY || inner.bytes > BYTE_BUDGET {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.forms.remove(&oldest) {
                inner.bytes -= gone.len();
            }
        }
        Ok(made)
    }

    /// The map, even if a thread panicked holding it (it stays consistent: each step above
    /// leaves it whole).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forms kept now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().forms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pos: i64, bytes: usize) -> GroupMessage {
        GroupMessage {
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
        // 1 MiB messages (about 1.4 MiB of base64 each): the byte budget bounds them first.
        let big = WireForms::default();
        for pos in 0..100 {
            big.of(&message(pos, 1024 * 1024)).unwrap();
        }
        let inner = big.lock();
        assert!(inner.bytes <= BYTE_BUDGET, "{} bytes kept", inner.bytes);
        assert!(inner.forms.len() < 100 && !inner.forms.contains_key(&0));
        assert!(inner.forms.contains_key(&99));
    }
}
