//! The relay benchmark behind `parley-bench` (kept apart from the conformance suite).

pub mod cpu;
pub mod echo;
pub mod join;
pub mod load;
pub mod media;
pub mod options;
pub mod receiver;
pub mod relay;
pub mod report;
pub mod roles;
pub mod server;
pub mod setup;
pub mod typing;
