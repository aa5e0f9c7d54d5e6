//! The scenarios, one file per group. To add a test: write an
//! `async fn behaviour_stated_as_a_name(mut ctx: Ctx) -> anyhow::Result<()>` in the file of its
//! group and add its name to that file's `tests!` list (a new file also goes into
//! `registry::all`).

pub mod accounts;
pub mod delivery;
pub mod disappearing;
pub mod federation;
pub mod forks;
pub mod groups;
pub mod hostile;
pub mod hygiene;
pub mod join_links;
pub mod keys;
pub mod media;
pub mod ratelimit;
pub mod registration;
pub mod restart;
pub mod roles;
pub mod tokens;
pub mod versions;

/// Paths used by several groups.
pub mod paths {
    use parley_client_api::{accounts, versions, Endpoint};

    /// `GET`, no token.
    pub const VERSIONS: &str = <versions::GetVersions as Endpoint>::PATH;
    /// `POST`, no token.
    pub const REGISTER: &str = <accounts::Register as Endpoint>::PATH;
    /// `POST`, no token.
    pub const LOGIN: &str = <accounts::Login as Endpoint>::PATH;
    /// `GET`, token.
    pub const WHOAMI: &str = <accounts::WhoAmI as Endpoint>::PATH;
    /// `POST`, token.
    pub const LOGOUT: &str = <accounts::Logout as Endpoint>::PATH;
    /// `GET`, token.
    pub const DEVICES: &str = <accounts::ListDevices as Endpoint>::PATH;
}

/// The password every scenario account uses (the test device's).
pub use crate::device::PASSWORD;

/// The server's name: the one it was started with, or what `GET /versions` says (`--server`).
pub async fn server_name_of(hs: &crate::fixture::Server) -> anyhow::Result<String> {
    if let Some(name) = hs.server_name() {
        return Ok(name.to_owned());
    }
    let versions = crate::check::expect_ok(hs.client().versions().await, "GET /versions")?;
    Ok(versions.server_name)
}

/// `user`'s devices as `client` gets them from `GET /users/{id}/devices`: (device id, base64
/// signature key) pairs, in the listed order; `what` names the request in an error.
pub async fn device_keys_of(
    client: &parley_client_api::client::Client,
    user: &str,
    what: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let listed = crate::check::expect_ok(client.user_devices(user).await, what)?;
    Ok(listed
        .devices
        .into_iter()
        .map(|d| (d.device_id, d.signature_key))
        .collect())
}

/// Whether `group_id` is `!opaque:server` with an opaque part of 8–64 `[A-Za-z0-9_-]`.
pub fn is_valid_group_id(group_id: &str, server: &str) -> bool {
    let Some((opaque, hub)) = group_id
        .strip_prefix('!')
        .and_then(|rest| rest.split_once(':'))
    else {
        return false;
    };
    hub == server
        && (8..=64).contains(&opaque.len())
        && opaque
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
