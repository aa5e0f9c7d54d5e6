//! Canonical JSON (docs/protocol.md#canonical-json; the same encoding as Matrix's canonical JSON).
//!
//! The canonical form of a value is its shortest UTF-8 JSON encoding with:
//!
//! - object keys sorted by Unicode code point (for UTF-8 this is byte order);
//! - no insignificant white space;
//! - strings escaped exactly as `serde_json` escapes them: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//!   `\t`, other control characters as `\u00XX` (lower-case hex), everything else — `/`,
//!   DEL, non-ASCII — written as raw UTF-8;
//! - numbers that are integers in ±(2^53−1), written in decimal without exponent, fraction,
//!   leading zeros or `-0`.
//!
//! **Numbers are judged by value**: `1e10`, `2.0` and `-0` are the integers 10000000000, 2
//! and 0 (as in the Matrix specification's examples). A number with a fractional part
//! (`1.5`) is [`Error::NonIntegerNumber`]; an integer outside the range is
//! [`Error::IntegerOutOfRange`]. (Values are read as IEEE doubles where they are not
//! integers, so a literal such as `1.0000000000000000001`, which rounds to `1.0`, counts as 1.)
//!
//! [`from_slice`] is the strict parser for federation bodies: besides the number rules it
//! refuses duplicate object keys (a signature must cover one unambiguous object) and returns
//! every number as an integer, so typed deserialisation that follows sees `u64`/`i64`.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::{Error, Result};

/// The largest integer allowed in canonical JSON, 2^53 − 1 (the smallest is its negation).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Encodes `value` as canonical JSON bytes.
pub fn to_vec(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value)?;
    Ok(out)
}

/// Encodes `value` as a canonical JSON string.
pub fn to_string(value: &Value) -> Result<String> {
    let bytes = to_vec(value)?;
    String::from_utf8(bytes).map_err(|_| Error::BadJson("canonical JSON is not UTF-8".into()))
}

/// Serialises any `Serialize` type and encodes it as canonical JSON bytes.
pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).map_err(|e| Error::BadJson(e.to_string()))?;
    to_vec(&value)
}

/// Parses JSON strictly: refuses non-integer numbers, out-of-range integers and duplicate keys.
///
/// Syntax errors are [`Error::NotJson`]. Every number in the result is an integer.
pub fn from_slice(bytes: &[u8]) -> Result<Value> {
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed(&failure)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, failure.into_inner()) {
        (_, Some(err)) => Err(err),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(Error::NotJson(e.to_string())),
    }
}

/// Parses JSON strictly ([`from_slice`]) and requires the top level to be an object.
pub fn object_from_slice(bytes: &[u8]) -> Result<Map<String, Value>> {
    match from_slice(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::BadJson("expected a JSON object".into())),
    }
}

/// Checks one number against the canonical rules and returns it as an integer.
fn integer_of(n: &Number) -> Result<i64> {
    if let Some(i) = n.as_i64() {
        return check_range(i);
    }
    if n.as_u64().is_some() {
        // Only u64 values above i64::MAX get here.
        return Err(Error::IntegerOutOfRange);
    }
    match n.as_f64() {
        Some(f) => integer_of_f64(f),
        None => Err(Error::NonIntegerNumber),
    }
}

fn integer_of_f64(f: f64) -> Result<i64> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(Error::NonIntegerNumber);
    }
    if f.abs() > MAX_SAFE_INTEGER as f64 {
        return Err(Error::IntegerOutOfRange);
    }
    // Exact: |f| ≤ 2^53 − 1 and f is integral; `-0.0 as i64` is 0.
    Ok(f as i64)
}

fn check_range(i: i64) -> Result<i64> {
    if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
        Ok(i)
    } else {
        Err(Error::IntegerOutOfRange)
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(integer_of(n)?.to_string().as_bytes()),
        Value::String(s) => write_string(out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sort explicitly: `Map` keeps insertion order when serde_json's
            // `preserve_order` feature is on anywhere in the build.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k)?;
                out.push(b':');
                write_value(out, v)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) -> Result<()> {
    serde_json::to_writer(&mut *out, s).map_err(|e| Error::BadJson(e.to_string()))
}

/// A `serde` seed that builds a [`Value`] under the canonical rules, recording the first
/// rule violation in the shared cell (so the caller gets a typed [`Error`]).
struct StrictSeed<'a>(&'a RefCell<Option<Error>>);

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, err: Error) -> E {
        let msg = err.to_string();
        self.0.borrow_mut().get_or_insert(err);
        E::custom(msg)
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a canonical JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        check_range(v).map(Value::from).map_err(|e| self.fail(e))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Err(self.fail(Error::IntegerOutOfRange)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        integer_of_f64(v).map(Value::from).map_err(|e| self.fail(e))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(Error::DuplicateKey(key)));
            }
            let value = map.next_value_seed(StrictSeed(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Canonicalises `input` both through serde_json's ordinary parser and the strict one.
    fn canon(input: &str) -> String {
        let loose: Value = serde_json::from_str(input).unwrap();
        let a = to_string(&loose).unwrap();
        let b = to_string(&from_slice(input.as_bytes()).unwrap()).unwrap();
        assert_eq!(a, b, "strict and loose parse disagree for {input}");
        a
    }

    // The examples of the Matrix specification, appendix "Canonical JSON".

    #[test]
    fn matrix_example_empty_object() {
        assert_eq!(canon("{}"), "{}");
    }

    #[test]
    fn matrix_example_whitespace_is_removed() {
        assert_eq!(
            canon("{\n    \"one\": 1,\n    \"two\": \"Two\"\n}"),
            r#"{"one":1,"two":"Two"}"#
        );
    }

    #[test]
    fn matrix_example_keys_are_sorted() {
        assert_eq!(
            canon("{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}"),
            r#"{"a":"1","b":"2"}"#
        );
        assert_eq!(canon(r#"{"b":"2","a":"1"}"#), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn matrix_example_nested_objects_and_arrays() {
        let input = r#"{
            "auth": {
                "success": true,
                "mxid": "@john.doe:example.com",
                "profile": {
                    "display_name": "John Doe",
                    "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"}
                    ]
                }
            }
        }"#;
        assert_eq!(
            canon(input),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
    }

    #[test]
    fn matrix_example_non_ascii_is_raw_utf8() {
        assert_eq!(canon(r#"{"a": "日本語"}"#), r#"{"a":"日本語"}"#);
    }

    #[test]
    fn matrix_example_non_ascii_keys_sort_by_code_point() {
        assert_eq!(canon(r#"{"本": 2, "日": 1}"#), r#"{"日":1,"本":2}"#);
    }

    #[test]
    fn matrix_example_unicode_escape_becomes_raw_utf8() {
        assert_eq!(canon(r#"{"a": "\u65E5"}"#), r#"{"a":"日"}"#);
    }

    #[test]
    fn matrix_example_null() {
        assert_eq!(canon(r#"{"a": null}"#), r#"{"a":null}"#);
    }

    #[test]
    fn matrix_example_minus_zero_and_exponent_become_plain_integers() {
        assert_eq!(
            canon(r#"{"a": -0, "b": 1e10}"#),
            r#"{"a":0,"b":10000000000}"#
        );
    }

    // Escaping as serde_json does.

    #[test]
    fn control_characters_are_escaped_like_serde_json() {
        let v = json!({"s": "q\"b\\\u{8}\u{c}\n\r\t\u{1}\u{1f}/\u{7f}\u{2028}"});
        assert_eq!(
            to_string(&v).unwrap(),
            "{\"s\":\"q\\\"b\\\\\\b\\f\\n\\r\\t\\u0001\\u001f/\u{7f}\u{2028}\"}"
        );
    }

    #[test]
    fn keys_sort_by_code_point_not_utf16() {
        // U+FF61 sorts before U+1F600 by code point (and by UTF-8 bytes), after it in UTF-16.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2, "Z": 3, "a": 4, "": 5});
        assert_eq!(
            to_string(&v).unwrap(),
            "{\"\":5,\"Z\":3,\"a\":4,\"\u{FF61}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn integer_range_bounds_are_accepted() {
        let v = json!([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, 2.0]);
        assert_eq!(
            to_string(&v).unwrap(),
            "[9007199254740991,-9007199254740991,0,2]"
        );
        assert_eq!(
            to_string(&from_slice(b"[9007199254740991,-9007199254740991]").unwrap()).unwrap(),
            "[9007199254740991,-9007199254740991]"
        );
    }

    #[test]
    fn strict_parse_turns_integral_floats_into_integers() {
        let v = from_slice(br#"{"ts": 1.7e12, "z": -0}"#).unwrap();
        assert_eq!(v["ts"].as_u64(), Some(1_700_000_000_000));
        assert_eq!(v["z"].as_i64(), Some(0));
    }

    // Rejections.

    #[test]
    fn fractional_number_is_refused() {
        assert!(matches!(
            to_vec(&json!({"a": 1.5})),
            Err(Error::NonIntegerNumber)
        ));
        assert!(matches!(
            from_slice(br#"{"a": 1.5}"#),
            Err(Error::NonIntegerNumber)
        ));
        assert!(matches!(
            from_slice(br#"[[{"a": [0.1]}]]"#),
            Err(Error::NonIntegerNumber)
        ));
    }

    #[test]
    fn integer_beyond_two_to_the_53_minus_one_is_refused() {
        for input in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
            "-9223372036854775808",
            "1e300",
            "123456789012345678901234567890",
        ] {
            assert!(
                matches!(from_slice(input.as_bytes()), Err(Error::IntegerOutOfRange)),
                "{input}"
            );
        }
        assert!(matches!(
            to_vec(&json!(9007199254740992u64)),
            Err(Error::IntegerOutOfRange)
        ));
        assert!(matches!(
            to_vec(&json!(u64::MAX)),
            Err(Error::IntegerOutOfRange)
        ));
        assert!(matches!(
            to_vec(&json!(i64::MIN)),
            Err(Error::IntegerOutOfRange)
        ));
    }

    #[test]
    fn duplicate_keys_are_refused_by_the_strict_parser() {
        match from_slice(br#"{"a": 1, "b": {"c": 1, "c": 2}}"#) {
            Err(Error::DuplicateKey(k)) => assert_eq!(k, "c"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_not_json() {
        for input in [
            "",
            "{",
            "{\"a\":1}x",
            "{'a':1}",
            "[1,]",
            "\"\\ud800\"",
            "NaN",
        ] {
            assert!(
                matches!(from_slice(input.as_bytes()), Err(Error::NotJson(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn object_from_slice_refuses_non_objects() {
        assert!(matches!(object_from_slice(b"[1]"), Err(Error::BadJson(_))));
        assert!(object_from_slice(b"{}").unwrap().is_empty());
    }

    #[test]
    fn serialize_encodes_typed_values() {
        #[derive(Serialize)]
        struct T {
            z: u32,
            a: &'static str,
        }
        assert_eq!(
            serialize(&T { z: 1, a: "x" }).unwrap(),
            br#"{"a":"x","z":1}"#
        );
    }
}
