//! Base64 for federation keys and signatures (docs/protocol.md#base64).
//!
//! Federation public keys, signatures and the key file's seed are **unpadded standard
//! base64** (RFC 4648 §4 alphabet, no `=`), as in Matrix. [`encode`] always writes that form.
//!
//! [`decode`] accepts the standard alphabet **with or without** padding, as the Matrix
//! specification asks of decoders ("SHOULD accept input with or without padding"): a
//! signature's meaning does not depend on its encoding, and the bytes are what is verified.
//! It refuses everything else: the URL-safe alphabet, white space, padding in the wrong
//! place, and non-zero trailing bits (so each byte string has exactly one unpadded spelling).
//!
//! Everything *inside* bodies (MLS bytes, device signature keys) is padded standard base64;
//! [`encode_padded`] / [`decode_padded`] cover that, with padding required.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;

use crate::{Error, Result};

/// Encodes `bytes` as unpadded standard base64.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64, unpadded or with complete padding.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>> {
    let text = text.as_ref();
    // Either no `=` at all, or exactly the canonical padding (`Zg=` is refused).
    let engine = if text.ends_with(b"=") {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(text).map_err(|_| Error::Base64)
}

/// Decodes standard base64 (padded or not) into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: impl AsRef<[u8]>) -> Result<[u8; N]> {
    let bytes = decode(text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| Error::Base64)
}

/// Encodes `bytes` as padded standard base64 (the form used inside bodies).
pub fn encode_padded(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes padded standard base64; missing padding is an error.
pub fn decode_padded(text: impl AsRef<[u8]>) -> Result<Vec<u8>> {
    STANDARD.decode(text).map_err(|_| Error::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Matrix specification's unpadded base64 examples.
    const EXAMPLES: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn encode_matches_matrix_unpadded_examples() {
        for (plain, encoded) in EXAMPLES {
            assert_eq!(encode(plain), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn decode_accepts_padded_input_too() {
        assert_eq!(decode("Zg==").unwrap(), b"f");
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
    }

    #[test]
    fn decode_refuses_url_safe_alphabet_whitespace_and_bad_padding() {
        for bad in [
            "-_-_", "+/+", "Zm 9v", "Zm9v\n", "Z", "Zg=", "Zg===", "=Zg", "Zh",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn decode_array_requires_the_exact_length() {
        assert_eq!(decode_array::<3>("Zm9v").unwrap(), *b"foo");
        assert!(decode_array::<4>("Zm9v").is_err());
    }

    #[test]
    fn padded_helpers_require_padding() {
        assert_eq!(encode_padded("f"), "Zg==");
        assert_eq!(decode_padded("Zg==").unwrap(), b"f");
        assert!(decode_padded("Zg").is_err());
    }
}
