//! The Parley conformance suite as a library: the runner, the fixtures and the scenarios.
//! The `sytest` binary (`main.rs`) is its command line. See `README.md`.

pub mod check;
pub mod config;
pub mod device;
pub mod fake_remote;
pub mod fixture;
pub mod postgres;
pub mod process;
pub mod registry;
pub mod runner;
pub mod scenarios;
pub mod template;
pub mod test_case;
pub mod unique;
