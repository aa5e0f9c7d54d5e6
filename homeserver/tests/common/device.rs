//! A native `parley-mls` client driving a real homeserver, as the web client would.

#![allow(dead_code)]

use parley_client_api::client::unb64;
use parley_client_api::groups::{CommitRequest, CommitResponse, DeviceRef as WireDevice};
use parley_client_api::sync::{MessageEvent, SyncResponse};
use parley_client_api::{Client, ClientError};
use parley_mls::{DeviceRef, Engine, EngineConfig, Envelope, Event, StaticDeviceKeys};

use super::TestServer;

/// One device: an HTTP client, an MLS engine and what it learnt of others' device keys.
pub struct Device {
    pub client: Client,
    pub engine: Engine,
    pub user_id: String,
    pub device_id: String,
    pub keys: StaticDeviceKeys,
    pub since: Option<String>,
    /// Decrypted application messages, in the order processed: (group, sender user, text).
    pub received: Vec<(String, String, String)>,
}

pub const PASSWORD: &str = "correct horse battery";

impl Device {
    /// Registers `name` and sets the first device up: bound key, 5 packages and a last resort.
    pub async fn register(server: &TestServer, name: &str) -> Device {
        let mut client = server.client();
        let s = client.register(name, PASSWORD).await.expect("register");
        Device::setup(client, s.user_id, s.device_id, 5).await
    }

    /// Logs `name` in on a new device and sets it up.
    pub async fn login(server: &TestServer, name: &str) -> Device {
        let mut client = server.client();
        let s = client.login(name, PASSWORD, None).await.expect("login");
        Device::setup(client, s.user_id, s.device_id, 5).await
    }

    pub async fn setup(
        client: Client,
        user_id: String,
        device_id: String,
        packages: usize,
    ) -> Device {
        let mut engine =
            Engine::new(&user_id, &device_id, EngineConfig::default()).expect("engine");
        client
            .bind_signature_key(&device_id, &engine.signature_public_key())
            .await
            .expect("bind key");
        let kps = engine
            .generate_key_packages(packages)
            .expect("key packages");
        let last = engine
            .generate_last_resort_key_package()
            .expect("last resort");
        client.upload_keys(&kps, Some(&last)).await.expect("upload");
        Device {
            client,
            engine,
            user_id,
            device_id,
            keys: StaticDeviceKeys::new(),
            since: None,
            received: Vec::new(),
        }
    }

    pub fn me(&self) -> WireDevice {
        WireDevice {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
        }
    }

    /// Fetches and records the published device keys of `users`.
    pub async fn learn(&mut self, users: &[&str]) {
        for user in users {
            let list = self.client.user_devices(user).await.expect("user devices");
            for d in list.devices {
                let device = DeviceRef::new(user, &d.device_id).expect("device ref");
                self.keys
                    .insert(device, unb64(&d.signature_key).expect("b64 key"));
            }
        }
    }

    pub async fn create_group(&mut self) -> String {
        let group_id = self.client.create_group().await.expect("create group");
        self.engine.create_group(&group_id).expect("engine group");
        group_id
    }

    /// Claims packages of every device of `users` and commits adding them.
    pub async fn add(
        &mut self,
        group_id: &str,
        users: &[&str],
    ) -> Result<CommitResponse, ClientError> {
        self.learn(users).await;
        let claimed = self.client.claim_keys(users).await.expect("claim");
        assert!(
            claimed.failures.is_empty(),
            "claim failures: {:?}",
            claimed.failures
        );
        // Every device of the users, except this one (already in the group).
        let kps: Vec<Vec<u8>> = claimed
            .key_packages
            .iter()
            .flat_map(|(user, devices)| devices.iter().map(move |(device, kp)| (user, device, kp)))
            .filter(|(user, device, _)| !(**user == self.user_id && **device == self.device_id))
            .map(|(_, _, k)| unb64(k).expect("kp b64"))
            .collect();
        let bundle = self
            .engine
            .add_members(group_id, &kps, &self.keys)
            .expect("add members");
        self.submit(group_id, bundle).await
    }

    /// Commits removing `devices`.
    pub async fn remove(
        &mut self,
        group_id: &str,
        devices: &[WireDevice],
    ) -> Result<CommitResponse, ClientError> {
        let refs: Vec<DeviceRef> = devices
            .iter()
            .map(|d| DeviceRef::new(&d.user_id, &d.device_id).unwrap())
            .collect();
        let bundle = self
            .engine
            .remove_members(group_id, &refs)
            .expect("remove members");
        self.submit(group_id, bundle).await
    }

    pub async fn self_update(&mut self, group_id: &str) -> Result<CommitResponse, ClientError> {
        let bundle = self.engine.self_update(group_id).expect("self update");
        self.submit(group_id, bundle).await
    }

    /// Submits a bundle; merges it when accepted, discards it when refused.
    pub async fn submit(
        &mut self,
        group_id: &str,
        bundle: parley_mls::CommitBundle,
    ) -> Result<CommitResponse, ClientError> {
        let request = bundle_request(&bundle);
        match self.client.commit(group_id, &request).await {
            Ok(r) => {
                self.engine
                    .confirm_pending_commit(group_id)
                    .expect("confirm");
                Ok(r)
            }
            Err(e) => {
                self.engine
                    .discard_pending_commit(group_id)
                    .expect("discard");
                Err(e)
            }
        }
    }

    /// Encrypts and sends `text`; returns the seq.
    pub async fn send_text(&mut self, group_id: &str, text: &str) -> u64 {
        let out = self
            .engine
            .encrypt(group_id, text.as_bytes(), now_ms())
            .expect("encrypt");
        self.client
            .send(group_id, &out.msg_id, &out.message)
            .await
            .expect("send")
    }

    /// One sync: joins welcomes, processes messages in order; returns the engine's events.
    pub async fn sync(&mut self, timeout_ms: u64) -> Vec<Event> {
        let response = self
            .client
            .sync(self.since.as_deref(), timeout_ms)
            .await
            .expect("sync");
        self.apply(response).await
    }

    /// Syncs until nothing new arrives.
    pub async fn sync_all(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let before = self.since.clone();
            events.extend(self.sync(0).await);
            if self.since == before {
                return events;
            }
        }
    }

    pub async fn apply(&mut self, response: SyncResponse) -> Vec<Event> {
        let mut events = Vec::new();
        for w in &response.welcomes {
            self.learn_members_of_welcome(w.sender.user_id.as_str())
                .await;
            let bytes = unb64(&w.welcome).expect("welcome b64");
            match self.engine.join_from_welcome(&bytes, &self.keys) {
                Ok(joined) => events.extend(joined.events),
                Err(parley_mls::MlsError::GroupExists) => {}
                Err(e) => panic!("{} cannot join {}: {e}", self.user_id, w.group_id),
            }
            self.client
                .delete_welcome(&w.id)
                .await
                .expect("ack welcome");
        }
        for (group_id, group) in &response.groups {
            for m in &group.messages {
                // A commit's declared adds are validated against their published keys.
                let added: Vec<String> =
                    m.adds.iter().flatten().map(|d| d.user_id.clone()).collect();
                if !added.is_empty() {
                    let refs: Vec<&str> = added.iter().map(String::as_str).collect();
                    self.learn(&refs).await;
                }
                events.extend(self.process(group_id, m));
            }
        }
        self.since = Some(response.next_batch);
        events
    }

    /// Learns keys of every user in the groups this device will join (via the welcome sender's
    /// view: the test servers are small, so learning all known users is enough).
    async fn learn_members_of_welcome(&mut self, _sender: &str) {
        let users: Vec<String> = KNOWN_USERS.with(|k| k.borrow().clone());
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        self.learn(&refs).await;
    }

    pub fn process(&mut self, group_id: &str, m: &MessageEvent) -> Vec<Event> {
        let own = m.sender.user_id == self.user_id && m.sender.device_id == self.device_id;
        if own && m.kind == "application" {
            return Vec::new(); // MLS senders cannot decrypt their own messages
        }
        let envelope = envelope_of(m);
        let bytes = unb64(&m.message).expect("message b64");
        let events = self
            .engine
            .process(group_id, &bytes, &envelope, &self.keys)
            .unwrap_or_else(|e| {
                panic!(
                    "{}/{} failed to process seq {} ({}): {e}",
                    self.user_id, self.device_id, m.seq, m.kind
                )
            });
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
        events
    }

    /// Texts received in `group_id`.
    pub fn texts(&self, group_id: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|(g, _, _)| g == group_id)
            .map(|(_, _, t)| t.clone())
            .collect()
    }
}

thread_local! {
    /// Users whose device keys a joining device fetches (tests register them here).
    pub static KNOWN_USERS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records users whose keys joining devices should learn.
pub fn know_users(users: &[&str]) {
    KNOWN_USERS.with(|k| {
        let mut k = k.borrow_mut();
        for u in users {
            if !k.iter().any(|x| x == u) {
                k.push(u.to_string());
            }
        }
    });
}

pub fn bundle_request(bundle: &parley_mls::CommitBundle) -> CommitRequest {
    use parley_client_api::client::b64;
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

pub fn envelope_of(m: &MessageEvent) -> Envelope {
    let conv = |d: &WireDevice| DeviceRef::new(&d.user_id, &d.device_id).expect("device ref");
    Envelope {
        sender: Some(conv(&m.sender)),
        epoch: m.epoch,
        ts: m.ts,
        adds: m.adds.iter().flatten().map(conv).collect(),
        removes: m.removes.iter().flatten().map(conv).collect(),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
