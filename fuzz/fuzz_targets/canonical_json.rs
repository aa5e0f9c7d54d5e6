//! Canonical JSON (federation/src/canonical_json.rs) on arbitrary bytes.
//!
//! - The strict parser (`from_slice`, `object_from_slice`) never panics; what it accepts
//!   encodes (`to_vec`), the encoding parses back to the same value, and encoding is
//!   idempotent: encode(parse(encode(x))) == encode(x).
//! - Any JSON serde_json accepts (duplicate keys, fractions, big numbers) either fails to
//!   encode with a typed error or encodes to canonical bytes that the strict parser accepts
//!   and that encode to themselves.
//! - The strict and the ordinary parse of the same input encode alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_federation::canonical_json::{from_slice, object_from_slice, to_string, to_vec};
use serde_json::Value;

/// `encode(parse(bytes)) == bytes` for canonical bytes.
fn assert_fixed_point(canonical: &[u8]) {
    let reparsed = from_slice(canonical).expect("canonical JSON does not parse strictly");
    let again = to_vec(&reparsed).expect("canonical JSON does not encode again");
    assert_eq!(again, canonical, "canonical encoding is not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let strict = from_slice(data);
    let object = object_from_slice(data);
    assert_eq!(
        object.is_ok(),
        matches!(strict, Ok(Value::Object(_))),
        "object_from_slice and from_slice disagree"
    );

    if let Ok(value) = &strict {
        let encoded = to_vec(value).expect("a strictly parsed value does not encode");
        assert_eq!(
            from_slice(&encoded).ok().as_ref(),
            Some(value),
            "the encoding of a strictly parsed value parses to another value"
        );
        assert_fixed_point(&encoded);
        let text = to_string(value).expect("to_string fails where to_vec succeeds");
        assert_eq!(text.as_bytes(), encoded.as_slice());
    }

    if let Ok(loose) = serde_json::from_slice::<Value>(data) {
        match to_vec(&loose) {
            Ok(encoded) => {
                assert_fixed_point(&encoded);
                if let Ok(value) = &strict {
                    assert_eq!(
                        to_vec(value).ok(),
                        Some(encoded),
                        "strict and ordinary parse encode differently"
                    );
                }
            }
            Err(_) => assert!(
                strict.is_err(),
                "the strict parser accepted what does not encode"
            ),
        }
    } else {
        assert!(strict.is_err(), "the strict parser accepted invalid JSON");
    }
});
