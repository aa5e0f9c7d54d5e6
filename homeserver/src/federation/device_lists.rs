//! Other servers' users' device lists, as this server caches them: from a fetch
//! (`keys::user_devices`) or an update the user's server pushed (`inbound`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::keys::UserDevicesResponse;
use parley_schema::StoreError;

use crate::clock::now_ms;
use crate::state::AppState;

/// Stores a remote user's device list (from a fetch or a pushed update); bad keys are dropped.
pub async fn cache_remote_devices(
    state: &AppState,
    list: &UserDevicesResponse,
) -> Result<(), StoreError> {
    let devices: Vec<(String, Vec<u8>)> = list
        .devices
        .iter()
        .filter_map(|d| {
            let key = STANDARD
                .decode(d.signature_key.as_bytes())
                .ok()
                .filter(|k| k.len() == 32)?;
            Some((d.device_id.clone(), key))
        })
        .collect();
    state
        .store
        .federation()
        .set_remote_device_list(&list.user_id, &devices, now_ms() as i64)
        .await?;
    Ok(())
}
