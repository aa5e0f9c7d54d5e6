//! Accounts, MLS devices and groups for the relay: every device is a real `parley-mls`
//! engine with its signature key bound and key packages uploaded; each group is created by
//! a sender and filled with one commit; the others join by Welcome, as clients do.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use parley_client_api::client::{b64, unb64};
use parley_client_api::groups::{CommitRequest, DeviceRef as WireDevice};
use parley_client_api::Client;
use parley_mls::{DeviceRef, Engine, EngineConfig, StaticDeviceKeys};

/// Password of every benchmark account.
const PASSWORD: &str = "bench password 1234";

/// One device: its client (holding its access token), engine and sync position.
pub struct Device {
    pub client: Client,
    pub engine: Engine,
    pub user_id: String,
    pub access_token: String,
    pub since: Option<String>,
}

/// Registers `name` on the server at `base_url` and sets its device up with `packages` key
/// packages and a last-resort one.
pub async fn register(
    http: &reqwest::Client,
    base_url: &str,
    name: String,
    packages: usize,
) -> anyhow::Result<Device> {
    let mut client = Client::with_http(http.clone(), base_url);
    // Password hashing is bounded on the server: many registrations at once are told to come
    // back later (429), which the set-up does rather than fail.
    let mut attempts = 0;
    let session = loop {
        match client.register(&name, PASSWORD).await {
            Err(e) if e.status() == Some(429) && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => break other.with_context(|| format!("registering {name}"))?,
        }
    };
    let mut engine = Engine::new(
        &session.user_id,
        &session.device_id,
        EngineConfig::default(),
    )?;
    client
        .bind_signature_key(&session.device_id, &engine.signature_public_key())
        .await
        .context("binding signature key")?;
    let kps = engine.generate_key_packages(packages)?;
    let last = engine.generate_last_resort_key_package()?;
    client
        .upload_keys(&kps, Some(&last))
        .await
        .context("uploading key packages")?;
    Ok(Device {
        client,
        engine,
        user_id: session.user_id,
        access_token: session.access_token,
        since: None,
    })
}

/// The published signature keys of `users`, fetched through `client`'s server.
pub async fn device_keys(client: &Client, users: &[String]) -> anyhow::Result<StaticDeviceKeys> {
    let mut keys = StaticDeviceKeys::new();
    for user in users {
        let list = client
            .user_devices(user)
            .await
            .with_context(|| format!("devices of {user}"))?;
        for d in list.devices {
            let key = unb64(&d.signature_key).context("signature key base64")?;
            keys.insert(DeviceRef::new(user, &d.device_id)?, key);
        }
    }
    Ok(keys)
}

fn wire(d: &DeviceRef) -> WireDevice {
    WireDevice {
        user_id: d.user_id.clone(),
        device_id: d.device_id.clone(),
    }
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
        let request = CommitRequest {
            commit: b64(&bundle.commit),
            welcome: bundle.welcome.as_deref().map(b64),
            group_info: bundle.group_info.as_deref().map(b64),
            adds: bundle.adds.iter().map(wire).collect(),
            removes: bundle.removes.iter().map(wire).collect(),
        };
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
