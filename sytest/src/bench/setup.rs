//! Accounts, MLS devices and groups for the relay: every device is a real `parley-mls`
//! engine with its signature key bound and key packages uploaded; each group is created by
//! a sender and filled with one commit; the others join by Welcome, as clients do.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use parley_client_api::client::unb64;
use parley_client_api::Client;
use parley_mls::StaticDeviceKeys;

use parley_sytest::device::{bundle_request, fetch_device_keys, Device};

/// Registers `name` on the server at `base_url` (retrying while it answers 429) and sets its
/// device up with `packages` key packages and a last-resort one.
pub async fn register(
    http: &reqwest::Client,
    base_url: &str,
    name: String,
    packages: usize,
) -> anyhow::Result<Device> {
    Device::register_patiently(Client::with_http(http.clone(), base_url), &name, packages).await
}

/// The access token of a registered device (the benchmark's own requests carry it).
pub fn access_token(device: &Device) -> &str {
    device.client.access_token().unwrap_or_default()
}

/// The published signature keys of `users`, fetched through `client`'s server.
pub async fn device_keys(client: &Client, users: &[String]) -> anyhow::Result<StaticDeviceKeys> {
    let mut keys = StaticDeviceKeys::new();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    fetch_device_keys(client, &refs, &mut keys).await?;
    Ok(keys)
}

/// Forms `groups` groups: group g is created by sender g and holds the senders `i` with
/// `i % groups == g` and every receiver. Returns the group ids and the device keys used to
/// validate members. Every device has joined its groups when this returns.
pub async fn form_groups(
    senders: &mut [Device],
    receivers: &mut [Device],
    groups: usize,
) -> anyhow::Result<(Vec<String>, StaticDeviceKeys)> {
    let all_users: Vec<String> = senders
        .iter()
        .chain(receivers.iter())
        .map(|d| d.user_id.clone())
        .collect();
    let keys = device_keys(&senders[0].client, &all_users).await?;
    let receiver_users: Vec<String> = receivers.iter().map(|d| d.user_id.clone()).collect();
    let mut group_ids = Vec::new();
    for g in 0..groups {
        let mut members: Vec<String> = (0..senders.len())
            .filter(|i| i % groups == g && *i != g)
            .map(|i| senders[i].user_id.clone())
            .collect();
        members.extend(receiver_users.iter().cloned());
        let creator = &mut senders[g];
        let group_id = creator
            .client
            .create_group()
            .await
            .context("create group")?;
        creator.engine.create_group(&group_id)?;
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let claimed = creator.client.claim_keys(&refs).await.context("claim")?;
        anyhow::ensure!(
            claimed.failures.is_empty(),
            "claim failures: {:?}",
            claimed.failures
        );
        let kps: Vec<Vec<u8>> = claimed
            .key_packages
            .values()
            .flat_map(|devices| devices.values())
            .map(|kp| unb64(kp).context("key package base64"))
            .collect::<anyhow::Result<_>>()?;
        let bundle = creator.engine.add_members(&group_id, &kps, &keys)?;
        let request = bundle_request(&bundle);
        creator
            .client
            .commit(&group_id, &request)
            .await
            .context("adding members")?;
        creator.engine.confirm_pending_commit(&group_id)?;
        group_ids.push(group_id);
    }
    for (i, sender) in senders.iter_mut().enumerate() {
        let expected = usize::from(i >= groups);
        join_all(sender, expected, &keys).await?;
    }
    for receiver in receivers.iter_mut() {
        join_all(receiver, groups, &keys).await?;
    }
    Ok((group_ids, keys))
}

/// Syncs `device` until it has joined `expected` groups by Welcome (30 s at most: Welcomes
/// for another server travel through federation).
async fn join_all(
    device: &mut Device,
    expected: usize,
    keys: &StaticDeviceKeys,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut joined = device.engine.group_ids().len();
    let target = joined + expected;
    loop {
        let timeout_ms = if joined >= target { 0 } else { 1000 };
        let response = device
            .client
            .sync(device.since.as_deref(), timeout_ms)
            .await
            .context("sync")?;
        for w in &response.welcomes {
            let bytes = unb64(&w.welcome).context("welcome base64")?;
            match device.engine.join_from_welcome(&bytes, keys) {
                Ok(_) => joined += 1,
                Err(parley_mls::MlsError::GroupExists) => {}
                Err(e) => anyhow::bail!("{} cannot join {}: {e}", device.user_id, w.group_id),
            }
            device.client.delete_welcome(&w.id).await?;
        }
        let idle = response.welcomes.is_empty();
        device.since = Some(response.next_batch);
        if joined >= target && idle {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} joined {joined} of {target} groups within 30 s",
            device.user_id
        );
    }
}
