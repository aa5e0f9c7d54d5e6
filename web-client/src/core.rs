//! The web client's engine wrapper in plain Rust (no wasm-bindgen types), so it is tested
//! natively. Values cross to JS as JSON strings and standard padded base64 (docs/protocol.md#wire-details); the
//! wasm-bindgen layer in `lib.rs` only converts errors.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parley_mls::{
    vault, CommitBundle, DeviceKeyValidator, DeviceRef, Engine, EngineConfig, Event, Joined,
    MemberInfo, MlsError, TrustState, Zeroizing,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// Magic of the sealed web-client blob: engine state plus the app's own JSON.
const WEB_MAGIC: &[u8; 8] = b"PLYWEB01";

/// An error for JS: a stable `code` (the `MlsError` variant or a web-client code) and text.
/// The text never contains plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError {
    /// Stable machine-readable code, e.g. `VaultDecrypt`, `KeyChangeUnacknowledged`, `Locked`.
    pub code: &'static str,
    /// Human-readable text.
    pub message: String,
}

impl WebError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl From<MlsError> for WebError {
    fn from(e: MlsError) -> Self {
        let code = match &e {
            MlsError::InvalidIdentifier(_) => "InvalidIdentifier",
            MlsError::InvalidMessage(_) => "InvalidMessage",
            MlsError::InvalidKeyPackage { .. } => "InvalidKeyPackage",
            MlsError::UnknownGroup => "UnknownGroup",
            MlsError::GroupExists => "GroupExists",
            MlsError::CredentialRefused { .. } => "CredentialRefused",
            MlsError::EnvelopeMismatch(_) => "EnvelopeMismatch",
            MlsError::BadAad(_) => "BadAad",
            MlsError::Replay(_) => "Replay",
            MlsError::TimestampSkew => "TimestampSkew",
            MlsError::WrongEpoch { .. } => "WrongEpoch",
            MlsError::TooFarAhead => "TooFarAhead",
            MlsError::PendingCommit => "PendingCommit",
            MlsError::NoPendingCommit => "NoPendingCommit",
            MlsError::KeyChangeUnacknowledged(_) => "KeyChangeUnacknowledged",
            MlsError::NotMember(_) => "NotMember",
            MlsError::Evicted => "Evicted",
            MlsError::InvalidState(_) => "InvalidState",
            MlsError::VaultFormat(_) => "VaultFormat",
            MlsError::VaultDecrypt => "VaultDecrypt",
            MlsError::Mls(_) => "Mls",
            MlsError::Crypto(_) => "Crypto",
            MlsError::LoginChallenge(_) => "LoginChallenge",
            MlsError::AttachmentFormat(_) => "AttachmentFormat",
            MlsError::AttachmentHashMismatch => "AttachmentHashMismatch",
            MlsError::AttachmentCorrupt(_) => "AttachmentCorrupt",
            MlsError::NotAdmin(_) => "NotAdmin",
            MlsError::JoinRefused(_) => "JoinRefused",
            MlsError::ForkDetected { .. } => "ForkDetected",
            #[allow(unreachable_patterns)]
            _ => "Engine",
        };
        Self::new(code, e.to_string())
    }
}

/// Result alias of the web client.
pub type WebResult<T> = std::result::Result<T, WebError>;

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(what: &str, text: &str) -> WebResult<Vec<u8>> {
    B64.decode(text.trim())
        .map_err(|_| WebError::new("BadInput", format!("{what} is not valid base64")))
}

fn parse_json<'a, T: Deserialize<'a>>(what: &str, text: &'a str) -> WebResult<T> {
    serde_json::from_str(text).map_err(|e| WebError::new("BadInput", format!("{what}: {e}")))
}

fn to_json(v: &Value) -> String {
    v.to_string()
}

fn device_json(d: &DeviceRef) -> Value {
    json!({"user_id": d.user_id, "device_id": d.device_id})
}

fn trust_name(t: Option<TrustState>) -> Value {
    match t {
        Some(TrustState::Own) => json!("own"),
        Some(TrustState::Tofu) => json!("tofu"),
        Some(TrustState::Verified) => json!("verified"),
        Some(TrustState::KeyChanged) => json!("key_changed"),
        None => Value::Null,
    }
}

fn member_json(m: &MemberInfo) -> Value {
    json!({
        "user_id": m.user_id,
        "device_id": m.device_id,
        "leaf_index": m.leaf_index,
        "signature_key": b64(&m.signature_key),
        "fingerprint": m.fingerprint,
        "trust": trust_name(m.trust),
    })
}

/// An event as JSON. Application plaintext is handed over as a (lossy) UTF-8 string.
fn event_json(e: &Event) -> Value {
    match e {
        Event::ApplicationMessage {
            sender,
            plaintext,
            msg_id,
            ts,
            epoch,
        } => json!({
            "type": "application",
            "sender": device_json(sender),
            "plaintext": String::from_utf8_lossy(plaintext),
            "msg_id": msg_id,
            "ts": ts,
            "epoch": epoch,
        }),
        Event::CommitApplied {
            committer,
            epoch,
            added,
            removed,
            updated,
            epoch_authenticator,
        } => json!({
            "type": "commit",
            "committer": device_json(committer),
            "epoch": epoch,
            "added": added.iter().map(device_json).collect::<Vec<_>>(),
            "removed": removed.iter().map(device_json).collect::<Vec<_>>(),
            "updated": updated.iter().map(device_json).collect::<Vec<_>>(),
            "epoch_authenticator": b64(epoch_authenticator),
        }),
        Event::OwnCommitConfirmed {
            epoch,
            epoch_authenticator,
        } => json!({
            "type": "own_commit",
            "epoch": epoch,
            "epoch_authenticator": b64(epoch_authenticator),
        }),
        Event::PendingCommitDiscarded { epoch } => {
            json!({"type": "pending_commit_discarded", "epoch": epoch})
        }
        Event::ProposalStored { sender, kind } => json!({
            "type": "proposal",
            "sender": device_json(sender),
            "kind": format!("{kind:?}").to_lowercase(),
        }),
        Event::KeyChangeDetected(kc) => json!({
            "type": "key_change",
            "device": device_json(&kc.device),
            "old_fingerprint": parley_mls::fingerprint(&kc.old_key),
            "new_fingerprint": parley_mls::fingerprint(&kc.new_key),
        }),
        Event::RemovedFromGroup { epoch } => json!({"type": "removed", "epoch": epoch}),
        #[allow(unreachable_patterns)]
        _ => json!({"type": "other"}),
    }
}

/// A joined group as JS sees it: `{group_id, epoch, members, welcome_sender, events}`.
fn joined_json(joined: &Joined) -> Value {
    json!({
        "group_id": joined.group_id,
        "epoch": joined.epoch,
        "members": joined.members.iter().map(member_json).collect::<Vec<_>>(),
        "welcome_sender": joined.welcome_sender.as_ref().map(device_json),
        "events": joined.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn bundle_json(b: &CommitBundle) -> Value {
    json!({
        "commit": b64(&b.commit),
        "welcome": b.welcome.as_deref().map(b64),
        "group_info": b.group_info.as_deref().map(b64),
        "adds": b.adds.iter().map(device_json).collect::<Vec<_>>(),
        "removes": b.removes.iter().map(device_json).collect::<Vec<_>>(),
        "epoch": b.epoch,
        "key_changes": b.key_changes.iter().map(|k| device_json(&k.device)).collect::<Vec<_>>(),
    })
}

/// Published device keys fetched by the app (`GET /users/{id}/devices`). Remembers which users
/// were asked for but unknown, so the app can fetch them and retry (the engine's refusals
/// change nothing, so a retry is safe).
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<String, HashMap<String, Vec<u8>>>,
    misses: RefCell<BTreeSet<String>>,
}

impl Directory {
    /// Replaces what is known of one user from a `GET /users/{id}/devices` response body.
    pub fn set_user_devices(&mut self, response_json: &str) -> WebResult<()> {
        #[derive(Deserialize)]
        struct Dev {
            device_id: String,
            signature_key: String,
        }
        #[derive(Deserialize)]
        struct Resp {
            user_id: String,
            devices: Vec<Dev>,
        }
        let resp: Resp = parse_json("user devices", response_json)?;
        let mut map = HashMap::new();
        for d in resp.devices {
            map.insert(d.device_id, unb64("signature_key", &d.signature_key)?);
        }
        self.users.insert(resp.user_id, map);
        Ok(())
    }

    /// Users looked up since the last call but not known; clears the list.
    pub fn take_missing_users(&self) -> Vec<String> {
        std::mem::take(&mut *self.misses.borrow_mut())
            .into_iter()
            .collect()
    }

    fn clear_misses(&self) {
        self.misses.borrow_mut().clear();
    }
}

impl DeviceKeyValidator for Directory {
    fn published_signature_key(&self, device: &DeviceRef) -> Option<Vec<u8>> {
        let key = self
            .users
            .get(&device.user_id)
            .and_then(|m| m.get(&device.device_id))
            .cloned();
        if key.is_none() {
            self.misses.borrow_mut().insert(device.user_id.clone());
        }
        key
    }
}

/// The client: one device's engine (absent when locked), the device-key directory and the
/// vault passphrase, all in wasm memory (never in JS).
#[derive(Debug)]
pub struct Core {
    engine: Option<Engine>,
    dir: Directory,
    passphrase: Option<Zeroizing<String>>,
    opened_app_data: Option<String>,
}

impl Core {
    /// A new device identity `@user:server/DEVICE`.
    pub fn new(user_id: &str, device_id: &str) -> WebResult<Self> {
        Ok(Self::from_engine(Engine::new(
            user_id,
            device_id,
            EngineConfig::default(),
        )?))
    }

    fn from_engine(engine: Engine) -> Self {
        Self {
            engine: Some(engine),
            dir: Directory::default(),
            passphrase: None,
            opened_app_data: None,
        }
    }

    /// Restores an engine from an unsealed `export_state` blob.
    pub fn import_state(state: &[u8]) -> WebResult<Self> {
        Ok(Self::from_engine(Engine::import_state(state)?))
    }

    /// Opens a blob written by [`Core::seal`]: the engine and the app's JSON (see
    /// [`Core::take_app_data`]). Remembers the passphrase for later seals.
    pub fn open_vault(blob: &[u8], passphrase: &str) -> WebResult<Self> {
        let inner = vault::open(blob, passphrase)?;
        let bad = || WebError::new("VaultFormat", "the vault content is not a web-client blob");
        if inner.len() < 12 || &inner[..8] != WEB_MAGIC {
            return Err(bad());
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&inner[8..12]);
        let len = u32::from_be_bytes(len) as usize;
        let end = 12usize.checked_add(len).ok_or_else(bad)?;
        let state = inner.get(12..end).ok_or_else(bad)?;
        let app = inner.get(end..).ok_or_else(bad)?;
        let app = std::str::from_utf8(app).map_err(|_| bad())?.to_owned();
        let mut core = Self::from_engine(Engine::import_state(state)?);
        core.passphrase = Some(Zeroizing::new(passphrase.to_owned()));
        core.opened_app_data = Some(app);
        Ok(core)
    }

    /// The app JSON found by [`Core::open_vault`] (once).
    pub fn take_app_data(&mut self) -> Option<String> {
        self.opened_app_data.take()
    }

    /// Sets the passphrase later seals use.
    pub fn set_passphrase(&mut self, passphrase: &str) {
        self.passphrase = Some(Zeroizing::new(passphrase.to_owned()));
    }

    /// Whether a passphrase is set.
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// Seals engine state + `app_data` (JSON) under the stored passphrase: Argon2id +
    /// AES-256-GCM (`parley_mls::vault`). The result is what goes to IndexedDB.
    pub fn seal(&self, app_data: &str) -> WebResult<Vec<u8>> {
        let pass = self
            .passphrase
            .as_ref()
            .ok_or_else(|| WebError::new("NoPassphrase", "no vault passphrase is set"))?;
        let state = self.engine()?.export_state()?;
        let len = u32::try_from(state.len())
            .map_err(|_| WebError::new("InvalidState", "state too large"))?;
        let mut inner = Zeroizing::new(Vec::with_capacity(12 + state.len() + app_data.len()));
        inner.extend_from_slice(WEB_MAGIC);
        inner.extend_from_slice(&len.to_be_bytes());
        inner.extend_from_slice(&state);
        inner.extend_from_slice(app_data.as_bytes());
        Ok(vault::seal(&inner, pass)?)
    }

    /// Wipes every key from memory (engine store, signer, passphrase, directory).
    pub fn lock(&mut self) {
        if let Some(e) = self.engine.take() {
            e.lock();
        }
        self.passphrase = None;
        self.opened_app_data = None;
        self.dir = Directory::default();
    }

    /// Whether the engine was wiped by [`Core::lock`].
    pub fn is_locked(&self) -> bool {
        self.engine.is_none()
    }

    fn engine(&self) -> WebResult<&Engine> {
        self.engine
            .as_ref()
            .ok_or_else(|| WebError::new("Locked", "the client is locked"))
    }

    fn engine_mut(&mut self) -> WebResult<(&mut Engine, &Directory)> {
        let dir = &self.dir;
        dir.clear_misses();
        self.engine
            .as_mut()
            .map(|e| (e, dir))
            .ok_or_else(|| WebError::new("Locked", "the client is locked"))
    }

    /// The unsealed engine state (secret: for tests and tools only; the app uses `seal`).
    pub fn export_state(&self) -> WebResult<Zeroizing<Vec<u8>>> {
        Ok(self.engine()?.export_state()?)
    }

    // ----- identity -----

    /// `@localpart:server`.
    pub fn user_id(&self) -> WebResult<String> {
        Ok(self.engine()?.device().user_id.clone())
    }

    /// Server-assigned device id.
    pub fn device_id(&self) -> WebResult<String> {
        Ok(self.engine()?.device().device_id.clone())
    }

    /// Base64 of the raw Ed25519 key, for `PUT /devices/{id}/signature_key`.
    pub fn signature_key(&self) -> WebResult<String> {
        Ok(b64(&self.engine()?.signature_public_key()))
    }

    /// This device's fingerprint.
    pub fn fingerprint(&self) -> WebResult<String> {
        Ok(self.engine()?.fingerprint())
    }

    // ----- key packages -----

    /// `count` key packages as a JSON array of base64 strings.
    pub fn generate_key_packages(&mut self, count: usize) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        let kps = e.generate_key_packages(count.min(500))?;
        Ok(to_json(&json!(kps
            .iter()
            .map(|k| b64(k))
            .collect::<Vec<_>>())))
    }

    /// A last-resort key package, base64.
    pub fn generate_last_resort_key_package(&mut self) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(b64(&e.generate_last_resort_key_package()?))
    }

    /// Ordinary key packages whose private keys are still held.
    pub fn unused_key_package_count(&self) -> WebResult<usize> {
        Ok(self.engine()?.unused_key_package_count())
    }

    /// Whether a last-resort key package is held.
    pub fn has_last_resort_key_package(&self) -> WebResult<bool> {
        Ok(self.engine()?.has_last_resort_key_package())
    }

    // ----- directory -----

    /// Records a `GET /users/{id}/devices` response (JSON).
    pub fn set_user_devices(&mut self, response_json: &str) -> WebResult<()> {
        self.dir.set_user_devices(response_json)
    }

    /// JSON array of users the last operation needed but the directory did not know.
    pub fn take_missing_users(&self) -> String {
        to_json(&json!(self.dir.take_missing_users()))
    }

    // ----- groups -----

    /// Creates group `!opaque:server` (registered at the hub with `POST /groups` first).
    pub fn create_group(&mut self, group_id: &str) -> WebResult<()> {
        let (e, _) = self.engine_mut()?;
        Ok(e.create_group(group_id)?)
    }

    /// Creates a group with roles (docs/protocol.md#group-roles): this user is its only admin.
    pub fn create_group_with_roles(&mut self, group_id: &str) -> WebResult<()> {
        let (e, _) = self.engine_mut()?;
        Ok(e.create_group_with_roles(group_id)?)
    }

    /// The group's roles as JSON: `{"admins": [user ids]}`, or `null` for a group without roles.
    pub fn roles(&self, group_id: &str) -> WebResult<String> {
        let roles = self.engine()?.roles(group_id)?;
        Ok(to_json(
            &json!(roles.map(|r| json!({ "admins": r.admins }))),
        ))
    }

    /// Whether `user_id` may change the group's membership and settings.
    pub fn is_admin(&self, group_id: &str, user_id: &str) -> WebResult<bool> {
        Ok(self.engine()?.is_admin(group_id, user_id)?)
    }

    /// Commit setting the group's admins (JSON array of user ids); the bundle JSON as
    /// [`WebCore::add_members`].
    pub fn set_admins(&mut self, group_id: &str, admins_json: &str) -> WebResult<String> {
        let admins: Vec<String> = parse_json("admins", admins_json)?;
        let (e, _) = self.engine_mut()?;
        let bundle = e.set_admins(group_id, &admins)?;
        Ok(to_json(&bundle_json(&bundle)))
    }

    /// The group's join link (docs/protocol.md#join-links), `None` when joining by link is off.
    pub fn join_link(&self, group_id: &str) -> WebResult<Option<String>> {
        Ok(self.engine()?.join_link(group_id)?)
    }

    /// Users banned from joining by link, as a JSON array.
    pub fn banned(&self, group_id: &str) -> WebResult<String> {
        let rules = self.engine()?.join_rules(group_id)?.unwrap_or_default();
        Ok(to_json(&json!(rules.banned)))
    }

    /// Commit turning joining by link on with a fresh code (or rotating the code, so that
    /// links handed out before stop working); the bundle JSON as [`WebCore::add_members`].
    pub fn open_join_link(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(&e.open_join_link(group_id)?)))
    }

    /// Commit turning joining by link off.
    pub fn close_join_link(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(&e.close_join_link(group_id)?)))
    }

    /// Commit banning (or unbanning) `user_id` from joining by link.
    pub fn set_banned(&mut self, group_id: &str, user_id: &str, banned: bool) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(
            &e.set_banned(group_id, user_id, banned)?,
        )))
    }

    /// Joins by external commit from the group's current GroupInfo (base64, from
    /// `POST /groups/{group_id}/join_info`) with the link's `code`. The group is held at the
    /// new epoch at once. Returns `{group_id, epoch, members, events, bundle}`: submit
    /// `bundle` with `POST /groups/{group_id}/commit` (no confirmation needed) and call
    /// [`WebCore::forget_group`] if the hub refuses it.
    pub fn join_by_link(
        &mut self,
        group_id: &str,
        group_info_b64: &str,
        code: &str,
    ) -> WebResult<String> {
        let group_info = unb64("group info", group_info_b64)?;
        let (e, dir) = self.engine_mut()?;
        let (joined, bundle) = e.join_by_link(group_id, &group_info, code, dir)?;
        Ok(to_json(&json!({
            "group_id": joined.group_id,
            "epoch": joined.epoch,
            "members": joined.members.iter().map(member_json).collect::<Vec<_>>(),
            "events": joined.events.iter().map(event_json).collect::<Vec<_>>(),
            "bundle": bundle_json(&bundle),
        })))
    }

    /// Drops a group with its MLS state (a join by link the hub refused).
    pub fn forget_group(&mut self, group_id: &str) -> WebResult<()> {
        let (e, _) = self.engine_mut()?;
        Ok(e.forget_group(group_id)?)
    }

    /// The group's disappearing-messages timer in milliseconds
    /// (docs/protocol.md#disappearing-messages), `None` when messages stay.
    pub fn disappearing_after_ms(&self, group_id: &str) -> WebResult<Option<f64>> {
        Ok(self
            .engine()?
            .disappearing_after_ms(group_id)?
            .map(|ms| ms as f64))
    }

    /// Commit setting the disappearing-messages timer (`None`: off); the bundle JSON as
    /// [`WebCore::add_members`]. A timer outside 1 s – 1 year is `BadInput`.
    pub fn set_disappearing(&mut self, group_id: &str, after_ms: Option<f64>) -> WebResult<String> {
        let after_ms = match after_ms {
            None => None,
            Some(ms) if ms.is_finite() && ms >= 0.0 && ms <= u64::MAX as f64 => Some(ms as u64),
            Some(_) => return Err(WebError::new("BadInput", "the timer is not a number of ms")),
        };
        if let Some(ms) = after_ms {
            parley_mls::Disappearing::new(ms)
                .map_err(|e| WebError::new("BadInput", e.to_string()))?;
        }
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(
            &e.set_disappearing(group_id, after_ms)?,
        )))
    }

    /// JSON array of group ids held.
    pub fn group_ids(&self) -> WebResult<String> {
        Ok(to_json(&json!(self.engine()?.group_ids())))
    }

    /// Current epoch of a group.
    pub fn epoch(&self, group_id: &str) -> WebResult<u64> {
        Ok(self.engine()?.epoch(group_id)?)
    }

    /// Whether this device is still a member.
    pub fn is_active(&self, group_id: &str) -> WebResult<bool> {
        Ok(self.engine()?.is_active(group_id)?)
    }

    /// Whether an own commit waits for the hub.
    pub fn has_pending_commit(&self, group_id: &str) -> WebResult<bool> {
        Ok(self.engine()?.has_pending_commit(group_id)?)
    }

    /// JSON array of members `{user_id, device_id, leaf_index, signature_key, fingerprint,
    /// trust}`.
    pub fn members(&self, group_id: &str) -> WebResult<String> {
        let members = self.engine()?.members(group_id)?;
        Ok(to_json(&json!(members
            .iter()
            .map(member_json)
            .collect::<Vec<_>>())))
    }

    /// Commit adding the devices of claimed key packages (JSON array of base64, as found in
    /// `POST /keys/claim`'s `key_packages`). Returns the bundle JSON: `{commit, welcome,
    /// group_info, adds, removes, epoch, key_changes}`.
    pub fn add_members(&mut self, group_id: &str, key_packages_json: &str) -> WebResult<String> {
        let kps: Vec<String> = parse_json("key packages", key_packages_json)?;
        let kps = kps
            .iter()
            .map(|k| unb64("key package", k))
            .collect::<WebResult<Vec<_>>>()?;
        let (e, dir) = self.engine_mut()?;
        let bundle = e.add_members(group_id, &kps, dir)?;
        Ok(to_json(&bundle_json(&bundle)))
    }

    /// Commit removing devices (JSON array of `{user_id, device_id}`).
    pub fn remove_members(&mut self, group_id: &str, devices_json: &str) -> WebResult<String> {
        let devices: Vec<DeviceRef> = parse_json("devices", devices_json)?;
        let (e, _) = self.engine_mut()?;
        let bundle = e.remove_members(group_id, &devices)?;
        Ok(to_json(&bundle_json(&bundle)))
    }

    /// Commit removing every device of `user_id`.
    pub fn remove_user(&mut self, group_id: &str, user_id: &str) -> WebResult<String> {
        let devices: Vec<DeviceRef> = self
            .engine()?
            .members(group_id)?
            .into_iter()
            .filter(|m| m.user_id == user_id)
            .map(|m| DeviceRef {
                user_id: m.user_id,
                device_id: m.device_id,
            })
            .collect();
        if devices.is_empty() {
            return Err(WebError::new(
                "NotMember",
                format!("{user_id} is not a member"),
            ));
        }
        let (e, _) = self.engine_mut()?;
        let bundle = e.remove_members(group_id, &devices)?;
        Ok(to_json(&bundle_json(&bundle)))
    }

    /// Commit updating this device's leaf (fresh keys).
    pub fn self_update(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(&e.self_update(group_id)?)))
    }

    /// Commit of the stored proposals (e.g. another member's leave).
    pub fn commit_pending_proposals(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&bundle_json(
            &e.commit_pending_proposals(group_id)?,
        )))
    }

    /// Proposal removing this device (base64), for another member to commit.
    pub fn leave_group(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(b64(&e.leave_group(group_id)?))
    }

    /// The hub accepted the pending commit: merge it. Returns the event JSON.
    pub fn confirm_commit(&mut self, group_id: &str) -> WebResult<String> {
        let (e, _) = self.engine_mut()?;
        Ok(to_json(&event_json(&e.confirm_pending_commit(group_id)?)))
    }

    /// The hub refused the pending commit (409): forget it.
    pub fn discard_commit(&mut self, group_id: &str) -> WebResult<()> {
        let (e, _) = self.engine_mut()?;
        Ok(e.discard_pending_commit(group_id)?)
    }

    /// Joins from a Welcome (base64). Returns `{group_id, epoch, members, welcome_sender,
    /// events}`; `welcome_sender` is the device that signed the Welcome (`null` if unknown).
    pub fn join(&mut self, welcome_b64: &str) -> WebResult<String> {
        let welcome = unb64("welcome", welcome_b64)?;
        let (e, dir) = self.engine_mut()?;
        let joined = e.join_from_welcome(&welcome, dir)?;
        Ok(to_json(&joined_json(&joined)))
    }

    /// Joins again from a Welcome (base64) that re-adds this device to a group whose state it
    /// lost (docs/protocol.md#fork-recovery), replacing that state; returns as [`WebCore::join`].
    pub fn rejoin(&mut self, welcome_b64: &str) -> WebResult<String> {
        let welcome = unb64("welcome", welcome_b64)?;
        let (e, dir) = self.engine_mut()?;
        let joined = e.rejoin_from_welcome(&welcome, dir)?;
        Ok(to_json(&joined_json(&joined)))
    }

    /// Commit removing the device `user_id`/`device_id`, which lost the group's state, and
    /// adding it again from `key_package_b64` (a fresh package of that device); the bundle
    /// JSON as [`WebCore::add_members`].
    pub fn readd_forked(
        &mut self,
        group_id: &str,
        user_id: &str,
        device_id: &str,
        key_package_b64: &str,
    ) -> WebResult<String> {
        let kp = unb64("key package", key_package_b64)?;
        let forked = DeviceRef::new(user_id, device_id)?;
        let in_sync: Vec<DeviceRef> = self
            .engine()?
            .members(group_id)?
            .into_iter()
            .filter_map(|m| DeviceRef::new(&m.user_id, &m.device_id).ok())
            .filter(|d| *d != forked)
            .collect();
        let (e, dir) = self.engine_mut()?;
        let bundle = e.readd_forked_members(group_id, &in_sync, &[kp], dir)?;
        Ok(to_json(&bundle_json(&bundle)))
    }

    /// Processes one sync message object (JSON, as `/sync` or `/ws` deliver it) of a group.
    /// Returns a JSON array of events.
    pub fn process(&mut self, group_id: &str, message_json: &str) -> WebResult<String> {
        #[derive(Deserialize)]
        struct Wire {
            sender: DeviceRef,
            epoch: u64,
            ts: u64,
            message: String,
            #[serde(default)]
            adds: Option<Vec<DeviceRef>>,
            #[serde(default)]
            removes: Option<Vec<DeviceRef>>,
        }
        let wire: Wire = parse_json("message", message_json)?;
        let bytes = unb64("message", &wire.message)?;
        let envelope = parley_mls::Envelope {
            sender: Some(wire.sender),
            epoch: wire.epoch,
            ts: wire.ts,
            adds: wire.adds.unwrap_or_default(),
            removes: wire.removes.unwrap_or_default(),
        };
        let (e, dir) = self.engine_mut()?;
        let events = e.process(group_id, &bytes, &envelope, dir)?;
        Ok(to_json(&json!(events
            .iter()
            .map(event_json)
            .collect::<Vec<_>>())))
    }

    /// Encrypts `plaintext` (the app's JSON payload) for the group. Returns
    /// `{message, msg_id, ts, epoch}` (`msg_id` doubles as the `txn_id`).
    pub fn encrypt(&mut self, group_id: &str, plaintext: &str, now_ms: f64) -> WebResult<String> {
        if !now_ms.is_finite() || now_ms < 0.0 {
            return Err(WebError::new(
                "BadInput",
                "now_ms must be a positive number",
            ));
        }
        let (e, _) = self.engine_mut()?;
        let out = e.encrypt(group_id, plaintext.as_bytes(), now_ms as u64)?;
        Ok(to_json(&json!({
            "message": b64(&out.message),
            "msg_id": out.msg_id,
            "ts": out.ts,
            "epoch": out.epoch,
        })))
    }

    // ----- trust -----

    /// 60-digit safety number between this user and `other_user_id`.
    pub fn safety_number(&self, other_user_id: &str) -> WebResult<String> {
        Ok(self.engine()?.safety_number(other_user_id)?)
    }

    /// Marks every device of `user_id` seen in any group (un)verified. Returns how many.
    pub fn set_user_verified(&mut self, user_id: &str, verified: bool) -> WebResult<usize> {
        let devices = self.user_devices(user_id)?;
        let (e, _) = self.engine_mut()?;
        for d in &devices {
            e.set_verified(d, verified)?;
        }
        Ok(devices.len())
    }

    /// Marks one device (un)verified.
    pub fn set_verified(
        &mut self,
        user_id: &str,
        device_id: &str,
        verified: bool,
    ) -> WebResult<()> {
        let d = DeviceRef::new(user_id, device_id)?;
        let (e, _) = self.engine_mut()?;
        Ok(e.set_verified(&d, verified)?)
    }

    fn user_devices(&self, user_id: &str) -> WebResult<Vec<DeviceRef>> {
        let e = self.engine()?;
        let mut set = BTreeSet::new();
        for gid in e.group_ids() {
            for m in e.members(&gid)? {
                if m.user_id == user_id {
                    set.insert(DeviceRef {
                        user_id: m.user_id,
                        device_id: m.device_id,
                    });
                }
            }
        }
        Ok(set.into_iter().collect())
    }

    /// Trust of a user as one word: `key_changed` if any device's key changed unacknowledged,
    /// `verified` if every known device is verified, `own`, else `tofu` (or `unknown`).
    pub fn user_trust(&self, user_id: &str) -> WebResult<String> {
        let e = self.engine()?;
        let states: Vec<Option<TrustState>> = self
            .user_devices(user_id)?
            .iter()
            .map(|d| e.trust_state(d))
            .collect();
        let word = if states.is_empty() {
            "unknown"
        } else if states.contains(&Some(TrustState::KeyChanged)) {
            "key_changed"
        } else if states.iter().all(|s| *s == Some(TrustState::Verified)) {
            "verified"
        } else if states.iter().all(|s| *s == Some(TrustState::Own)) {
            "own"
        } else {
            "tofu"
        };
        Ok(word.to_owned())
    }

    /// Trust state of one device (`own`, `tofu`, `verified`, `key_changed` or null), JSON.
    pub fn trust_state(&self, user_id: &str, device_id: &str) -> WebResult<String> {
        let d = DeviceRef::new(user_id, device_id)?;
        Ok(to_json(&trust_name(self.engine()?.trust_state(&d))))
    }

    /// JSON array of unacknowledged key changes `{user_id, device_id, old_fingerprint,
    /// new_fingerprint}`.
    pub fn pending_key_changes(&self) -> WebResult<String> {
        let changes = self.engine()?.pending_key_changes();
        Ok(to_json(&json!(changes
            .iter()
            .map(|k| json!({
                "user_id": k.device.user_id,
                "device_id": k.device.device_id,
                "old_fingerprint": parley_mls::fingerprint(&k.old_key),
                "new_fingerprint": parley_mls::fingerprint(&k.new_key),
            }))
            .collect::<Vec<_>>())))
    }

    /// Accepts a device's changed key.
    pub fn acknowledge_key_change(&mut self, user_id: &str, device_id: &str) -> WebResult<()> {
        let d = DeviceRef::new(user_id, device_id)?;
        let (e, _) = self.engine_mut()?;
        Ok(e.acknowledge_key_change(&d)?)
    }
}

/// Parses a join link: `{group_id, code}` JSON, or a `BadLink` error.
pub fn parse_join_link(link: &str) -> WebResult<String> {
    let link =
        parley_mls::JoinLink::parse(link).map_err(|e| WebError::new("BadLink", e.to_string()))?;
    Ok(to_json(
        &json!({ "group_id": link.group_id.as_str(), "code": link.code }),
    ))
}

/// Seals arbitrary bytes under a passphrase (`parley_mls::vault::seal`).
pub fn vault_seal(data: &[u8], passphrase: &str) -> WebResult<Vec<u8>> {
    Ok(vault::seal(data, passphrase)?)
}

/// Opens a vault blob; a wrong passphrase is `VaultDecrypt`.
pub fn vault_open(blob: &[u8], passphrase: &str) -> WebResult<Zeroizing<Vec<u8>>> {
    Ok(vault::open(blob, passphrase)?)
}

/// Fingerprint of a base64 raw signature key.
pub fn fingerprint_of(signature_key_b64: &str) -> WebResult<String> {
    Ok(parley_mls::fingerprint(&unb64(
        "signature_key",
        signature_key_b64,
    )?))
}

/// Safety number from two users' device lists (JSON arrays of `{device_id, signature_key}`).
pub fn safety_number_of(
    user_a: &str,
    devices_a_json: &str,
    user_b: &str,
    devices_b_json: &str,
) -> WebResult<String> {
    #[derive(Deserialize)]
    struct Dev {
        device_id: String,
        signature_key: String,
    }
    let keys = |text: &str| -> WebResult<Vec<(String, Vec<u8>)>> {
        let devs: Vec<Dev> = parse_json("devices", text)?;
        devs.into_iter()
            .map(|d| Ok((d.device_id, unb64("signature_key", &d.signature_key)?)))
            .collect()
    };
    Ok(parley_mls::safety_number(
        user_a,
        &keys(devices_a_json)?,
        user_b,
        &keys(devices_b_json)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), WebError>;

    fn devices_json(c: &Core) -> WebResult<String> {
        Ok(json!({
            "user_id": c.user_id()?,
            "devices": [{"device_id": c.device_id()?, "signature_key": c.signature_key()?}],
        })
        .to_string())
    }

    fn wire(sender: &Core, epoch: u64, message: &str, extra: Value) -> WebResult<String> {
        let mut v = json!({
            "seq": 1,
            "sender": {"user_id": sender.user_id()?, "device_id": sender.device_id()?},
            "kind": "application",
            "epoch": epoch,
            "message": message,
            "ts": 4_000_000_000_000u64,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        Ok(v.to_string())
    }

    fn field(v: &Value, k: &str) -> WebResult<String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| WebError::new("Test", format!("missing {k}")))
    }

    #[test]
    fn two_clients_talk_verify_and_survive_the_vault() -> TestResult {
        let gid = "!testgroup1:a.example";
        let mut alice = Core::new("@alice:a.example", "ALICEDEV")?;
        let mut bob = Core::new("@bob:b.example", "BOBDEV")?;

        let kps: Vec<String> = parse_json("kps", &bob.generate_key_packages(2)?)?;
        assert_eq!(bob.unused_key_package_count()?, 2);

        alice.create_group(gid)?;
        // Bob's devices unknown: refused, and the missing user is reported.
        let err = alice.add_members(gid, &json!([kps[0]]).to_string());
        assert!(err.is_err());
        assert_eq!(
            alice.take_missing_users(),
            json!(["@bob:b.example"]).to_string()
        );
        alice.set_user_devices(&devices_json(&bob)?)?;
        let bundle: Value =
            parse_json("b", &alice.add_members(gid, &json!([kps[0]]).to_string())?)?;
        alice.confirm_commit(gid)?;
        assert_eq!(bundle["adds"][0]["device_id"], "BOBDEV");

        let welcome = field(&bundle, "welcome")?;
        assert!(bob.join(&welcome).is_err());
        assert_eq!(
            bob.take_missing_users(),
            json!(["@alice:a.example"]).to_string()
        );
        bob.set_user_devices(&devices_json(&alice)?)?;
        let joined: Value = parse_json("j", &bob.join(&welcome)?)?;
        assert_eq!(joined["group_id"], gid);
        assert_eq!(joined["members"].as_array().map(Vec::len), Some(2));

        let out: Value = parse_json("o", &alice.encrypt(gid, "{\"body\":\"hi\"}", 4e12)?)?;
        let events: Value = parse_json(
            "e",
            &bob.process(gid, &wire(&alice, 1, &field(&out, "message")?, json!({}))?)?,
        )?;
        assert_eq!(events[0]["type"], "application");
        assert_eq!(events[0]["plaintext"], "{\"body\":\"hi\"}");

        // Safety numbers agree; verifying flips the user's trust word.
        assert_eq!(
            alice.safety_number("@bob:b.example")?,
            bob.safety_number("@alice:a.example")?
        );
        assert_eq!(alice.user_trust("@bob:b.example")?, "tofu");
        assert_eq!(alice.set_user_verified("@bob:b.example", true)?, 1);
        assert_eq!(alice.user_trust("@bob:b.example")?, "verified");

        // Vault round trip: wrong passphrase refused, right one restores groups and app data.
        bob.set_passphrase("correct horse");
        let sealed = bob.seal("{\"convs\":1}")?;
        let wrong = Core::open_vault(&sealed, "wrong horse");
        assert_eq!(wrong.err().map(|e| e.code), Some("VaultDecrypt"));
        let mut bob2 = Core::open_vault(&sealed, "correct horse")?;
        assert_eq!(bob2.take_app_data().as_deref(), Some("{\"convs\":1}"));
        assert_eq!(bob2.group_ids()?, json!([gid]).to_string());
        bob2.set_user_devices(&devices_json(&alice)?)?;
        let out: Value = parse_json("o", &alice.encrypt(gid, "again", 4e12)?)?;
        let events: Value = parse_json(
            "e",
            &bob2.process(gid, &wire(&alice, 1, &field(&out, "message")?, json!({}))?)?,
        )?;
        assert_eq!(events[0]["plaintext"], "again");

        // Bob replies; alice decrypts.
        let out: Value = parse_json("o", &bob2.encrypt(gid, "back", 4e12)?)?;
        let events: Value = parse_json(
            "e",
            &alice.process(gid, &wire(&bob2, 1, &field(&out, "message")?, json!({}))?)?,
        )?;
        assert_eq!(events[0]["plaintext"], "back");

        // Remove bob: bob sees he was removed.
        let bundle: Value = parse_json("b", &alice.remove_user(gid, "@bob:b.example")?)?;
        alice.confirm_commit(gid)?;
        let msg = wire(
            &alice,
            1,
            &field(&bundle, "commit")?,
            json!({"kind": "commit", "adds": [], "removes": bundle["removes"].clone()}),
        )?;
        let events: Value = parse_json("e", &bob2.process(gid, &msg)?)?;
        assert!(events
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["type"] == "removed")));

        // Lock wipes; everything is refused afterwards.
        bob2.lock();
        assert!(bob2.is_locked());
        assert_eq!(bob2.user_id().err().map(|e| e.code), Some("Locked"));
        Ok(())
    }

    #[test]
    fn a_join_link_admits_a_joiner_who_every_member_then_sees() -> TestResult {
        let gid = "!joinable1:a.example";
        let mut alice = Core::new("@alice:a.example", "ALICEDEV")?;
        let mut bob = Core::new("@bob:b.example", "BOBDEV")?;
        alice.create_group_with_roles(gid)?;
        assert_eq!(alice.join_link(gid)?, None);

        let opened: Value = parse_json("b", &alice.open_join_link(gid)?)?;
        alice.confirm_commit(gid)?;
        let link = alice
            .join_link(gid)?
            .ok_or_else(|| WebError::new("Test", "no link after opening"))?;
        let parsed: Value = parse_json("l", &parse_join_link(&link)?)?;
        assert_eq!(parsed["group_id"], gid);
        let code = field(&parsed, "code")?;
        assert_eq!(
            parse_join_link("parley:!x:a.example?code=short")
                .err()
                .map(|e| e.code),
            Some("BadLink")
        );

        // A wrong code is refused by the joiner's own engine before anything is sent.
        let info = field(&opened, "group_info")?;
        bob.set_user_devices(&devices_json(&alice)?)?;
        assert_eq!(
            bob.join_by_link(gid, &info, "x").err().map(|e| e.code),
            Some("JoinRefused")
        );

        let joined: Value = parse_json("j", &bob.join_by_link(gid, &info, &code)?)?;
        assert_eq!(joined["members"].as_array().map(Vec::len), Some(2));
        assert_eq!(joined["bundle"]["adds"][0]["device_id"], "BOBDEV");
        assert!(!bob.has_pending_commit(gid)?);

        alice.set_user_devices(&devices_json(&bob)?)?;
        let msg = wire(
            &bob,
            1,
            &field(&joined["bundle"], "commit")?,
            json!({"kind": "commit", "adds": joined["bundle"]["adds"].clone(), "removes": []}),
        )?;
        let events: Value = parse_json("e", &alice.process(gid, &msg)?)?;
        assert_eq!(events[0]["type"], "commit");
        assert_eq!(alice.epoch(gid)?, bob.epoch(gid)?);
        let members: Value = parse_json("m", &alice.members(gid)?)?;
        assert_eq!(members[1]["device_id"], "BOBDEV");

        // A timer: set by the admin, seen by the member; out of range is refused.
        assert_eq!(
            alice
                .set_disappearing(gid, Some(10.0))
                .err()
                .map(|e| e.code),
            Some("BadInput")
        );
        let timer: Value = parse_json("t", &alice.set_disappearing(gid, Some(60_000.0))?)?;
        alice.confirm_commit(gid)?;
        let msg = wire(
            &alice,
            2,
            &field(&timer, "commit")?,
            json!({"kind": "commit", "adds": [], "removes": []}),
        )?;
        bob.process(gid, &msg)?;
        assert_eq!(bob.disappearing_after_ms(gid)?, Some(60_000.0));
        assert_eq!(
            bob.set_disappearing(gid, None).err().map(|e| e.code),
            Some("NotAdmin")
        );

        // Closing the link; a refused join is forgotten.
        alice.close_join_link(gid)?;
        alice.confirm_commit(gid)?;
        assert_eq!(alice.join_link(gid)?, None);
        bob.forget_group(gid)?;
        assert_eq!(bob.group_ids()?, "[]");
        Ok(())
    }

    #[test]
    fn a_device_restored_from_an_old_state_is_readded_and_rejoins() -> TestResult {
        let gid = "!forked01:a.example";
        let mut alice = Core::new("@alice:a.example", "ALICEDEV")?;
        let mut bob = Core::new("@bob:b.example", "BOBDEV")?;
        let kps: Vec<String> = parse_json("kps", &bob.generate_key_packages(2)?)?;
        alice.create_group(gid)?;
        alice.set_user_devices(&devices_json(&bob)?)?;
        bob.set_user_devices(&devices_json(&alice)?)?;
        let add: Value = parse_json("b", &alice.add_members(gid, &json!([kps[0]]).to_string())?)?;
        alice.confirm_commit(gid)?;
        bob.join(&field(&add, "welcome")?)?;
        let old = bob.export_state()?;

        let update: Value = parse_json("u", &alice.self_update(gid)?)?;
        alice.confirm_commit(gid)?;
        let msg = wire(
            &alice,
            1,
            &field(&update, "commit")?,
            json!({"kind": "commit", "adds": [], "removes": []}),
        )?;
        bob.process(gid, &msg)?;
        // Restored: a message of the epoch bob's old state never reached.
        let mut bob = Core::import_state(&old)?;
        bob.set_user_devices(&devices_json(&alice)?)?;
        let out: Value = parse_json("o", &alice.encrypt(gid, "unreadable", 4e12)?)?;
        let err = bob.process(gid, &wire(&alice, 2, &field(&out, "message")?, json!({}))?);
        assert_eq!(err.err().map(|e| e.code), Some("WrongEpoch"));

        let readd: Value = parse_json(
            "r",
            &alice.readd_forked(gid, "@bob:b.example", "BOBDEV", &kps[1])?,
        )?;
        alice.confirm_commit(gid)?;
        assert_eq!(readd["removes"][0]["device_id"], "BOBDEV");
        assert_eq!(readd["adds"][0]["device_id"], "BOBDEV");
        assert_eq!(
            bob.join(&field(&readd, "welcome")?).err().map(|e| e.code),
            Some("GroupExists")
        );
        bob.rejoin(&field(&readd, "welcome")?)?;
        let out: Value = parse_json("o", &alice.encrypt(gid, "readable again", 4e12)?)?;
        let events: Value = parse_json(
            "e",
            &bob.process(gid, &wire(&alice, 3, &field(&out, "message")?, json!({}))?)?,
        )?;
        assert_eq!(events[0]["plaintext"], "readable again");
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() -> TestResult {
        let mut c = Core::new("@carol:c.example", "CAROLDEV")?;
        assert_eq!(
            c.process("!nope:c.example", "not json")
                .err()
                .map(|e| e.code),
            Some("BadInput")
        );
        assert_eq!(c.join("%%%").err().map(|e| e.code), Some("BadInput"));
        assert_eq!(c.join("AAAA").err().map(|e| e.code), Some("InvalidMessage"));
        assert_eq!(
            c.encrypt("!nope:c.example", "x", f64::NAN)
                .err()
                .map(|e| e.code),
            Some("BadInput")
        );
        assert!(Core::open_vault(b"garbage", "pw").is_err());
        assert!(c.seal("{}").is_err());
        assert!(c.set_user_devices("{\"user_id\":1}").is_err());
        assert!(fingerprint_of("!!").is_err());
        Ok(())
    }
}
