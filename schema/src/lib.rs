//! Parley storage.
