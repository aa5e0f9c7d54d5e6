//! Inbound federation transactions (federation/src/transactions.rs) on arbitrary bytes.
//!
//! The input is the body of `PUT /_parley/federation/v1/send/{txn_id}`. It goes through what
//! the homeserver does with it (homeserver/src/fed_api.rs): the strict body parser
//! (`auth::parse_body`), `Transaction::from_body` and `validate`, then `parse_event` per event,
//! with `EventResult::refused` for events that fail and the response serialised. Nothing may
//! panic; a parsed event serialises and parses back to itself, and a validated transaction
//! serialises and reads back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_federation::auth::parse_body;
use parley_federation::canonical_json;
use parley_federation::transactions::{
    parse_event, validate_txn_id, EventResult, Transaction, TransactionResponse,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The path segment is arbitrary too: check the first line as a txn_id.
    if let Some(line) = data.split(|&b| b == b'\n').next() {
        if let Ok(txn_id) = std::str::from_utf8(line) {
            let _ = validate_txn_id(txn_id);
        }
    }

    let body = match parse_body(Some(data)) {
        Ok(body) => body,
        Err(e) => {
            let _ = (e.errcode(), e.http_status(), e.to_string());
            return;
        }
    };
    let txn = match Transaction::from_body(body.unwrap_or(Value::Null)) {
        Ok(txn) => txn,
        Err(e) => {
            let _ = (e.errcode(), e.http_status(), e.to_string());
            return;
        }
    };
    txn.validate()
        .expect("from_body returned an invalid transaction");

    // A validated transaction survives a round trip through canonical JSON.
    let encoded = canonical_json::serialize(&txn).expect("a transaction does not encode");
    let back = Transaction::from_body(canonical_json::from_slice(&encoded).expect("re-parse"))
        .expect("an encoded transaction does not read back");
    assert_eq!(back, txn, "transaction round trip changed it");

    let mut response = TransactionResponse::default();
    for raw in &txn.events {
        let event_id = raw
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let result = match parse_event(raw) {
            Ok(event) => {
                assert_eq!(event.event_id, event_id);
                let value = serde_json::to_value(&event).expect("an event does not serialise");
                let again = parse_event(&value).expect("a serialised event does not parse");
                assert_eq!(again, event, "event round trip changed it");
                EventResult::Accepted
            }
            Err(e) => EventResult::refused(&e),
        };
        response.results.insert(event_id, result);
    }
    let answer = serde_json::to_vec(&response).expect("the response does not serialise");
    let parsed: TransactionResponse =
        serde_json::from_slice(&answer).expect("the response does not parse");
    assert_eq!(parsed, response);
});
