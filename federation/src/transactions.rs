//! Wire types of `PUT /_parley/federation/v1/send/{txn_id}` (docs/protocol.md#transactions).
//!
//! Request: `{origin, origin_ts, events: [..]}`, at most [`MAX_EVENTS`] events. Each event is
//! `{event_id, type, ...}` with the type's fields at the top level:
//!
//! - `"message"`: `group_id` plus the sync message object (`seq`, `sender`, `kind`, `epoch`,
//!   `message`, `ts`, and `adds`/`removes` for commits) — flat, as `/ws` pushes it;
//! - `"welcome"`: `group_id`, `sender`, `welcome`, `recipients: [{user_id, device_id}]`;
//! - `"device_list_update"`: `user_id`, `devices: [{device_id, signature_key}]`.
//!
//! Response: `{results: {event_id: {} | {errcode, error}}}`.
//!
//! A receiver first checks the batch with [`Transaction::validate`] (a failure there refuses
//! the whole request, 400), then parses each event on its own with [`parse_event`]: a bad
//! event gets its own `{errcode, error}` and does not affect the others. Unknown fields are
//! ignored, so later versions can add some.

use std::collections::{BTreeMap, HashSet};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Result};

/// Most events in one transaction.
pub const MAX_EVENTS: usize = 100;

/// Longest `txn_id`.
pub const MAX_TXN_ID_LEN: usize = parley_client_api::ids::MAX_TXN_ID_LEN;

/// Checks a `txn_id` against `[A-Za-z0-9._~-]{1,64}` ([`parley_client_api::ids::TxnId`]).
pub fn validate_txn_id(txn_id: &str) -> Result<()> {
    parley_client_api::ids::TxnId::parse(txn_id)
        .map(drop)
        .map_err(|_| Error::InvalidTxnId)
}

/// The body of `PUT /send/{txn_id}`. Events stay raw JSON until [`parse_event`], so one bad
/// event cannot spoil the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transaction {
    /// The sending server (must equal the authenticated origin).
    pub origin: String,
    /// When the sender built the transaction (ms since the Unix epoch).
    pub origin_ts: u64,
    /// The events, at most [`MAX_EVENTS`].
    #[schemars(with = "Vec<Event>")]
    pub events: Vec<Value>,
}

impl Transaction {
    /// Builds a transaction from typed events (at most [`MAX_EVENTS`]).
    pub fn new(origin: &str, origin_ts: u64, events: &[Event]) -> Result<Self> {
        if events.len() > MAX_EVENTS {
            return Err(Error::TooManyEvents(events.len()));
        }
        let events = events
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::BadJson(e.to_string()))?;
        Ok(Transaction {
            origin: origin.to_owned(),
            origin_ts,
            events,
        })
    }

    /// Reads a transaction from a parsed body and [`validate`](Self::validate)s it.
    pub fn from_body(body: Value) -> Result<Self> {
        let txn: Transaction =
            serde_json::from_value(body).map_err(|e| Error::BadJson(e.to_string()))?;
        txn.validate()?;
        Ok(txn)
    }

    /// Batch-level checks: at most [`MAX_EVENTS`] events, each an object with a non-empty
    /// string `event_id`, no `event_id` twice. Anything else is judged per event.
    pub fn validate(&self) -> Result<()> {
        if self.events.len() > MAX_EVENTS {
            return Err(Error::TooManyEvents(self.events.len()));
        }
        let mut seen = HashSet::new();
        for event in &self.events {
            let id = event
                .get("event_id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| Error::BadJson("every event needs a string event_id".into()))?;
            if !seen.insert(id) {
                return Err(Error::BadJson(format!("event_id {id:?} appears twice")));
            }
        }
        Ok(())
    }
}

/// Parses one raw event of a validated transaction.
pub fn parse_event(raw: &Value) -> Result<Event> {
    Event::deserialize(raw).map_err(|e| Error::BadJson(e.to_string()))
}

/// A federation event: `{event_id, type, ...payload}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Unique per origin; the key of this event's entry in the response.
    pub event_id: String,
    /// The typed payload; its `type` tag sits beside `event_id`.
    #[serde(flatten)]
    pub payload: EventPayload,
}

/// The payload of an [`Event`], tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventPayload {
    /// `"message"`: a message the hub accepted.
    Message(GroupMessage),
    /// `"welcome"`: an MLS Welcome for devices on the receiving server.
    Welcome(WelcomeEvent),
    /// `"device_list_update"`: a user's current devices.
    DeviceListUpdate(DeviceListUpdate),
}

/// A device of a user: `{user_id, device_id}` — the protocol's one device reference type.
pub type UserDevice = parley_client_api::groups::DeviceRef;

/// What kind of MLS message a group message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A commit (with `adds`/`removes`).
    Commit,
    /// A standalone proposal.
    Proposal,
    /// An application message.
    Application,
    /// A notice from the hub itself, not an MLS message: `message` is the base64 of a JSON
    /// object whose `type` says what it is (docs/protocol.md#notices).
    Notice,
}

impl MessageKind {
    /// The kind's name on the wire and in the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageKind::Commit => "commit",
            MessageKind::Proposal => "proposal",
            MessageKind::Application => "application",
            MessageKind::Notice => "notice",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<MessageKind> {
        [
            MessageKind::Commit,
            MessageKind::Proposal,
            MessageKind::Application,
            MessageKind::Notice,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// `type: "message"`: the group id plus the sync message object, flat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GroupMessage {
    /// The group (`!opaque:hub`).
    pub group_id: String,
    /// The hub's sequence number (from 1, gap-free per group).
    pub seq: u64,
    /// The submitting device.
    pub sender: UserDevice,
    /// Commit, proposal or application.
    pub kind: MessageKind,
    /// The MLS message's own epoch.
    pub epoch: u64,
    /// The `MLSMessage`, padded standard base64.
    pub message: String,
    /// Hub acceptance time (ms since the Unix epoch).
    pub ts: u64,
    /// For commits: devices added, as submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adds: Option<Vec<UserDevice>>,
    /// For commits: devices removed, as submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<Vec<UserDevice>>,
    /// Application messages of a group with a disappearing-messages timer: when it expires
    /// (ms since the Unix epoch); the receiver never delivers it to a device after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ts: Option<u64>,
}

/// `type: "welcome"`: a Welcome for the receiving server's devices among `recipients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WelcomeEvent {
    /// The group joined.
    pub group_id: String,
    /// The device whose commit produced the Welcome.
    pub sender: UserDevice,
    /// The MLS Welcome, padded standard base64.
    pub welcome: String,
    /// The added devices this Welcome is for (on the receiving server).
    pub recipients: Vec<UserDevice>,
}

/// `type: "device_list_update"`: the user's devices as in `GET /users/{user_id}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceListUpdate {
    /// The user (on the origin server).
    pub user_id: String,
    /// Devices with a bound signature key.
    pub devices: Vec<DeviceKey>,
}

/// A device and its bound MLS signature key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceKey {
    /// The device id.
    pub device_id: String,
    /// Raw 32-byte Ed25519 public key, padded standard base64.
    pub signature_key: String,
}

/// The answer of `PUT /send/{txn_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TransactionResponse {
    /// One entry per event of the transaction, keyed by `event_id`.
    pub results: BTreeMap<String, EventResult>,
}

/// The outcome of one event: `{}` or `{errcode, error}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventResult {
    /// Accepted: `{}`.
    Accepted,
    /// Refused on its own.
    Refused {
        /// `P_…` code.
        errcode: String,
        /// Human-readable reason.
        error: String,
    },
}

impl EventResult {
    /// The refusal matching a crate [`Error`] (its `errcode` and message).
    pub fn refused(err: &Error) -> Self {
        EventResult::Refused {
            errcode: err.errcode().to_owned(),
            error: err.to_string(),
        }
    }

    /// Whether the event was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, EventResult::Accepted)
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct EventResultWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl schemars::JsonSchema for EventResult {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventResult".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        EventResultWire::json_schema(generator)
    }
}

impl Serialize for EventResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventResult::Accepted => EventResultWire {
                errcode: None,
                error: None,
            },
            EventResult::Refused { errcode, error } => EventResultWire {
                errcode: Some(errcode.clone()),
                error: Some(error.clone()),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match EventResultWire::deserialize(d)? {
            EventResultWire {
                errcode: None,
                error: None,
            } => Ok(EventResult::Accepted),
            EventResultWire {
                errcode: Some(errcode),
                error,
            } => Ok(EventResult::Refused {
                errcode,
                error: error.unwrap_or_default(),
            }),
            EventResultWire {
                errcode: None,
                error: Some(_),
            } => Err(D::Error::custom(
                "an event result with `error` needs `errcode`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dev(u: &str, d: &str) -> UserDevice {
        UserDevice {
            user_id: u.into(),
            device_id: d.into(),
        }
    }

    fn commit_event() -> Event {
        Event {
            event_id: "e1".into(),
            payload: EventPayload::Message(GroupMessage {
                expires_ts: None,
                group_id: "!g1234567:a.example".into(),
                seq: 7,
                sender: dev("@al:a.example", "AAAAAAAAAA"),
                kind: MessageKind::Commit,
                epoch: 3,
                message: "AAEC".into(),
                ts: 1_700_000_000_000,
                adds: Some(vec![dev("@bo:b.example", "BBBBBBBBBB")]),
                removes: Some(vec![]),
            }),
        }
    }

    #[test]
    fn message_event_is_flat_with_type_beside_event_id() {
        let v = serde_json::to_value(commit_event()).unwrap();
        assert_eq!(
            v,
            json!({
                "event_id": "e1", "type": "message", "group_id": "!g1234567:a.example", "seq": 7,
                "sender": {"user_id": "@al:a.example", "device_id": "AAAAAAAAAA"},
                "kind": "commit", "epoch": 3, "message": "AAEC", "ts": 1_700_000_000_000u64,
                "adds": [{"user_id": "@bo:b.example", "device_id": "BBBBBBBBBB"}], "removes": []
            })
        );
        assert_eq!(parse_event(&v).unwrap(), commit_event());
    }

    #[test]
    fn application_message_omits_adds_and_removes() {
        let v = json!({"event_id": "e2", "type": "message", "group_id": "!g", "seq": 8,
            "sender": {"user_id": "@al:a.example", "device_id": "D"}, "kind": "application",
            "epoch": 3, "message": "AA==", "ts": 1});
        let e = parse_event(&v).unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
    }

    #[test]
    fn welcome_and_device_list_update_events_round_trip() {
        let w = json!({"event_id": "w", "type": "welcome", "group_id": "!g", "welcome": "AA==",
            "sender": {"user_id": "@al:a.example", "device_id": "D"},
            "recipients": [{"user_id": "@bo:b.example", "device_id": "E"}]});
        assert!(matches!(
            parse_event(&w).unwrap().payload,
            EventPayload::Welcome(_)
        ));
        let d = json!({"event_id": "d", "type": "device_list_update", "user_id": "@al:a.example",
            "devices": [{"device_id": "D", "signature_key": "AA=="}]});
        match parse_event(&d).unwrap().payload {
            EventPayload::DeviceListUpdate(u) => assert_eq!(u.devices[0].device_id, "D"),
            other => panic!("{other:?}"),
        }
        for v in [w, d] {
            assert_eq!(serde_json::to_value(parse_event(&v).unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn bad_event_is_refused_alone() {
        let good = serde_json::to_value(commit_event()).unwrap();
        let body = json!({"origin": "a.example", "origin_ts": 1, "events": [
            good,
            {"event_id": "e2", "type": "mystery"},
            {"event_id": "e3", "type": "message", "group_id": "!g"},
        ]});
        let txn = Transaction::from_body(body).unwrap();
        let results: Vec<_> = txn.events.iter().map(parse_event).collect();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Error::BadJson(_))));
        assert!(matches!(results[2], Err(Error::BadJson(_))));
        assert_eq!(
            serde_json::to_value(EventResult::refused(results[1].as_ref().unwrap_err())).unwrap()
                ["errcode"],
            "P_BAD_JSON"
        );
    }

    #[test]
    fn transaction_over_one_hundred_events_is_refused() {
        let events: Vec<Value> = (0..101)
            .map(|i| json!({"event_id": i.to_string(), "type": "x"}))
            .collect();
        let body = json!({"origin": "a.example", "origin_ts": 1, "events": events});
        assert!(matches!(
            Transaction::from_body(body),
            Err(Error::TooManyEvents(101))
        ));
        let typed = vec![commit_event(); 101];
        assert!(matches!(
            Transaction::new("a.example", 1, &typed),
            Err(Error::TooManyEvents(101))
        ));
        assert_eq!(
            Transaction::new("a.example", 1, &typed[..100])
                .unwrap()
                .events
                .len(),
            100
        );
    }

    #[test]
    fn events_without_an_id_or_with_a_repeated_id_refuse_the_batch() {
        for events in [
            json!([{"type": "message"}]),
            json!([{"event_id": 5}]),
            json!([1]),
            json!([{"event_id": "a"}, {"event_id": "a"}]),
            json!([{"event_id": ""}]),
        ] {
            let body = json!({"origin": "a.example", "origin_ts": 1, "events": events});
            assert!(
                matches!(Transaction::from_body(body), Err(Error::BadJson(_))),
                "{events}"
            );
        }
    }

    #[test]
    fn transaction_with_missing_fields_is_bad_json() {
        let body = json!({"origin": "a.example", "events": []});
        assert!(matches!(
            Transaction::from_body(body),
            Err(Error::BadJson(_))
        ));
    }

    #[test]
    fn response_results_are_empty_objects_or_errors() {
        let mut r = TransactionResponse::default();
        r.results.insert("e1".into(), EventResult::Accepted);
        r.results.insert(
            "e2".into(),
            EventResult::Refused {
                errcode: "P_NOT_MEMBER".into(),
                error: "not in the roster".into(),
            },
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"results": {"e1": {}, "e2": {"errcode": "P_NOT_MEMBER", "error": "not in the roster"}}})
        );
        assert_eq!(serde_json::from_value::<TransactionResponse>(v).unwrap(), r);
        assert!(serde_json::from_value::<EventResult>(json!({"error": "x"})).is_err());
    }

    #[test]
    fn txn_ids_follow_the_documented_alphabet() {
        for ok in ["a", "A.b_c~d-9", &"x".repeat(64)] {
            validate_txn_id(ok).unwrap();
        }
        for bad in ["", "a/b", "a b", "a%20", &"x".repeat(65), "é"] {
            assert!(
                matches!(validate_txn_id(bad), Err(Error::InvalidTxnId)),
                "{bad:?}"
            );
        }
    }
}
