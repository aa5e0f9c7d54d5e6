//! Writes the seed corpora under fuzz/corpus/<target>/: real MLS values made with the
//! project's engine (parley-mls), canonical JSON samples, signed `X-Parley` requests and valid
//! transactions.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [-- OUT_DIR]
//! ```
//!
//! OUT_DIR defaults to fuzz/corpus. Files are overwritten; MLS values are fresh each run
//! (new keys), so re-running changes those files. Key packages get a lifetime of ten years so
//! that committed seeds stay valid; the hub's own lifetime cap is then exercised by the
//! target itself.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use parley_federation::auth::sign_request;
use parley_federation::keys::{KeyId, ServerKeyDocument, ServerSigningKey};
use parley_federation::transactions::{
    DeviceKey, DeviceListUpdate, Event, EventPayload, GroupMessage, MessageKind, Transaction,
    UserDevice, WelcomeEvent,
};
use parley_mls::{Engine, EngineConfig, Envelope, StaticDeviceKeys};
use serde_json::{json, Value};

const GROUP: &str = "!fuzzgroup:a.example";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as u64
}

struct Out(PathBuf);

impl Out {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

/// Everything the MLS seeds produce, also used for the JSON seeds.
struct Mls {
    welcome: Vec<u8>,
    commit: Vec<u8>,
    application: Vec<u8>,
    bob_key: Vec<u8>,
}

fn engine(user: &str, device: &str) -> Engine {
    let config = EngineConfig {
        key_package_lifetime_secs: 10 * 365 * 24 * 3600,
        ..EngineConfig::default()
    };
    Engine::new(user, device, config).expect("engine")
}

fn mls_seeds(out: &Out) -> Mls {
    let t = "mls_check";
    let mut alice = engine("@alice:a.example", "ALICEDEVICE");
    let mut bob = engine("@bob:b.example", "BOBDEVICE");
    let mut carol = engine("@carol:c.example", "CAROLDEVICE");
    let mut keys = StaticDeviceKeys::new();
    for e in [&alice, &bob, &carol] {
        keys.insert(e.device().clone(), e.signature_public_key());
    }

    // Key packages: MLSMessage, bare KeyPackage, last resort.
    let bob_kp = bob.generate_key_packages(1).expect("kp").remove(0);
    out.put(t, "key_package_message", &bob_kp);
    out.put(t, "key_package_bare", &bob_kp[4..]);
    let last_resort = bob.generate_last_resort_key_package().expect("lr kp");
    out.put(t, "key_package_last_resort", &last_resort);
    let carol_kp = carol.generate_key_packages(1).expect("kp").remove(0);

    // Group of alice; commit adding bob (inline Add), its Welcome and GroupInfo.
    alice.create_group(GROUP).expect("create group");
    let add = alice
        .add_members(GROUP, std::slice::from_ref(&bob_kp), &keys)
        .expect("add bob");
    out.put(t, "commit_add", &add.commit);
    let welcome = add.welcome.clone().expect("welcome");
    out.put(t, "welcome", &welcome);
    if let Some(gi) = &add.group_info {
        out.put(t, "group_info", gi);
    }
    alice.confirm_pending_commit(GROUP).expect("confirm add");
    bob.join_from_welcome(&welcome, &keys).expect("bob joins");

    // Application message (PrivateMessage).
    let app = alice
        .encrypt(GROUP, b"hello bob", now_ms())
        .expect("encrypt");
    out.put(t, "application", &app.message);

    // Standalone proposals from bob, stored by alice, committed by reference.
    let envelope = |sender: &Engine, epoch: u64| Envelope {
        sender: Some(sender.device().clone()),
        epoch,
        ts: now_ms(),
        adds: Vec::new(),
        removes: Vec::new(),
    };
    let epoch = alice.epoch(GROUP).expect("epoch");
    let update = bob.propose_update(GROUP).expect("propose update");
    out.put(t, "proposal_update", &update);
    alice
        .process(GROUP, &update, &envelope(&bob, epoch), &keys)
        .expect("alice stores bob's update");
    let add_carol = bob
        .propose_add(GROUP, &carol_kp, &keys)
        .expect("propose add");
    out.put(t, "proposal_add", &add_carol);
    alice
        .process(GROUP, &add_carol, &envelope(&bob, epoch), &keys)
        .expect("alice stores bob's add");
    let by_ref = alice
        .commit_pending_proposals(GROUP)
        .expect("commit by reference");
    out.put(t, "commit_by_reference", &by_ref.commit);
    if let Some(w) = &by_ref.welcome {
        out.put(t, "welcome_by_reference", w);
    }
    alice.confirm_pending_commit(GROUP).expect("confirm by ref");

    // A commit with an update path, a commit removing (inline Remove), then standalone
    // Remove and leave (self-remove) proposals.
    let update_path = alice.self_update(GROUP).expect("self update");
    out.put(t, "commit_update_path", &update_path.commit);
    alice.confirm_pending_commit(GROUP).expect("confirm update");
    let removal = alice
        .remove_members(GROUP, std::slice::from_ref(carol.device()))
        .expect("remove carol");
    out.put(t, "commit_remove", &removal.commit);
    alice.confirm_pending_commit(GROUP).expect("confirm remove");
    let remove = alice
        .propose_remove(GROUP, bob.device())
        .expect("propose remove");
    out.put(t, "proposal_remove", &remove);
    let leave = alice.leave_group(GROUP).expect("leave");
    out.put(t, "proposal_leave", &leave);

    Mls {
        welcome,
        commit: add.commit,
        application: app.message,
        bob_key: bob.signature_public_key(),
    }
}

fn transaction(mls: &Mls) -> Transaction {
    let dev = |u: &str, d: &str| UserDevice {
        user_id: u.into(),
        device_id: d.into(),
    };
    let events = [
        Event {
            event_id: "e1".into(),
            payload: EventPayload::Message(GroupMessage {
                expires_ts: None,
                group_id: GROUP.into(),
                seq: 1,
                sender: dev("@alice:a.example", "ALICEDEVICE"),
                kind: MessageKind::Commit,
                epoch: 0,
                message: STANDARD.encode(&mls.commit),
                ts: 1_700_000_000_000,
                adds: Some(vec![dev("@bob:b.example", "BOBDEVICE")]),
                removes: Some(Vec::new()),
            }),
        },
        Event {
            event_id: "e2".into(),
            payload: EventPayload::Welcome(WelcomeEvent {
                group_id: GROUP.into(),
                sender: dev("@alice:a.example", "ALICEDEVICE"),
                welcome: STANDARD.encode(&mls.welcome),
                recipients: vec![dev("@bob:b.example", "BOBDEVICE")],
            }),
        },
        Event {
            event_id: "e3".into(),
            payload: EventPayload::Message(GroupMessage {
                expires_ts: None,
                group_id: GROUP.into(),
                seq: 2,
                sender: dev("@alice:a.example", "ALICEDEVICE"),
                kind: MessageKind::Application,
                epoch: 1,
                message: STANDARD.encode(&mls.application),
                ts: 1_700_000_000_500,
                adds: None,
                removes: None,
            }),
        },
        Event {
            event_id: "e4".into(),
            payload: EventPayload::DeviceListUpdate(DeviceListUpdate {
                user_id: "@bob:b.example".into(),
                devices: vec![DeviceKey {
                    device_id: "BOBDEVICE".into(),
                    signature_key: STANDARD.encode(&mls.bob_key),
                }],
            }),
        },
    ];
    Transaction::new("a.example", 1_700_000_001_000, &events).expect("transaction")
}

fn json_seeds(out: &Out, txn: &Value, key_doc: &Value) {
    let t = "canonical_json";
    let samples: [(&str, &[u8]); 9] = [
        ("empty_object", b"{}"),
        (
            "whitespace_and_order",
            b"{\n  \"b\": 2,\n  \"a\": [1, -2, 0, true, false, null]\n}",
        ),
        (
            "numbers",
            b"[0,-0,1e3,2.0,-9007199254740991,9007199254740991,1.5,9007199254740992,1E-2]",
        ),
        (
            "strings",
            "{\"esc\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\",\"uni\":\"\\u65e5\\ud83d\\ude00 é\"}"
                .as_bytes(),
        ),
        ("nested", b"{\"a\":{\"b\":{\"c\":[[[{}]],[]]}},\"\":\"\"}"),
        ("duplicate_key", b"{\"a\":1,\"a\":2}"),
        ("scalar", b"\"just a string\""),
        ("big_integer", b"{\"n\":18446744073709551615,\"m\":-9223372036854775808}"),
        ("trailing", b"{\"a\":1} x"),
    ];
    for (name, bytes) in samples {
        out.put(t, name, bytes);
    }
    out.put(
        t,
        "transaction",
        &serde_json::to_vec_pretty(txn).expect("json"),
    );
    out.put(
        t,
        "key_document",
        &serde_json::to_vec(key_doc).expect("json"),
    );
}

fn header_seeds(out: &Out, txn: &Value) {
    let t = "x_parley_header";
    let key = ServerSigningKey::from_seed(KeyId::new("ed25519:fuzz").expect("key id"), &[7; 32]);
    let request = |method: &str, uri: &str, body: Option<&Value>| -> (String, Vec<u8>) {
        let header =
            sign_request(&key, "a.example", "b.example", method, uri, body).expect("sign request");
        let body = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        (header, body)
    };
    let file = |line: &str, header: &str, body: &[u8]| -> Vec<u8> {
        let mut v = format!("{line}\n{header}\n").into_bytes();
        v.extend_from_slice(body);
        v
    };

    let uri = "/_parley/federation/v1/send/t1";
    let (h, b) = request("PUT", uri, Some(txn));
    out.put(
        t,
        "signed_put_transaction",
        &file(&format!("PUT {uri}"), &h, &b),
    );
    let uri_get = "/_parley/federation/v1/user/devices/%40bob%3Ab.example?x=1";
    let (h_get, _) = request("GET", uri_get, None);
    out.put(
        t,
        "signed_get_no_body",
        &file(&format!("GET {uri_get}"), &h_get, b""),
    );
    let small = json!({"a": 1, "nested": {"b": [true, null, "x"]}});
    let (h_small, b_small) = request("POST", "/_parley/federation/v1/x", Some(&small));
    out.put(
        t,
        "signed_post_small",
        &file("POST /_parley/federation/v1/x", &h_small, &b_small),
    );
    // Header variants the grammar allows: lower-case scheme, bare tokens, OWS, reordering.
    let sig = h_get
        .rsplit_once("sig=\"")
        .map(|(_, s)| s.trim_end_matches('"').to_owned())
        .expect("sig");
    let variant = format!(
        "x-parley  SIG={sig} , key = \"ed25519:fuzz\",, origin=a.example,destination=\"b.example\",extra=\"q\\\"x\""
    );
    out.put(
        t,
        "header_variant",
        &file(&format!("GET {uri_get}"), &variant, b""),
    );
    out.put(t, "header_only", h_get.as_bytes());
    out.put(
        t,
        "wrong_destination",
        &file(
            &format!("GET {uri_get}"),
            &h_get.replace("b.example", "c.example:8448"),
            b"",
        ),
    );
}

fn transaction_seeds(out: &Out, txn: &Value) {
    let t = "federation_transaction";
    out.put(t, "valid", &serde_json::to_vec(txn).expect("json"));
    out.put(
        t,
        "empty",
        br#"{"origin":"a.example","origin_ts":1700000000000,"events":[]}"#,
    );
    out.put(
        t,
        "bad_events",
        br#"{"origin":"a.example","origin_ts":1,"events":[{"event_id":"x","type":"message"},{"event_id":"y","type":"nope"},{"event_id":"z","type":"welcome","group_id":"!g:a","sender":{"user_id":"@a:a","device_id":"D"},"welcome":"AA==","recipients":[],"extra":[1]}]}"#,
    );
    out.put(
        t,
        "duplicate_event_id",
        br#"{"origin":"a.example","origin_ts":1,"events":[{"event_id":"x"},{"event_id":"x"}]}"#,
    );
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let out = Out(dir);

    let mls = mls_seeds(&out);
    let txn = serde_json::to_value(transaction(&mls)).expect("txn json");
    let server_key =
        ServerSigningKey::from_seed(KeyId::new("ed25519:fuzz").expect("key id"), &[7; 32]);
    let key_doc =
        ServerKeyDocument::build("a.example", &server_key, BTreeMap::new(), 1_700_000_000_000)
            .expect("key document")
            .to_json_object()
            .map(Value::Object)
            .expect("key document json");
    json_seeds(&out, &txn, &key_doc);
    header_seeds(&out, &txn);
    transaction_seeds(&out, &txn);
    eprintln!("seeds written to {}", out.0.display());
}
