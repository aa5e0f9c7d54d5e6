//! The scenarios, one file per group. To add a test: write an
//! `async fn behaviour_stated_as_a_name(mut ctx: Ctx) -> anyhow::Result<()>` in the file of its
//! group and add its name to that file's `tests!` list (a new file also goes into
//! `registry::all`).

pub mod accounts;
pub mod hygiene;
pub mod ratelimit;
pub mod registration;
pub mod restart;
pub mod tokens;
pub mod versions;

/// Paths used by several groups.
pub mod paths {
    /// `GET`, no token.
    pub const VERSIONS: &str = "/_parley/client/versions";
    /// `POST`, no token.
    pub const REGISTER: &str = "/_parley/client/v1/register";
    /// `POST`, no token.
    pub const LOGIN: &str = "/_parley/client/v1/login";
    /// `GET`, token.
    pub const WHOAMI: &str = "/_parley/client/v1/whoami";
    /// `POST`, token.
    pub const LOGOUT: &str = "/_parley/client/v1/logout";
    /// `GET`, token.
    pub const DEVICES: &str = "/_parley/client/v1/devices";
}

/// The password every scenario account uses.
pub const PASSWORD: &str = "correct horse battery staple";
