//! The Parley homeserver as a library; `main.rs` is its command line.
//!
//! Modules stand in layers, each using only the ones below it (a test fails on an import
//! cycle):
//!
//! 1. **Foundation**: [`clock`], [`ids`], [`config`], [`error`] (the one error type, mapped to
//!    status and errcode once), [`mls_check`] (what the server reads of MLS messages),
//!    [`data_dir`], [`signing_keys`], [`logging`], [`allocator`], [`tls`].
//! 2. **Infrastructure**: [`client_address`], [`ratelimit`], [`connections`] (the HTTP serve
//!    loop), and the parts of services that need no shared state: `accounts::tokens`,
//!    `accounts::passwords`, `delivery::notifier`, `delivery::events`, `federation::client`,
//!    `federation::outbox`, `federation::fills`.
//! 3. [`state`]: `AppState`, what every service and handler shares.
//! 4. **Services**, one per concept: [`accounts`], [`keys`], [`hub`], [`delivery`],
//!    [`federation`], [`retention`].
//! 5. [`api`]: thin handlers for the client and federation APIs, and [`web`] for the web
//!    client; [`server`] starts it all.

pub mod accounts;
pub mod allocator;
pub mod api;
pub mod client_address;
pub mod clock;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod delivery;
pub mod federation;
pub mod hub;
pub mod ids;
pub mod keys;
pub mod logging;
pub mod mls_check;
pub mod ratelimit;
pub mod retention;
pub mod server;
pub mod signing_keys;
pub mod state;
pub mod tls;
pub mod web;
