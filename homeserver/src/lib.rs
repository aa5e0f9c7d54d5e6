//! The Parley homeserver as a library; `main.rs` is its command line.
//!
//! Modules stand in layers, each using only the ones below it (a test fails on an import
//! cycle):
//!
//! 1. **Foundation**: [`clock`], [`ids`], [`config`], [`mls_check`] (what the server reads of
//!    MLS messages), [`data_dir`], [`signing_keys`], [`logging`], [`allocator`], [`tls`].
//! 2. **Infrastructure**: [`client_address`], [`ratelimit`], [`connections`] (the HTTP serve
//!    loop), and the parts of services that need no shared state: `accounts::tokens`,
//!    `accounts::passwords`, `delivery::notifier`, `delivery::events`, `federation::client`,
//!    `federation::outbox`, `federation::fills`.
//! 3. [`state`]: `AppState`, what every service and handler shares.
//! 4. **Services**, one per concept: [`accounts`], [`keys`], [`hub`], [`delivery`],
//!    [`federation`], [`retention`], and [`admin`] above them (it acts through the others). Each fails with its own error type, holding only what it
//!    can fail with: `accounts::error::AccountError`, `keys::KeysError`,
//!    `hub::error::HubError`, `delivery::error::DeliveryError`,
//!    `federation::error::FederationError` (requests from other servers),
//!    `admin::AdminError` and
//!    `federation::remote_errors::RemoteError` (another server's answer to a request made for
//!    our client). Errors carry no errcode or status.
//! 5. [`api`]: thin handlers for the client and federation APIs, and `api::web_client` for the web
//!    client; [`server`] starts it all. `api::errors::ApiError` is what a handler fails with:
//!    the request's own failures (`RequestError`) or a service's error, and `api::errors` gives
//!    each its errcode, status and extra fields, once.

pub mod accounts;
pub mod admin;
pub mod allocator;
pub mod api;
pub mod client_address;
pub mod clock;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod delivery;
pub mod drain;
pub mod federation;
pub mod hub;
pub mod ids;
pub mod keys;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod mls_check;
pub mod ratelimit;
pub mod retention;
pub mod server;
pub mod signing_keys;
pub mod state;
pub mod tls;
