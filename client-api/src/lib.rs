//! The Parley client–server protocol (DESIGN §3.1, §3.4).
//!
//! Every endpoint is declared once here as a type implementing [`endpoint::Endpoint`]; the
//! homeserver's router and the typed [`client::Client`] both read those declarations, so the
//! two cannot drift apart.

pub mod accounts;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod groups;
pub mod ids;
pub mod keys;
pub mod sync;
pub mod versions;

pub use client::{Client, ClientError};
pub use endpoint::{Auth, Endpoint, Method, RateLimitClass};
pub use error::{ErrCode, ErrorBody};

/// Path prefix of the client–server API.
pub const CLIENT_PREFIX: &str = "/_parley/client/v1";
