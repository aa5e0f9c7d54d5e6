//! Parley web client bindings.
