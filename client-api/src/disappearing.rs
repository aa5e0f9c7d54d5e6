//! Disappearing messages (docs/protocol.md#disappearing-messages): a group's message timer,
//! held in an MLS group-context extension that only admins' commits may change (in a group
//! with roles), like the join rules.
//!
//! Every member deletes its local copy of a message once the timer of the epoch it arrived
//! in has passed; the hub stamps each application message it accepts with `expires_ts`
//! (accepted + timer), never delivers it to a device after that, and wipes its ciphertext.

use serde::{Deserialize, Serialize};

/// The MLS extension type of the disappearing-messages extension (RFC 9420 private-use
/// range). A group with the timer also lists it in its `required_capabilities`, so a device
/// that does not understand it cannot be added.
pub const DISAPPEARING_EXTENSION_TYPE: u16 = 0xFA52;

/// Shortest timer (1 second) and longest (one year), in milliseconds.
pub const TIMER_MS: std::ops::RangeInclusive<u64> = 1_000..=31_536_000_000;

/// The body of the disappearing-messages extension: `{"after_ms":N}`. A group without the
/// extension keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disappearing {
    /// How long after it was sent a message disappears.
    pub after_ms: u64,
}

/// Why a timer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisappearingError {
    /// The extension's bytes are not a valid body.
    #[error("malformed disappearing-messages timer: {0}")]
    Malformed(String),
    /// Outside [`TIMER_MS`].
    #[error("the disappearing-messages timer must be between 1 second and 1 year, not {0} ms")]
    OutOfRange(u64),
}

impl Disappearing {
    /// A timer of `after_ms`, checked against [`TIMER_MS`].
    pub fn new(after_ms: u64) -> Result<Disappearing, DisappearingError> {
        if !TIMER_MS.contains(&after_ms) {
            return Err(DisappearingError::OutOfRange(after_ms));
        }
        Ok(Disappearing { after_ms })
    }

    /// The canonical JSON body.
    pub fn encode(&self) -> Vec<u8> {
        format!("{{\"after_ms\":{}}}", self.after_ms).into_bytes()
    }

    /// Reads a body: canonical JSON only (what [`Disappearing::encode`] makes), in range.
    pub fn decode(bytes: &[u8]) -> Result<Disappearing, DisappearingError> {
        let parsed: Disappearing = serde_json::from_slice(bytes)
            .map_err(|e| DisappearingError::Malformed(e.to_string()))?;
        if parsed.encode() != bytes {
            return Err(DisappearingError::Malformed("not canonical JSON".into()));
        }
        Disappearing::new(parsed.after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_round_trip_and_bad_bodies_are_refused() {
        let t = Disappearing::new(3_600_000).unwrap();
        assert_eq!(t.encode(), b"{\"after_ms\":3600000}");
        assert_eq!(Disappearing::decode(&t.encode()), Ok(t));
        for bad in [
            &b"{\"after_ms\": 3600000}"[..],
            b"{\"after_ms\":3600000,\"x\":1}",
            b"{\"after_ms\":999}",
            b"{\"after_ms\":31536000001}",
            b"{}",
            b"null",
            b"",
        ] {
            assert!(Disappearing::decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Disappearing::new(0), Err(DisappearingError::OutOfRange(0)));
    }
}
