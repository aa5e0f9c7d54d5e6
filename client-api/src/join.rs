//! Join links (docs/protocol.md#join-links): a group's join rules, held in an MLS
//! group-context extension that only admins' commits may change, and how a user outside the
//! group joins it by external commit with the link's code.
//!
//! The hub and every member apply [`JoinRules::admits`] to the same facts (the rules of the
//! epoch the join was made in, the joiner's user and the code in the external commit's
//! authenticated data), so a join the hub accepts is one every honest member merges.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, UserId};

/// The MLS extension type of the join-rules extension (RFC 9420 private-use range). A group
/// with join rules also lists it in its `required_capabilities`.
pub const JOIN_RULES_EXTENSION_TYPE: u16 = 0xFA51;

/// Most users one group may ban.
pub const MAX_BANNED: usize = 1000;

/// Largest encoded join-rules extension accepted (1,000 user ids of 255 bytes, with framing).
pub const MAX_JOIN_RULES_BYTES: usize = 280 * 1024;

/// Shortest and longest join code (`[A-Za-z0-9_-]`; engines make 22 characters, 128 bits).
pub const JOIN_CODE_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// The body of the join-rules extension: `{"banned":[…],"code":"…"}`, user ids sorted and
/// unique. With a `code` the group is joinable by whoever holds a link with that code (and is
/// not banned); without one nobody can join it by link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRules {
    /// Users who may not join by link.
    #[serde(default)]
    pub banned: Vec<String>,
    /// The current join code; changing it revokes every link handed out before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Why join rules, a link or a join are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The extension's bytes are not a valid join-rules body.
    #[error("malformed join rules: {0}")]
    Malformed(String),
    /// The group has no join code: joining by link is off.
    #[error("the group is not joinable by link")]
    NotJoinable,
    /// The code is not the group's current one (never valid, or rotated since).
    #[error("the join link is not valid for this group any more")]
    WrongCode,
    /// The joiner is banned from the group.
    #[error("{0} is banned from the group")]
    Banned(String),
    /// A join link that does not parse.
    #[error("not a join link: {0}")]
    BadLink(String),
}

impl JoinRules {
    /// Rules with `code` and the `banned` users (sorted and deduplicated).
    pub fn new<I, S>(code: Option<String>, banned: I) -> JoinRules
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: BTreeSet<String> = banned.into_iter().map(Into::into).collect();
        JoinRules {
            banned: set.into_iter().collect(),
            code,
        }
    }

    /// The extension's bytes: canonical JSON.
    pub fn encode(&self) -> Vec<u8> {
        let canonical = JoinRules::new(self.code.clone(), self.banned.iter().cloned());
        serde_json::to_vec(&canonical).unwrap_or_default()
    }

    /// Reads and checks an extension body: exactly the canonical encoding, at most
    /// [`MAX_BANNED`] valid user ids, a code of [`JOIN_CODE_LEN`] URL-safe characters.
    pub fn decode(bytes: &[u8]) -> Result<JoinRules, JoinError> {
        if bytes.len() > MAX_JOIN_RULES_BYTES {
            return Err(JoinError::Malformed(format!(
                "{} bytes, more than {MAX_JOIN_RULES_BYTES}",
                bytes.len()
            )));
        }
        let rules: JoinRules =
            serde_json::from_slice(bytes).map_err(|e| JoinError::Malformed(e.to_string()))?;
        if rules.banned.len() > MAX_BANNED {
            return Err(JoinError::Malformed(format!(
                "at most {MAX_BANNED} banned users, not {}",
                rules.banned.len()
            )));
        }
        for user in &rules.banned {
            UserId::parse(user).map_err(|e| JoinError::Malformed(format!("{user}: {e}")))?;
        }
        if let Some(code) = &rules.code {
            check_code(code)?;
        }
        if rules.encode() != bytes {
            return Err(JoinError::Malformed(
                "not canonical JSON (banned sorted and unique, no white space)".into(),
            ));
        }
        Ok(rules)
    }

    /// Whether `user` may join with `code`: the group has a code, `code` is it (compared in
    /// constant time) and `user` is not banned.
    pub fn admits(&self, user: &str, code: &str) -> Result<(), JoinError> {
        let Some(current) = &self.code else {
            return Err(JoinError::NotJoinable);
        };
        if !constant_time_eq(current.as_bytes(), code.as_bytes()) {
            return Err(JoinError::WrongCode);
        }
        if self.banned.iter().any(|b| b == user) {
            return Err(JoinError::Banned(user.to_owned()));
        }
        Ok(())
    }
}

/// Checks a join code's length and alphabet.
pub fn check_code(code: &str) -> Result<(), JoinError> {
    let ok = JOIN_CODE_LEN.contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(JoinError::Malformed(format!(
            "a join code is {}–{} characters of [A-Za-z0-9_-]",
            JOIN_CODE_LEN.start(),
            JOIN_CODE_LEN.end()
        )))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The authenticated data of an external commit that joins by link:
/// `{"join_code":"…"}` (canonical JSON), so that the hub and every member check the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinAad {
    /// The code of the link the joiner used.
    pub join_code: String,
}

impl JoinAad {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the bytes an external commit carries; only the canonical form is accepted.
    pub fn decode(bytes: &[u8]) -> Result<JoinAad, JoinError> {
        let aad: JoinAad =
            serde_json::from_slice(bytes).map_err(|e| JoinError::Malformed(e.to_string()))?;
        check_code(&aad.join_code)?;
        if aad.encode() != bytes {
            return Err(JoinError::Malformed(
                "join AAD is not canonical JSON".into(),
            ));
        }
        Ok(aad)
    }
}

/// A join link: `parley:!opaque:hub.example?via=hub.example&code=CODE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// The group.
    pub group_id: GroupId,
    /// The group's join code when the link was made.
    pub code: String,
}

impl JoinLink {
    /// The link's text.
    pub fn format(&self) -> String {
        format!(
            "parley:{}?via={}&code={}",
            self.group_id.as_str(),
            self.group_id.hub(),
            self.code
        )
    }

    /// Parses a link (the `parley:` prefix may be left out; `via`, if present, must be the
    /// group's hub).
    pub fn parse(link: &str) -> Result<JoinLink, JoinError> {
        let bad = |why: &str| JoinError::BadLink(why.to_owned());
        let link = link.trim();
        let rest = link.strip_prefix("parley:").unwrap_or(link);
        let (gid, query) = rest.split_once('?').ok_or_else(|| bad("no ?code="))?;
        let group_id = GroupId::parse(gid).map_err(|e| bad(&e.to_string()))?;
        let mut code = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("code", c)) if code.is_none() => code = Some(c.to_owned()),
                Some(("via", v)) if v.eq_ignore_ascii_case(group_id.hub()) => {}
                Some(("via", _)) => return Err(bad("via is not the group's server")),
                _ => return Err(bad("unknown or repeated parameter")),
            }
        }
        let code = code.ok_or_else(|| bad("no code"))?;
        check_code(&code).map_err(|_| bad("bad code"))?;
        Ok(JoinLink { group_id, code })
    }
}

/// Body of `POST /groups/{group_id}/join_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinInfoRequest {
    /// The code from the join link.
    pub code: String,
}

/// Response of `POST /groups/{group_id}/join_info`: what a joiner needs for an external
/// commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinInfoResponse {
    /// Base64 `MLSMessage` GroupInfo of the group's current epoch, ratchet tree and
    /// external public key included.
    pub group_info: String,
    /// The epoch it describes (the group's current one).
    pub epoch: u64,
}

crate::endpoint! {
    /// The current GroupInfo of a joinable group, for a user holding its join link, to join
    /// by external commit (submitted with `POST /groups/{group_id}/commit`).
    GroupJoinInfo: Post "/_parley/client/v1/groups/{group_id}/join_info",
    auth AccessToken, rate GroupCreate, body Default, path crate::params::GroupPath,
    JoinInfoRequest => JoinInfoResponse, errors [NotFound, JoinRefused, UnreachableServer]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "abcdefghijklmnopqrstuv";

    #[test]
    fn join_rules_round_trip_canonically_and_refuse_bad_bodies() {
        let rules = JoinRules::new(Some(CODE.into()), ["@b:b", "@a:a", "@b:b"]);
        let bytes = rules.encode();
        assert_eq!(
            bytes,
            br#"{"banned":["@a:a","@b:b"],"code":"abcdefghijklmnopqrstuv"}"#
        );
        assert_eq!(JoinRules::decode(&bytes).unwrap(), rules);
        assert_eq!(
            JoinRules::decode(br#"{"banned":[]}"#).unwrap(),
            JoinRules::default()
        );
        for bad in [
            &br#"{"banned":["@b:b","@a:a"]}"#[..],
            br#"{"banned":[],"code":"short"}"#,
            br#"{"banned":[],"code":"has spaces in it, see?"}"#,
            br#"{"banned":["alice"]}"#,
            br#"{"banned":[],"x":1}"#,
            br#"{ "banned":[]}"#,
            b"[1]",
        ] {
            assert!(
                JoinRules::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn admits_only_the_current_code_and_no_banned_user() {
        let rules = JoinRules::new(Some(CODE.into()), ["@mallory:m"]);
        assert_eq!(rules.admits("@dave:d", CODE), Ok(()));
        assert_eq!(
            rules.admits("@dave:d", "abcdefghijklmnopqrstuw"),
            Err(JoinError::WrongCode)
        );
        assert!(matches!(
            rules.admits("@mallory:m", CODE),
            Err(JoinError::Banned(_))
        ));
        let closed = JoinRules::new(None, Vec::<String>::new());
        assert_eq!(closed.admits("@dave:d", CODE), Err(JoinError::NotJoinable));
    }

    #[test]
    fn join_links_format_and_parse() {
        let link = JoinLink {
            group_id: GroupId::parse("!abcdefgh:hub.example").unwrap(),
            code: CODE.into(),
        };
        let text = link.format();
        assert_eq!(
            text,
            "parley:!abcdefgh:hub.example?via=hub.example&code=abcdefghijklmnopqrstuv"
        );
        assert_eq!(JoinLink::parse(&text).unwrap(), link);
        assert_eq!(
            JoinLink::parse(&format!("  !abcdefgh:hub.example?code={CODE}\n")).unwrap(),
            link
        );
        for bad in [
            "parley:!abcdefgh:hub.example",
            "parley:!abcdefgh:hub.example?via=other.example&code=abcdefghijklmnopqrstuv",
            "parley:!abcdefgh:hub.example?code=abc",
            "parley:!abcdefgh:hub.example?code=abcdefghijklmnopqrstuv&code=abcdefghijklmnopqrstuv",
            "parley:nope?code=abcdefghijklmnopqrstuv",
        ] {
            assert!(JoinLink::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn join_aad_is_canonical() {
        let aad = JoinAad {
            join_code: CODE.into(),
        };
        let bytes = aad.encode();
        assert_eq!(bytes, br#"{"join_code":"abcdefghijklmnopqrstuv"}"#);
        assert_eq!(JoinAad::decode(&bytes).unwrap(), aad);
        assert!(JoinAad::decode(br#"{ "join_code":"abcdefghijklmnopqrstuv"}"#).is_err());
        assert!(JoinAad::decode(br#"{"join_code":"x"}"#).is_err());
        assert!(JoinAad::decode(b"").is_err());
    }
}
