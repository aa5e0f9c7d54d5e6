//! The Parley server–server protocol (DESIGN §3.2).
