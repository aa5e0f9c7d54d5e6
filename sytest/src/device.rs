//! A native `parley-mls` client device driving a server under test through the typed client,
//! as a real client would: bound signature key, uploaded key packages, groups, sync.
//!
//! Every server answer is checked and turned into an error naming what went wrong; nothing
//! here panics on what a server does.
//!
//! This is the one test device of the workspace: the conformance scenarios, the benchmark's
//! set-up and the homeserver's integration tests (a dev-dependency) all use it. It knows no
//! server type of its own: anything that opens fresh clients ([`ClientFactory`]) will do.

use anyhow::Context as _;
use parley_client_api::client::{b64, unb64};
use parley_client_api::groups::{CommitRequest, CommitResponse, DeviceRef as WireDevice};
use parley_client_api::sync::{MessageEvent, SyncResponse};
use parley_client_api::Client;
use parley_mls::{DeviceRef, Engine, EngineConfig, Envelope, Event, StaticDeviceKeys};

use crate::check::expect_ok;

/// Password of every account a test device registers.
pub const PASSWORD: &str = "correct horse battery staple";

/// A server under test that hands out fresh (not yet logged-in) typed clients.
pub trait ClientFactory {
    /// A new client of the server, without an access token.
    fn client(&self) -> Client;
}

/// One device: an HTTP client, an MLS engine and the device keys it learnt.
pub struct Device {
    /// The typed client, with this device's access token.
    pub client: Client,
    /// The MLS engine.
    pub engine: Engine,
    /// `@name:server`.
    pub user_id: String,
    /// The server-assigned device id.
    pub device_id: String,
    /// Device signature keys learnt from `GET /users/{id}/devices` (or inserted by tests).
    pub keys: StaticDeviceKeys,
    /// Users whose device keys are fetched before joining from a Welcome.
    pub known_users: Vec<String>,
    /// The last `next_batch`.
    pub since: Option<String>,
    /// Decrypted application messages in processing order: (group, sender user, text).
    pub received: Vec<(String, String, String)>,
    /// Hub notices in processing order: (group, the notice's JSON object).
    pub notices: Vec<(String, serde_json::Value)>,
    /// Groups whose state this device lost (docs/protocol.md#fork-recovery): a fork
    /// detected, or a message for a later epoch than its own. Reported to the hub by
    /// [`Device::apply`]; a Welcome for such a group replaces the state held.
    pub forked: std::collections::BTreeSet<String>,
    /// Groups joined again after a fork: the commits of epochs before the rejoin that are
    /// still delivered (the re-adding commit itself) are skipped.
    pub rejoined: std::collections::BTreeSet<String>,
}

impl Device {
    /// Registers `name` and sets the device up: bound key, 5 packages and a last resort.
    pub async fn register(server: &impl ClientFactory, name: &str) -> anyhow::Result<Device> {
        Device::register_with(server, name, 5, true).await
    }

    /// Registers `name` with `packages` ordinary packages and optionally a last resort.
    pub async fn register_with(
        server: &impl ClientFactory,
        name: &str,
        packages: usize,
        last_resort: bool,
    ) -> anyhow::Result<Device> {
        let mut client = server.client();
        let s = expect_ok(client.register(name, PASSWORD).await, "register")?;
        Device::setup(client, s.user_id, s.device_id, packages, last_resort).await
    }

    /// Registers `name` like [`Device::register`], with an engine configured by `config`
    /// (e.g. no padding, so that a test can make messages of an exact size).
    pub async fn register_configured(
        server: &impl ClientFactory,
        name: &str,
        config: EngineConfig,
    ) -> anyhow::Result<Device> {
        let mut client = server.client();
        let s = expect_ok(client.register(name, PASSWORD).await, "register")?;
        Device::setup_configured(client, s.user_id, s.device_id, 5, true, config).await
    }

    /// Registers `name` through `client` with `packages` packages and a last resort, coming back
    /// every 200 ms (up to 100 times) while the server answers 429: password hashing is
    /// bounded on the server, so many registrations at once are told to retry later.
    pub async fn register_patiently(
        mut client: Client,
        name: &str,
        packages: usize,
    ) -> anyhow::Result<Device> {
        let mut attempts = 0;
        let session = loop {
            match client.register(name, PASSWORD).await {
                Err(e) if e.status() == Some(429) && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => break other.with_context(|| format!("registering {name}"))?,
            }
        };
        Device::setup(client, session.user_id, session.device_id, packages, true).await
    }

    /// Logs `name` in on a new device and sets it up like [`Device::register`].
    pub async fn login(server: &impl ClientFactory, name: &str) -> anyhow::Result<Device> {
        let mut client = server.client();
        let s = expect_ok(client.login(name, PASSWORD, None).await, "login")?;
        Device::setup(client, s.user_id, s.device_id, 5, true).await
    }

    /// Binds the engine's signature key and uploads packages for a logged-in client.
    pub async fn setup(
        client: Client,
        user_id: String,
        device_id: String,
        packages: usize,
        last_resort: bool,
    ) -> anyhow::Result<Device> {
        let config = EngineConfig::default();
        Device::setup_configured(client, user_id, device_id, packages, last_resort, config).await
    }

    /// [`Device::setup`] with an engine configured by `config`.
    pub async fn setup_configured(
        client: Client,
        user_id: String,
        device_id: String,
        packages: usize,
        last_resort: bool,
        config: EngineConfig,
    ) -> anyhow::Result<Device> {
        let mut engine = Engine::new(&user_id, &device_id, config)
            .map_err(|e| anyhow::anyhow!("MLS engine for {user_id}/{device_id}: {e}"))?;
        expect_ok(
            client
                .bind_signature_key(&device_id, &engine.signature_public_key())
                .await,
            "bind signature key",
        )?;
        let kps = engine
            .generate_key_packages(packages)
            .map_err(|e| anyhow::anyhow!("key packages: {e}"))?;
        let last = if last_resort {
            Some(
                engine
                    .generate_last_resort_key_package()
                    .map_err(|e| anyhow::anyhow!("last resort: {e}"))?,
            )
        } else {
            None
        };
        if packages > 0 || last.is_some() {
            let count = expect_ok(
                client.upload_keys(&kps, last.as_deref()).await,
                "upload key packages",
            )?;
            anyhow::ensure!(
                count.count == packages as u64 && count.last_resort == last_resort,
                "upload of {packages} packages (last resort: {last_resort}) answered {count:?}"
            );
        }
        Ok(Device {
            client,
            engine,
            known_users: vec![user_id.clone()],
            user_id,
            device_id,
            keys: StaticDeviceKeys::new(),
            since: None,
            received: Vec::new(),
            notices: Vec::new(),
            forked: Default::default(),
            rejoined: Default::default(),
        })
    }

    /// This device as `{user_id, device_id}`.
    pub fn me(&self) -> WireDevice {
        WireDevice {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
        }
    }

    /// Adds users whose keys this device fetches before joining a group.
    pub fn know(&mut self, users: &[&str]) {
        for u in users {
            if !self.known_users.iter().any(|k| k == u) {
                self.known_users.push((*u).to_owned());
            }
        }
    }

    /// Inserts a device key directly (for devices of a fake server).
    pub fn trust(&mut self, user_id: &str, device_id: &str, key: Vec<u8>) -> anyhow::Result<()> {
        let device = DeviceRef::new(user_id, device_id)
            .map_err(|e| anyhow::anyhow!("device {user_id}/{device_id}: {e}"))?;
        self.keys.insert(device, key);
        Ok(())
    }

    /// Fetches and records the published device keys of `users`.
    pub async fn learn(&mut self, users: &[&str]) -> anyhow::Result<()> {
        fetch_device_keys(&self.client, users, &mut self.keys).await
    }

    /// `POST /groups`, and the engine's group under that id.
    pub async fn create_group(&mut self) -> anyhow::Result<String> {
        let group_id = expect_ok(self.client.create_group().await, "create group")?;
        self.engine
            .create_group(&group_id)
            .map_err(|e| anyhow::anyhow!("engine cannot create group {group_id:?}: {e}"))?;
        Ok(group_id)
    }

    /// Creates a group with roles (docs/protocol.md#group-roles) at the hub and in the engine:
    /// this device's user is its only admin.
    pub async fn create_group_with_roles(&mut self) -> anyhow::Result<String> {
        let group_id = self.hub_group_with_roles().await?;
        self.engine
            .create_group_with_roles(&group_id)
            .map_err(|e| anyhow::anyhow!("engine cannot create group {group_id:?}: {e}"))?;
        Ok(group_id)
    }

    /// Creates a group with roles at the hub only: the engine's group has none, as a client
    /// that ignores roles would create it. Its commits then meet the hub's rule alone.
    pub async fn create_group_with_roles_at_hub(&mut self) -> anyhow::Result<String> {
        let group_id = self.hub_group_with_roles().await?;
        self.engine
            .create_group(&group_id)
            .map_err(|e| anyhow::anyhow!("engine cannot create group {group_id:?}: {e}"))?;
        Ok(group_id)
    }

    async fn hub_group_with_roles(&mut self) -> anyhow::Result<String> {
        let request = parley_client_api::groups::CreateGroupRequest { roles: true };
        expect_ok(
            self.client.create_group_with(&request).await,
            "create group with roles",
        )
    }

    /// Commits roles naming `admins` and merges.
    pub async fn set_admins(
        &mut self,
        group_id: &str,
        admins: &[&str],
    ) -> anyhow::Result<CommitResponse> {
        let admins: Vec<String> = admins.iter().map(|a| a.to_string()).collect();
        let bundle = self
            .engine
            .set_admins(group_id, &admins)
            .map_err(|e| anyhow::anyhow!("engine cannot set admins: {e}"))?;
        self.submit(group_id, bundle).await
    }

    /// Opens the group's join link, or rotates its code (docs/protocol.md#join-links); the
    /// new link.
    pub async fn open_join_link(&mut self, group_id: &str) -> anyhow::Result<String> {
        let bundle = self
            .engine
            .open_join_link(group_id)
            .map_err(|e| anyhow::anyhow!("engine cannot open the join link: {e}"))?;
        self.submit(group_id, bundle).await?;
        self.engine
            .join_link(group_id)
            .map_err(|e| anyhow::anyhow!("join link: {e}"))?
            .context("no join link after opening it")
    }

    /// Joins by `link`: fetches the group's GroupInfo through this device's server, checks
    /// the members' credentials against the known users' device keys, and submits the
    /// external commit. The hub's refusal comes back as the client error (the engine forgets
    /// the group then); the group id otherwise.
    pub async fn try_join_by_link(
        &mut self,
        link: &str,
    ) -> anyhow::Result<Result<String, parley_client_api::ClientError>> {
        let link = parley_mls::JoinLink::parse(link).map_err(|e| anyhow::anyhow!("{e}"))?;
        let group_id = link.group_id.as_str().to_owned();
        let info = match self.client.join_info(&group_id, &link.code).await {
            Ok(info) => info,
            Err(e) => return Ok(Err(e)),
        };
        let users = self.known_users.clone();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        self.learn(&refs).await?;
        let group_info = unb64(&info.group_info).context("group_info is not base64")?;
        let (_, bundle) = self
            .engine
            .join_by_link(&group_id, &group_info, &link.code, &self.keys)
            .map_err(|e| anyhow::anyhow!("engine cannot join by link: {e}"))?;
        match self
            .client
            .commit(&group_id, &bundle_request(&bundle))
            .await
        {
            Ok(_) => Ok(Ok(group_id)),
            Err(e) => {
                self.engine
                    .forget_group(&group_id)
                    .map_err(|e| anyhow::anyhow!("forget group: {e}"))?;
                Ok(Err(e))
            }
        }
    }

    /// [`Device::try_join_by_link`], failing when the hub refuses.
    pub async fn join_by_link(&mut self, link: &str) -> anyhow::Result<String> {
        self.try_join_by_link(link)
            .await?
            .map_err(|e| anyhow::anyhow!("join by link refused: {e}"))
    }

    /// Claims one package of every device of `users` (checking there are no failures).
    pub async fn claim(&mut self, users: &[&str]) -> anyhow::Result<Vec<Vec<u8>>> {
        self.learn(users).await?;
        let claimed = expect_ok(self.client.claim_keys(users).await, "claim keys")?;
        anyhow::ensure!(
            claimed.failures.is_empty(),
            "claim failures: {:?}",
            claimed.failures
        );
        let mut kps = Vec::new();
        for (user, devices) in &claimed.key_packages {
            for (device, kp) in devices {
                if *user == self.user_id && *device == self.device_id {
                    continue;
                }
                kps.push(unb64(kp).with_context(|| {
                    format!("claimed package of {user}/{device} is not base64")
                })?);
            }
        }
        anyhow::ensure!(!kps.is_empty(), "claim of {users:?} gave no package");
        Ok(kps)
    }

    /// Prepares (but does not submit) a commit adding the packages.
    pub fn add_bundle(
        &mut self,
        group_id: &str,
        kps: &[Vec<u8>],
    ) -> anyhow::Result<parley_mls::CommitBundle> {
        self.engine
            .add_members(group_id, kps, &self.keys)
            .map_err(|e| anyhow::anyhow!("engine cannot add members: {e}"))
    }

    /// Claims packages of every device of `users`, commits adding them and merges.
    pub async fn add(&mut self, group_id: &str, users: &[&str]) -> anyhow::Result<CommitResponse> {
        let kps = self.claim(users).await?;
        let bundle = self.add_bundle(group_id, &kps)?;
        self.submit(group_id, bundle).await
    }

    /// Claims packages of the named `devices` of `user` only (a contact's new devices),
    /// commits adding them and merges.
    pub async fn add_devices(
        &mut self,
        group_id: &str,
        user: &str,
        devices: &[String],
    ) -> anyhow::Result<CommitResponse> {
        self.learn(&[user]).await?;
        let claimed = expect_ok(self.client.claim_keys(&[user]).await, "claim keys")?;
        let mut kps = Vec::new();
        for (device, kp) in claimed.key_packages.get(user).into_iter().flatten() {
            if devices.contains(device) {
                kps.push(unb64(kp).with_context(|| {
                    format!("claimed package of {user}/{device} is not base64")
                })?);
            }
        }
        anyhow::ensure!(
            kps.len() == devices.len(),
            "claim of {user} gave packages for {} of {devices:?}",
            kps.len()
        );
        let bundle = self.add_bundle(group_id, &kps)?;
        self.submit(group_id, bundle).await
    }

    /// Commits removing `devices` and merges.
    pub async fn remove(
        &mut self,
        group_id: &str,
        devices: &[WireDevice],
    ) -> anyhow::Result<CommitResponse> {
        let mut refs = Vec::new();
        for d in devices {
            refs.push(
                DeviceRef::new(&d.user_id, &d.device_id)
                    .map_err(|e| anyhow::anyhow!("device ref: {e}"))?,
            );
        }
        let bundle = self
            .engine
            .remove_members(group_id, &refs)
            .map_err(|e| anyhow::anyhow!("engine cannot remove: {e}"))?;
        self.submit(group_id, bundle).await
    }

    /// Commits a self-update and merges.
    pub async fn self_update(&mut self, group_id: &str) -> anyhow::Result<CommitResponse> {
        let bundle = self
            .engine
            .self_update(group_id)
            .map_err(|e| anyhow::anyhow!("engine cannot self-update: {e}"))?;
        self.submit(group_id, bundle).await
    }

    /// Submits a bundle; merges it when accepted, discards it (and fails) when refused.
    pub async fn submit(
        &mut self,
        group_id: &str,
        bundle: parley_mls::CommitBundle,
    ) -> anyhow::Result<CommitResponse> {
        let request = bundle_request(&bundle);
        match self.client.commit(group_id, &request).await {
            Ok(r) => {
                self.engine
                    .confirm_pending_commit(group_id)
                    .map_err(|e| anyhow::anyhow!("confirm commit: {e}"))?;
                Ok(r)
            }
            Err(e) => {
                let _ = self.engine.discard_pending_commit(group_id);
                anyhow::bail!("commit to {group_id} refused: {e}")
            }
        }
    }

    /// Encrypts `text` (application message bytes and its msg id).
    pub fn encrypt(&mut self, group_id: &str, text: &str) -> anyhow::Result<(String, Vec<u8>)> {
        let out = self
            .engine
            .encrypt(group_id, text.as_bytes(), now_ms())
            .map_err(|e| anyhow::anyhow!("encrypt: {e}"))?;
        Ok((out.msg_id, out.message))
    }

    /// Encrypts and sends `text`; the seq.
    pub async fn send_text(&mut self, group_id: &str, text: &str) -> anyhow::Result<u64> {
        let (txn, message) = self.encrypt(group_id, text)?;
        expect_ok(
            self.client.send(group_id, &txn, &message).await,
            "send message",
        )
    }

    /// One sync from `since`; joins welcomes, processes messages in order.
    pub async fn sync(&mut self, timeout_ms: u64) -> anyhow::Result<Vec<Event>> {
        let response = expect_ok(
            self.client.sync(self.since.as_deref(), timeout_ms).await,
            "sync",
        )?;
        self.apply(response).await
    }

    /// Syncs until nothing new arrives.
    pub async fn sync_all(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            let before = self.since.clone();
            events.extend(self.sync(0).await?);
            if self.since == before {
                return Ok(events);
            }
        }
    }

    /// Syncs (long-polling) until `done` holds, for at most `secs` seconds.
    pub async fn sync_until(
        &mut self,
        secs: u64,
        what: &str,
        mut done: impl FnMut(&Device) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            self.sync(500).await?;
            if done(self) {
                return Ok(());
            }
        }
        anyhow::bail!("{} did not see {what} within {secs} s", self.user_id)
    }

    /// Applies a sync answer: joins welcomes (acknowledging them), processes messages.
    pub async fn apply(&mut self, response: SyncResponse) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        for w in &response.welcomes {
            let users = self.known_users.clone();
            let refs: Vec<&str> = users.iter().map(String::as_str).collect();
            self.learn(&refs).await?;
            let bytes = unb64(&w.welcome).context("welcome is not base64")?;
            // A re-add after a fork replaces the state this device lost.
            let joined = if self.forked.contains(&w.group_id) {
                self.engine.rejoin_from_welcome(&bytes, &self.keys)
            } else {
                self.engine.join_from_welcome(&bytes, &self.keys)
            };
            match joined {
                Ok(joined) => {
                    if self.forked.remove(&w.group_id) {
                        self.rejoined.insert(w.group_id.clone());
                    }
                    events.extend(joined.events)
                }
                Err(parley_mls::MlsError::GroupExists) => {}
                Err(e) => anyhow::bail!(
                    "{} cannot join {} from its Welcome: {e}",
                    self.user_id,
                    w.group_id
                ),
            }
            expect_ok(
                self.client.delete_welcome(&w.id).await,
                "DELETE /welcomes/{id}",
            )?;
        }
        for (group_id, group) in &response.groups {
            for m in &group.messages {
                let added: Vec<String> =
                    m.adds.iter().flatten().map(|d| d.user_id.clone()).collect();
                if !added.is_empty() {
                    let refs: Vec<&str> = added.iter().map(String::as_str).collect();
                    self.learn(&refs).await?;
                }
                if self.forked.contains(group_id) {
                    continue; // nothing of it is readable until the re-add
                }
                events.extend(self.process(group_id, m)?);
                if self.forked.contains(group_id) {
                    expect_ok(
                        self.client.report_fork(group_id).await,
                        "POST /groups/{id}/forked",
                    )?;
                }
            }
        }
        self.since = Some(response.next_batch);
        Ok(events)
    }

    /// Re-adds `device`, which reported a fork of `group_id` (a `member_forked` notice):
    /// removes it and adds it back with a fresh key package of that device, and merges.
    pub async fn readd_forked(
        &mut self,
        group_id: &str,
        device: &DeviceRef,
    ) -> anyhow::Result<CommitResponse> {
        let user = device.user_id.clone();
        self.learn(&[&user]).await?;
        let claimed = expect_ok(self.client.claim_keys(&[&user]).await, "claim keys")?;
        let kp = claimed
            .key_packages
            .get(&user)
            .and_then(|d| d.get(&device.device_id))
            .context("no key package of the forked device")?;
        let kp = unb64(kp).context("claimed package is not base64")?;
        let in_sync: Vec<DeviceRef> = self
            .engine
            .members(group_id)
            .map_err(|e| anyhow::anyhow!("members: {e}"))?
            .into_iter()
            .filter_map(|m| DeviceRef::new(&m.user_id, &m.device_id).ok())
            .filter(|d| d != device)
            .collect();
        let bundle = self
            .engine
            .readd_forked_members(group_id, &in_sync, &[kp], &self.keys)
            .map_err(|e| anyhow::anyhow!("engine cannot re-add {device}: {e}"))?;
        self.submit(group_id, bundle).await
    }

    /// Processes one delivered message (own application messages are skipped: MLS senders
    /// cannot decrypt them).
    pub fn process(&mut self, group_id: &str, m: &MessageEvent) -> anyhow::Result<Vec<Event>> {
        let own = m.sender.user_id == self.user_id && m.sender.device_id == self.device_id;
        if own && m.kind == "application" {
            return Ok(Vec::new());
        }
        if m.kind == "notice" {
            // Written by the hub, not MLS: a base64 JSON object (docs/protocol.md#notices).
            let bytes = unb64(&m.message).context("notice is not base64")?;
            let notice = serde_json::from_slice(&bytes).context("notice is not JSON")?;
            self.notices.push((group_id.to_owned(), notice));
            return Ok(Vec::new());
        }
        let envelope = envelope_of(m)?;
        let bytes = unb64(&m.message).context("delivered message is not base64")?;
        let processed = match self.engine.process(group_id, &bytes, &envelope, &self.keys) {
            // Our state of the group is lost (docs/protocol.md#fork-recovery): a fork, or a
            // message of an epoch we never reached. `apply` reports it.
            Err(parley_mls::MlsError::ForkDetected { .. }) => {
                self.forked.insert(group_id.to_owned());
                return Ok(Vec::new());
            }
            Err(parley_mls::MlsError::WrongEpoch {
                message_epoch,
                group_epoch,
            }) if message_epoch > group_epoch => {
                self.forked.insert(group_id.to_owned());
                return Ok(Vec::new());
            }
            // The re-adding commit (and any before it) after joining again from its Welcome.
            Err(parley_mls::MlsError::WrongEpoch { .. }) if self.rejoined.contains(group_id) => {
                return Ok(Vec::new());
            }
            other => other,
        };
        let events = processed.map_err(|e| {
            anyhow::anyhow!(
                "{}/{} cannot process seq {} ({}) of {group_id}: {e}",
                self.user_id,
                self.device_id,
                m.seq,
                m.kind
            )
        })?;
        for e in &events {
            if let Event::ApplicationMessage {
                sender, plaintext, ..
            } = e
            {
                self.received.push((
                    group_id.to_owned(),
                    sender.user_id.clone(),
                    String::from_utf8_lossy(plaintext).into_owned(),
                ));
            }
        }
        Ok(events)
    }

    /// Texts received in `group_id`, in order.
    pub fn texts(&self, group_id: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|(g, _, _)| g == group_id)
            .map(|(_, _, t)| t.clone())
            .collect()
    }
}

/// Fetches the published device keys of `users` through `client` into `keys`.
pub async fn fetch_device_keys(
    client: &Client,
    users: &[&str],
    keys: &mut StaticDeviceKeys,
) -> anyhow::Result<()> {
    for user in users {
        let list = expect_ok(
            client.user_devices(user).await,
            &format!("GET /users/{user}/devices"),
        )?;
        for d in list.devices {
            let device = DeviceRef::new(user, &d.device_id)
                .map_err(|e| anyhow::anyhow!("device id {:?}: {e}", d.device_id))?;
            let key = unb64(&d.signature_key)
                .with_context(|| format!("signature_key {:?} is not base64", d.signature_key))?;
            keys.insert(device, key);
        }
    }
    Ok(())
}

/// The wire request of a commit bundle.
pub fn bundle_request(bundle: &parley_mls::CommitBundle) -> CommitRequest {
    let wire = |d: &DeviceRef| WireDevice {
        user_id: d.user_id.clone(),
        device_id: d.device_id.clone(),
    };
    CommitRequest {
        commit: b64(&bundle.commit),
        welcome: bundle.welcome.as_deref().map(b64),
        group_info: bundle.group_info.as_deref().map(b64),
        adds: bundle.adds.iter().map(wire).collect(),
        removes: bundle.removes.iter().map(wire).collect(),
    }
}

/// The envelope the engine checks a delivered message against.
pub fn envelope_of(m: &MessageEvent) -> anyhow::Result<Envelope> {
    let conv = |d: &WireDevice| {
        DeviceRef::new(&d.user_id, &d.device_id)
            .map_err(|e| anyhow::anyhow!("delivered device {}/{}: {e}", d.user_id, d.device_id))
    };
    Ok(Envelope {
        sender: Some(conv(&m.sender)?),
        epoch: m.epoch,
        ts: m.ts,
        adds: m
            .adds
            .iter()
            .flatten()
            .map(conv)
            .collect::<Result<_, _>>()?,
        removes: m
            .removes
            .iter()
            .flatten()
            .map(conv)
            .collect::<Result<_, _>>()?,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
