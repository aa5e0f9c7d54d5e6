//! The wire forms of stored events, as `/sync`, the WebSocket and catch-up pages send them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::groups::DeviceRef;
use parley_client_api::sync::{MessageEvent, WelcomeEvent};
use parley_schema::{GroupMessage, Welcome};

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
        expires_ts: m.expires_ts.map(|e| e.max(0) as u64),
    }
}

/// The wire form of a stored Welcome.
pub fn welcome_event(w: Welcome) -> WelcomeEvent {
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
