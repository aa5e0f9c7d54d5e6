//! [`DeviceRef`], the plain reference to one device of one user, as data: it sits below
//! [`crate::error`], whose errors name devices. Its checked constructors (`new`, `parse`,
//! `from_credential`) live with the id rules in [`crate::identity`].

use serde::{Deserialize, Serialize};

/// One device of one user: the MLS credential identity `@localpart:server/DEVICEID`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    /// `@localpart:server_name`.
    pub user_id: String,
    /// Server-assigned device id.
    pub device_id: String,
}

impl DeviceRef {
    /// The credential identity string `@localpart:server/DEVICEID`.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.user_id, self.device_id)
    }

    /// The server name part of the user id.
    pub fn server_name(&self) -> &str {
        self.user_id
            .split_once(':')
            .map(|(_, s)| s)
            .unwrap_or_default()
    }
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user_id, self.device_id)
    }
}
