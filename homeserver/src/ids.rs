//! Identifiers as the protocol spells them: server names (compared without regard to case),
//! user ids, device credential identities, group ids, transaction ids, federation paths.

use parley_client_api::ids::{GroupId, UserId};
use rand::RngCore;

/// Whether two server names are the same server (DNS names: case does not matter).
pub fn same_server(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The server name of a user id: after the first `:`, where [`UserId::server_name`] reads it
/// too (a localpart has no `:`), without validating the rest.
pub fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

/// `@user:server/DEVICE`, the MLS credential identity of a device.
pub fn identity(user_id: &str, device_id: &str) -> String {
    format!("{user_id}/{device_id}")
}

/// Splits a credential identity at its last `/`.
pub fn split_identity(identity: &str) -> Option<(&str, &str)> {
    identity.rsplit_once('/')
}

/// A string that is not a group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a group id")]
pub struct NotAGroupId;

/// Whether `user_id` is a valid user id of server `own`.
pub fn is_local(own: &str, user_id: &str) -> bool {
    UserId::parse(user_id).is_ok_and(|u| same_server(u.server_name(), own))
}

/// The hub server of a group when it is another server than `own`; `None` when `own` is the
/// hub.
pub fn remote_hub<'g>(own: &str, group: &'g GroupId) -> Option<&'g str> {
    (!same_server(group.hub(), own)).then(|| group.hub())
}

/// [`remote_hub`] of a group id read from a string; [`NotAGroupId`] for one that is not.
pub fn hub_of(own: &str, group_id: &str) -> Result<Option<String>, NotAGroupId> {
    let group = GroupId::parse(group_id).map_err(|_| NotAGroupId)?;
    Ok(remote_hub(own, &group).map(str::to_owned))
}
/// A random identifier of `len` characters from `alphabet`.
pub fn random_id(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| {
            let i = (rng.next_u32() as usize) % alphabet.len();
            char::from(alphabet[i])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_split_at_the_last_slash_so_ports_survive() {
        assert_eq!(
            split_identity("@a:h.example:8448/DEV"),
            Some(("@a:h.example:8448", "DEV"))
        );
    }

    #[test]
    fn a_group_id_names_its_hub_and_case_does_not_matter() {
        assert_eq!(hub_of("a.example", "!x:A.example").ok(), Some(None));
        assert_eq!(
            hub_of("a.example", "!x:b.example:8448").ok(),
            Some(Some("b.example:8448".to_owned()))
        );
        assert!(hub_of("a.example", "x:b.example").is_err());
    }
}
