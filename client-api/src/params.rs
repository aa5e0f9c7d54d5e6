//! Path parameters of endpoints, one struct per shape; field names are the `{name}`s of the
//! path templates that use them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `{group_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupPath {
    /// A group id, `!opaque:hub.server`.
    pub group_id: String,
}

/// `{group_id}` and `{txn_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupTxnPath {
    /// A group id, `!opaque:hub.server`.
    pub group_id: String,
    /// The sending device's idempotency key, 1–64 of `[A-Za-z0-9._~-]`.
    pub txn_id: String,
}

/// `{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DevicePath {
    /// A device id of the caller.
    pub device_id: String,
}

/// `{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserPath {
    /// A user id, `@localpart:server`.
    pub user_id: String,
}

/// `{id}` of a Welcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WelcomePath {
    /// The Welcome's id, as `/sync` gave it.
    pub id: String,
}

/// `{txn_id}` of a federation transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TxnPath {
    /// The sending server's transaction id.
    pub txn_id: String,
}
