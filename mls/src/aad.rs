//! Application-message AAD (docs/protocol.md#mls-rules) and the per-group replay window.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{MlsError, Result};

/// The authenticated data of an application message. Encoded as canonical JSON:
/// `{"epoch":N,"fork_check":"<32 hex>","group_id":"...","msg_id":"<uuid v4>","ts":ms}` — keys
/// sorted, no white space, strings escaped as serde_json does. `fork_check`
/// ([`fork_check_of`]) lets a receiver tell a fork from a corrupt message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aad {
    /// The MLS epoch the message is sent in.
    pub epoch: u64,
    /// The sender's [`fork_check_of`] its epoch authenticator for `epoch` (absent from
    /// senders before fork detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_check: Option<String>,
    /// The group id `!opaque:server`.
    pub group_id: String,
    /// Random UUID v4, unique per message within the group.
    pub msg_id: String,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// What members compare to detect a fork (docs/protocol.md#fork-recovery): the first 16
/// bytes of SHA-256(`"parley fork check v1"` ‖ epoch authenticator), lower-case hex. Carried
/// in every application message's AAD, readable without decrypting it; the epoch
/// authenticator itself never leaves the device.
pub fn fork_check_of(epoch_authenticator: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"parley fork check v1")
        .chain_update(epoch_authenticator)
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest integer allowed in canonical JSON (2^53 − 1).
const MAX_SAFE_INT: u64 = (1 << 53) - 1;

impl Aad {
    /// Canonical JSON bytes (field order of the struct is the sorted key order).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.epoch > MAX_SAFE_INT || self.ts > MAX_SAFE_INT {
            return Err(MlsError::BadAad("integer out of canonical range".into()));
        }
        serde_json::to_vec(self).map_err(|e| MlsError::BadAad(e.to_string()))
    }

    /// Parses AAD bytes and insists they are exactly the canonical encoding with a UUID v4.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let aad: Aad =
            serde_json::from_slice(bytes).map_err(|e| MlsError::BadAad(e.to_string()))?;
        if aad.encode()? != bytes {
            return Err(MlsError::BadAad("not canonical JSON".into()));
        }
        let id = uuid::Uuid::try_parse(&aad.msg_id)
            .map_err(|_| MlsError::BadAad("msg_id is not a UUID".into()))?;
        if id.get_version_num() != 4 || id.hyphenated().to_string() != aad.msg_id {
            return Err(MlsError::BadAad(
                "msg_id is not a lower-case UUID v4".into(),
            ));
        }
        Ok(aad)
    }
}

/// Formats 16 random bytes as a lower-case hyphenated UUID v4.
pub(crate) fn uuid_v4(random: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `msg_id`s seen in a group, per epoch. Epochs older than the decryptable window are
/// dropped, since MLS refuses their messages anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplayWindow {
    seen: BTreeMap<u64, BTreeSet<String>>,
}

impl ReplayWindow {
    /// Records `msg_id` for `epoch`; an id seen before (in any kept epoch) is a replay.
    pub(crate) fn check_and_insert(
        &mut self,
        epoch: u64,
        msg_id: &str,
        current_epoch: u64,
        max_past_epochs: usize,
    ) -> Result<()> {
        if self.seen.values().any(|ids| ids.contains(msg_id)) {
            return Err(MlsError::Replay(msg_id.to_owned()));
        }
        self.seen
            .entry(epoch)
            .or_default()
            .insert(msg_id.to_owned());
        let floor = current_epoch.saturating_sub(max_past_epochs as u64);
        self.seen.retain(|e, _| *e >= floor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Aad {
        Aad {
            epoch: 3,
            fork_check: None,
            group_id: "!abcdefgh:example.org".into(),
            msg_id: uuid_v4([7; 16]),
            ts: 1_700_000_000_000,
        }
    }

    #[test]
    fn aad_encodes_as_sorted_compact_json() {
        let a = sample();
        let text = String::from_utf8(a.encode().unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"epoch\":3,\"group_id\":\"!abcdefgh:example.org\",\"msg_id\":\"{}\",\"ts\":1700000000000}}",
                a.msg_id
            )
        );
        assert_eq!(Aad::decode(text.as_bytes()).unwrap(), a);
    }

    #[test]
    fn non_canonical_or_foreign_aad_is_refused() {
        let a = sample();
        let spaced = format!(
            "{{\"epoch\": 3,\"group_id\":\"{}\",\"msg_id\":\"{}\",\"ts\":1700000000000}}",
            a.group_id, a.msg_id
        );
        assert!(Aad::decode(spaced.as_bytes()).is_err());
        let reordered = format!(
            "{{\"group_id\":\"{}\",\"epoch\":3,\"msg_id\":\"{}\",\"ts\":1700000000000}}",
            a.group_id, a.msg_id
        );
        assert!(Aad::decode(reordered.as_bytes()).is_err());
        let extra = format!(
            "{{\"epoch\":3,\"extra\":1,\"group_id\":\"{}\",\"msg_id\":\"{}\",\"ts\":1}}",
            a.group_id, a.msg_id
        );
        assert!(Aad::decode(extra.as_bytes()).is_err());
        let not_v4 = Aad {
            msg_id: "00000000-0000-1000-8000-000000000000".into(),
            ..a
        };
        assert!(Aad::decode(&not_v4.encode().unwrap()).is_err());
    }

    #[test]
    fn replay_window_refuses_repeats_and_forgets_old_epochs() {
        let mut w = ReplayWindow::default();
        w.check_and_insert(1, "a", 1, 2).unwrap();
        assert!(matches!(
            w.check_and_insert(1, "a", 1, 2),
            Err(MlsError::Replay(_))
        ));
        w.check_and_insert(5, "b", 5, 2).unwrap();
        assert!(!w.seen.contains_key(&1));
    }
}
