//! Group roles (docs/protocol.md#group-roles): the admins of a group, held in an MLS
//! group-context extension, and the one rule about what a commit by a non-admin may do.
//!
//! The hub and every client apply [`check_commit`] to the same facts (the roles of the epoch
//! the commit was made in, and the commit's membership change by user), so a commit the hub
//! accepts is one every honest client merges.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// The MLS extension type of the roles extension (RFC 9420 private-use range). A group with
/// roles also lists it in its `required_capabilities`, so a device whose leaf does not
/// support it cannot be added.
pub const ROLES_EXTENSION_TYPE: u16 = 0xFA50;

/// Most admins one group may name.
pub const MAX_ADMINS: usize = 256;

/// Largest encoded roles extension accepted (256 user ids of 255 bytes, with JSON framing).
pub const MAX_ROLES_BYTES: usize = 72 * 1024;

/// The body of the roles extension: `{"admins":["@alice:a.example",…]}`, user ids sorted and
/// unique, at least one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRoles {
    /// The users whose devices may change the group's membership and settings.
    pub admins: Vec<String>,
}

/// Why a roles extension or a commit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The extension's bytes are not a valid roles body.
    #[error("malformed roles extension: {0}")]
    Malformed(String),
    /// A non-admin's commit adds a user who was not a member.
    #[error("only an admin may add {0} to the group")]
    AddsUser(String),
    /// A non-admin's commit removes another user from the group.
    #[error("only an admin may remove {0} from the group")]
    RemovesUser(String),
    /// A non-admin's commit changes the group context (roles or settings).
    #[error("only an admin may change the group's roles or settings")]
    ChangesSettings,
}

impl GroupRoles {
    /// Roles naming `admins` (sorted and deduplicated).
    pub fn new<I, S>(admins: I) -> GroupRoles
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: BTreeSet<String> = admins.into_iter().map(Into::into).collect();
        GroupRoles {
            admins: set.into_iter().collect(),
        }
    }

    /// The extension's bytes: canonical JSON.
    pub fn encode(&self) -> Vec<u8> {
        let canonical = GroupRoles::new(self.admins.iter().cloned());
        serde_json::to_vec(&canonical).unwrap_or_default()
    }

    /// Reads and checks an extension body: JSON of this shape, 1 to [`MAX_ADMINS`] valid user
    /// ids, sorted and unique (so that every reader sees the same bytes as the same roles).
    pub fn decode(bytes: &[u8]) -> Result<GroupRoles, RoleError> {
        if bytes.len() > MAX_ROLES_BYTES {
            return Err(RoleError::Malformed(format!(
                "{} bytes, more than {MAX_ROLES_BYTES}",
                bytes.len()
            )));
        }
        let roles: GroupRoles =
            serde_json::from_slice(bytes).map_err(|e| RoleError::Malformed(e.to_string()))?;
        if roles.admins.is_empty() || roles.admins.len() > MAX_ADMINS {
            return Err(RoleError::Malformed(format!(
                "between 1 and {MAX_ADMINS} admins are needed, not {}",
                roles.admins.len()
            )));
        }
        for user in &roles.admins {
            UserId::parse(user).map_err(|e| RoleError::Malformed(format!("{user}: {e}")))?;
        }
        if roles.admins.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RoleError::Malformed(
                "admins must be sorted and unique".into(),
            ));
        }
        Ok(roles)
    }

    /// Whether `user` is an admin of a group whose member users are `members`. When no member
    /// is an admin any more (the last one left), every member counts as one, so that the group
    /// can still be managed.
    pub fn is_admin(&self, user: &str, members: &BTreeSet<&str>) -> bool {
        let any_admin_member = self.admins.iter().any(|a| members.contains(a.as_str()));
        if any_admin_member {
            self.admins.iter().any(|a| a == user)
        } else {
            members.contains(user)
        }
    }
}

/// A device a commit removes, with the user whose device proposed its removal (the committer's
/// for a Remove carried in the commit itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedDevice<'a> {
    /// The removed device's user.
    pub user: &'a str,
    /// The user who proposed the removal.
    pub proposer: &'a str,
}

/// A commit's effect, by user, as [`check_commit`] judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitByUsers<'a> {
    /// The committer's user.
    pub committer: &'a str,
    /// Users with a device in the group before the commit.
    pub members_before: BTreeSet<&'a str>,
    /// Users of the devices it adds.
    pub added: Vec<&'a str>,
    /// The devices it removes.
    pub removed: Vec<RemovedDevice<'a>>,
    /// Whether it carries a GroupContextExtensions proposal.
    pub changes_context: bool,
}

/// Whether a commit by `c.committer` is allowed under `roles` (the roles of the epoch it was
/// made in; `None` when the group has none, and then anything is). `leaves_group(user)` says
/// whether the commit removes every device `user` has in the group.
///
/// An admin may do anything. Anyone else may only: add devices of users who are already
/// members; remove devices of a user who keeps another device in the group; remove devices
/// whose own user proposed their removal (leaving). A non-admin may never change the group
/// context, roles or settings.
pub fn check_commit(
    roles: Option<&GroupRoles>,
    c: &CommitByUsers<'_>,
    leaves_group: impl Fn(&str) -> bool,
) -> Result<(), RoleError> {
    let Some(roles) = roles else {
        return Ok(());
    };
    if roles.is_admin(c.committer, &c.members_before) {
        return Ok(());
    }
    if c.changes_context {
        return Err(RoleError::ChangesSettings);
    }
    if let Some(user) = c.added.iter().find(|u| !c.members_before.contains(*u)) {
        return Err(RoleError::AddsUser((*user).to_owned()));
    }
    for r in &c.removed {
        if r.proposer != r.user && leaves_group(r.user) {
            return Err(RoleError::RemovesUser(r.user.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users<'a>(list: &[&'a str]) -> BTreeSet<&'a str> {
        list.iter().copied().collect()
    }

    fn commit<'a>(committer: &'a str) -> CommitByUsers<'a> {
        CommitByUsers {
            committer,
            members_before: users(&["@alice:a", "@bob:b", "@carol:a"]),
            added: Vec::new(),
            removed: Vec::new(),
            changes_context: false,
        }
    }

    #[test]
    fn roles_round_trip_canonically_and_refuse_bad_bodies() {
        let roles = GroupRoles::new(["@bob:b", "@alice:a", "@bob:b"]);
        assert_eq!(roles.admins, ["@alice:a", "@bob:b"]);
        let bytes = roles.encode();
        assert_eq!(bytes, br#"{"admins":["@alice:a","@bob:b"]}"#);
        assert_eq!(GroupRoles::decode(&bytes).unwrap(), roles);
        for bad in [
            &br#"{"admins":[]}"#[..],
            br#"{"admins":["@b:b","@a:a"]}"#,
            br#"{"admins":["@a:a","@a:a"]}"#,
            br#"{"admins":["alice"]}"#,
            br#"{"admins":["@a:a"],"x":1}"#,
            b"[1]",
            b"\xff",
        ] {
            assert!(
                matches!(GroupRoles::decode(bad), Err(RoleError::Malformed(_))),
                "{bad:?}"
            );
        }
        let many = GroupRoles::new((0..=MAX_ADMINS).map(|i| format!("@u{i:04}:a")));
        assert!(GroupRoles::decode(&many.encode()).is_err());
    }

    #[test]
    fn without_roles_anything_goes() {
        let mut c = commit("@bob:b");
        c.added = vec!["@dave:d"];
        c.changes_context = true;
        assert_eq!(check_commit(None, &c, |_| true), Ok(()));
    }

    #[test]
    fn an_admin_may_add_remove_and_change_settings() {
        let roles = GroupRoles::new(["@alice:a"]);
        let mut c = commit("@alice:a");
        c.added = vec!["@dave:d"];
        c.removed = vec![RemovedDevice {
            user: "@bob:b",
            proposer: "@alice:a",
        }];
        c.changes_context = true;
        assert_eq!(check_commit(Some(&roles), &c, |_| true), Ok(()));
    }

    #[test]
    fn a_member_may_not_add_users_remove_users_or_change_settings() {
        let roles = GroupRoles::new(["@alice:a"]);
        let mut c = commit("@bob:b");
        c.added = vec!["@dave:d"];
        assert_eq!(
            check_commit(Some(&roles), &c, |_| true),
            Err(RoleError::AddsUser("@dave:d".into()))
        );
        let mut c = commit("@bob:b");
        c.removed = vec![RemovedDevice {
            user: "@carol:a",
            proposer: "@bob:b",
        }];
        assert_eq!(
            check_commit(Some(&roles), &c, |_| true),
            Err(RoleError::RemovesUser("@carol:a".into()))
        );
        let mut c = commit("@bob:b");
        c.changes_context = true;
        assert_eq!(
            check_commit(Some(&roles), &c, |_| true),
            Err(RoleError::ChangesSettings)
        );
    }

    #[test]
    fn a_member_may_follow_devices_and_commit_someone_leaving() {
        let roles = GroupRoles::new(["@alice:a"]);
        let mut c = commit("@bob:b");
        // carol's new device, and a device of alice's she keeps another of.
        c.added = vec!["@carol:a"];
        c.removed = vec![
            RemovedDevice {
                user: "@alice:a",
                proposer: "@bob:b",
            },
            // carol proposed her own removal: she is leaving.
            RemovedDevice {
                user: "@carol:a",
                proposer: "@carol:a",
            },
        ];
        assert_eq!(check_commit(Some(&roles), &c, |u| u == "@carol:a"), Ok(()));
    }

    #[test]
    fn when_no_admin_is_left_every_member_counts_as_one() {
        let roles = GroupRoles::new(["@zed:z"]);
        let mut c = commit("@bob:b");
        c.added = vec!["@dave:d"];
        assert_eq!(check_commit(Some(&roles), &c, |_| true), Ok(()));
    }
}
