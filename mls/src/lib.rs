//! Parley client MLS engine (DESIGN §4).
