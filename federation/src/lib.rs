//! The Parley server–server protocol core (docs/protocol.md#server-server-api).
//!
//! Pure library code, no I/O beyond the signing-key file:
//!
//! - [`canonical_json`]: the canonical JSON every signature covers, and a strict parser for
//!   federation bodies;
//! - [`b64`]: unpadded standard base64 for keys and signatures;
//! - [`signing_key`]: the server signing key and its key id (generate, persist, load);
//! - [`keys`]: the self-signed `GET /_parley/key/v1/server` document (build, verify a fetched
//!   one); it re-exports the [`signing_key`] items under their old paths;
//! - [`key_cache`]: other servers' verified keys, with the once-a-minute refetch rule;
//! - [`signatures`]: signing and checking signed JSON objects (Matrix's "Signing JSON");
//! - [`auth`]: the `Authorization: X-Parley …` request signature (build, parse, verify);
//! - [`transactions`]: wire types of `PUT /_parley/federation/v1/send/{txn_id}`;
//! - [`endpoints`]: the federation endpoints, declared like the client API's;
//! - [`destination`]: how to reach a server name (explicit port, well-known, `:8448`).
//!
//! Every fallible function returns the crate's single [`Error`]; [`Error::errcode`] and
//! [`Error::http_status`] say how a server answers it.

pub mod auth;
pub mod b64;
pub mod canonical_json;
pub mod destination;
pub mod endpoints;
pub mod error;
pub mod key_cache;
pub mod keys;
pub mod signatures;
pub mod signing_key;
pub mod transactions;

pub use error::Error;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
