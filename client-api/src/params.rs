//! Path parameters of endpoints, one struct per shape; field names are the `{name}`s of the
//! path templates that use them. Identifiers are typed: a path whose parameter is outside its
//! grammar is refused before the handler runs (docs/protocol.md#identifiers).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, GroupId, TxnId, UserId};

/// `{group_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupPath {
    /// A group id, `!opaque:hub.server`.
    pub group_id: GroupId,
}

/// `{group_id}` and `{txn_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupTxnPath {
    /// A group id, `!opaque:hub.server`.
    pub group_id: GroupId,
    /// The sending device's idempotency key, 1–64 of `[A-Za-z0-9._~-]`.
    pub txn_id: TxnId,
}

/// `{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DevicePath {
    /// A device id of the caller.
    pub device_id: DeviceId,
}

/// `{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserPath {
    /// A user id, `@localpart:server`.
    pub user_id: UserId,
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
    pub txn_id: TxnId,
}

/// Checks a raw path parameter against the grammar of the id its name stands for (the field
/// types above), so a server can say which parameter is wrong and how before it parses the
/// whole path.
pub fn check(name: &str, value: &str) -> Result<(), crate::ids::IdError> {
    match name {
        "group_id" => GroupId::parse(value).map(drop),
        "txn_id" => TxnId::parse(value).map(drop),
        "user_id" => UserId::parse(value).map(drop),
        "device_id" => DeviceId::parse(value).map(drop),
        "server_name" if !crate::ids::is_valid_server_name(value) => {
            Err(crate::ids::IdError::BadServerName)
        }
        "media_id" if !crate::media::is_valid_media_id(value) => {
            Err(crate::ids::IdError::BadMediaId)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each typed field refuses what [`check`] refuses under its name, and accepts the rest.
    #[test]
    fn check_agrees_with_the_typed_fields() {
        let good = json!({"group_id": "!g:h.example", "txn_id": "t1", "user_id": "@a:h.example",
                          "device_id": "DEV", "id": "5"});
        let bad = [
            ("group_id", "g:h.example"),
            ("txn_id", "t/1"),
            ("user_id", "a:h.example"),
            ("device_id", "DEV ICE"),
        ];
        fn parses<P: serde::de::DeserializeOwned>(v: &serde_json::Value) -> bool {
            serde_json::from_value::<P>(v.clone()).is_ok()
        }
        let all = |v: &serde_json::Value| {
            [
                parses::<GroupPath>(v),
                parses::<GroupTxnPath>(v),
                parses::<DevicePath>(v),
                parses::<UserPath>(v),
                parses::<TxnPath>(v),
            ]
        };
        assert_eq!(all(&good), [true; 5]);
        for (name, value) in bad {
            assert!(check(name, value).is_err(), "{name}={value}");
            assert!(check(name, good[name].as_str().unwrap()).is_ok());
            let mut v = good.clone();
            v[name] = json!(value);
            let uses = |fields: &[&str]| fields.contains(&name);
            let expected = [
                !uses(&["group_id"]),
                !uses(&["group_id", "txn_id"]),
                !uses(&["device_id"]),
                !uses(&["user_id"]),
                !uses(&["txn_id"]),
            ];
            assert_eq!(all(&v), expected, "{name}={value}");
        }
    }
}
