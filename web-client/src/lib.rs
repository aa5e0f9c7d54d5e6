//! Parley web client: wasm-bindgen bindings over `parley-mls`.
//!
//! HTTP and the WebSocket stay in JS (`fetch`/`WebSocket`): the engine does no I/O, and a
//! JS transport keeps the wasm small and needs no TLS stack in Rust. Values cross the boundary
//! as JSON strings (parsed by `app/engine.js`) and standard padded base64 for MLS bytes, the
//! wire encoding of the client API (docs/protocol.md#wire-details). Errors are JS `Error`s whose message starts
//! with a stable code in brackets, e.g. `[VaultDecrypt] wrong passphrase or tampered vault`.
//!
//! Secrets stay in wasm memory: the engine state leaves it only sealed (`Client::seal`), and
//! the vault passphrase is kept inside the `Client` (never in JS variables) so the app can
//! reseal after each change. `lock()` wipes both.

pub mod core;

use wasm_bindgen::prelude::*;

use crate::core::{Core, WebError};

fn js(e: WebError) -> JsError {
    JsError::new(&e.to_string())
}

type JsResult<T> = std::result::Result<T, JsError>;

/// One device's client: MLS engine, device-key directory and vault passphrase.
#[wasm_bindgen]
pub struct Client {
    core: Core,
}

#[wasm_bindgen]
impl Client {
    /// A new device identity for `user_id`/`device_id` (from register/login).
    #[wasm_bindgen(constructor)]
    pub fn new(user_id: &str, device_id: &str) -> JsResult<Client> {
        Ok(Client {
            core: Core::new(user_id, device_id).map_err(js)?,
        })
    }

    /// Opens a sealed blob from IndexedDB. Wrong passphrase: `[VaultDecrypt]`.
    #[wasm_bindgen(js_name = openVault)]
    pub fn open_vault(blob: &[u8], passphrase: &str) -> JsResult<Client> {
        Ok(Client {
            core: Core::open_vault(blob, passphrase).map_err(js)?,
        })
    }

    /// Restores from an unsealed state (tools/tests; the app uses `openVault`).
    #[wasm_bindgen(js_name = importState)]
    pub fn import_state(state: &[u8]) -> JsResult<Client> {
        Ok(Client {
            core: Core::import_state(state).map_err(js)?,
        })
    }

    /// The unsealed state (secret; tools/tests only).
    #[wasm_bindgen(js_name = exportState)]
    pub fn export_state(&self) -> JsResult<Vec<u8>> {
        Ok(self.core.export_state().map_err(js)?.to_vec())
    }

    /// The app's JSON stored beside the engine in the vault (once, after `openVault`).
    #[wasm_bindgen(js_name = takeAppData)]
    pub fn take_app_data(&mut self) -> Option<String> {
        self.core.take_app_data()
    }

    /// Sets the vault passphrase (kept in wasm memory until `lock`).
    #[wasm_bindgen(js_name = setPassphrase)]
    pub fn set_passphrase(&mut self, passphrase: &str) {
        self.core.set_passphrase(passphrase)
    }

    /// Whether a vault passphrase is set.
    #[wasm_bindgen(js_name = hasPassphrase)]
    pub fn has_passphrase(&self) -> bool {
        self.core.has_passphrase()
    }

    /// Engine state + `app_data` sealed with Argon2id + AES-256-GCM.
    pub fn seal(&self, app_data: &str) -> JsResult<Vec<u8>> {
        self.core.seal(app_data).map_err(js)
    }

    /// Wipes all keys and the passphrase from memory.
    pub fn lock(&mut self) {
        self.core.lock()
    }

    /// Whether `lock` was called.
    #[wasm_bindgen(js_name = isLocked)]
    pub fn is_locked(&self) -> bool {
        self.core.is_locked()
    }

    #[wasm_bindgen(js_name = userId)]
    pub fn user_id(&self) -> JsResult<String> {
        self.core.user_id().map_err(js)
    }

    #[wasm_bindgen(js_name = deviceId)]
    pub fn device_id(&self) -> JsResult<String> {
        self.core.device_id().map_err(js)
    }

    /// Base64 raw Ed25519 key for `PUT /devices/{id}/signature_key`.
    #[wasm_bindgen(js_name = signatureKey)]
    pub fn signature_key(&self) -> JsResult<String> {
        self.core.signature_key().map_err(js)
    }

    pub fn fingerprint(&self) -> JsResult<String> {
        self.core.fingerprint().map_err(js)
    }

    /// JSON array of base64 key packages.
    #[wasm_bindgen(js_name = generateKeyPackages)]
    pub fn generate_key_packages(&mut self, count: usize) -> JsResult<String> {
        self.core.generate_key_packages(count).map_err(js)
    }

    /// Base64 last-resort key package.
    #[wasm_bindgen(js_name = generateLastResortKeyPackage)]
    pub fn generate_last_resort_key_package(&mut self) -> JsResult<String> {
        self.core.generate_last_resort_key_package().map_err(js)
    }

    #[wasm_bindgen(js_name = unusedKeyPackageCount)]
    pub fn unused_key_package_count(&self) -> JsResult<usize> {
        self.core.unused_key_package_count().map_err(js)
    }

    #[wasm_bindgen(js_name = hasLastResortKeyPackage)]
    pub fn has_last_resort_key_package(&self) -> JsResult<bool> {
        self.core.has_last_resort_key_package().map_err(js)
    }

    /// Records a `GET /users/{id}/devices` response body (JSON text).
    #[wasm_bindgen(js_name = setUserDevices)]
    pub fn set_user_devices(&mut self, response_json: &str) -> JsResult<()> {
        self.core.set_user_devices(response_json).map_err(js)
    }

    /// JSON array of users the last failed operation needed device keys for.
    #[wasm_bindgen(js_name = takeMissingUsers)]
    pub fn take_missing_users(&self) -> String {
        self.core.take_missing_users()
    }

    #[wasm_bindgen(js_name = createGroup)]
    pub fn create_group(&mut self, group_id: &str) -> JsResult<()> {
        self.core.create_group(group_id).map_err(js)
    }

    /// Creates a group with roles: this user is its only admin (`POST /groups` with
    /// `{"roles": true}` first).
    #[wasm_bindgen(js_name = createGroupWithRoles)]
    pub fn create_group_with_roles(&mut self, group_id: &str) -> JsResult<()> {
        self.core.create_group_with_roles(group_id).map_err(js)
    }

    /// `{"admins": [...]}` JSON, or `null` for a group without roles.
    pub fn roles(&self, group_id: &str) -> JsResult<String> {
        self.core.roles(group_id).map_err(js)
    }

    /// Whether `user_id` may change the group's membership and settings.
    #[wasm_bindgen(js_name = isAdmin)]
    pub fn is_admin(&self, group_id: &str, user_id: &str) -> JsResult<bool> {
        self.core.is_admin(group_id, user_id).map_err(js)
    }

    /// Commit bundle JSON setting the admins (JSON array of user ids).
    #[wasm_bindgen(js_name = setAdmins)]
    pub fn set_admins(&mut self, group_id: &str, admins_json: &str) -> JsResult<String> {
        self.core.set_admins(group_id, admins_json).map_err(js)
    }

    /// The group's join link, `undefined` when joining by link is off.
    #[wasm_bindgen(js_name = joinLink)]
    pub fn join_link(&self, group_id: &str) -> JsResult<Option<String>> {
        self.core.join_link(group_id).map_err(js)
    }

    /// JSON array of users banned from joining by link.
    pub fn banned(&self, group_id: &str) -> JsResult<String> {
        self.core.banned(group_id).map_err(js)
    }

    /// Commit bundle JSON turning joining by link on, or rotating its code.
    #[wasm_bindgen(js_name = openJoinLink)]
    pub fn open_join_link(&mut self, group_id: &str) -> JsResult<String> {
        self.core.open_join_link(group_id).map_err(js)
    }

    /// Commit bundle JSON turning joining by link off.
    #[wasm_bindgen(js_name = closeJoinLink)]
    pub fn close_join_link(&mut self, group_id: &str) -> JsResult<String> {
        self.core.close_join_link(group_id).map_err(js)
    }

    /// Commit bundle JSON banning (or unbanning) a user from joining by link.
    #[wasm_bindgen(js_name = setBanned)]
    pub fn set_banned(&mut self, group_id: &str, user_id: &str, banned: bool) -> JsResult<String> {
        self.core.set_banned(group_id, user_id, banned).map_err(js)
    }

    /// Joins by external commit: `{group_id, epoch, members, events, bundle}` JSON.
    #[wasm_bindgen(js_name = joinByLink)]
    pub fn join_by_link(
        &mut self,
        group_id: &str,
        group_info_b64: &str,
        code: &str,
    ) -> JsResult<String> {
        self.core
            .join_by_link(group_id, group_info_b64, code)
            .map_err(js)
    }

    /// Drops a group with its MLS state.
    #[wasm_bindgen(js_name = forgetGroup)]
    pub fn forget_group(&mut self, group_id: &str) -> JsResult<()> {
        self.core.forget_group(group_id).map_err(js)
    }

    /// The group's disappearing-messages timer in ms, `undefined` when messages stay.
    #[wasm_bindgen(js_name = disappearingAfterMs)]
    pub fn disappearing_after_ms(&self, group_id: &str) -> JsResult<Option<f64>> {
        self.core.disappearing_after_ms(group_id).map_err(js)
    }

    /// Commit bundle JSON setting the disappearing-messages timer (`undefined`/`null`: off).
    #[wasm_bindgen(js_name = setDisappearing)]
    pub fn set_disappearing(&mut self, group_id: &str, after_ms: Option<f64>) -> JsResult<String> {
        self.core.set_disappearing(group_id, after_ms).map_err(js)
    }

    /// Joins again from a Welcome re-adding this device after a fork (replaces the state).
    pub fn rejoin(&mut self, welcome_b64: &str) -> JsResult<String> {
        self.core.rejoin(welcome_b64).map_err(js)
    }

    /// Commit bundle JSON re-adding a device that lost the group's state.
    #[wasm_bindgen(js_name = readdForked)]
    pub fn readd_forked(
        &mut self,
        group_id: &str,
        user_id: &str,
        device_id: &str,
        key_package_b64: &str,
    ) -> JsResult<String> {
        self.core
            .readd_forked(group_id, user_id, device_id, key_package_b64)
            .map_err(js)
    }

    #[wasm_bindgen(js_name = groupIds)]
    pub fn group_ids(&self) -> JsResult<String> {
        self.core.group_ids().map_err(js)
    }

    pub fn epoch(&self, group_id: &str) -> JsResult<f64> {
        self.core.epoch(group_id).map(|e| e as f64).map_err(js)
    }

    #[wasm_bindgen(js_name = isActive)]
    pub fn is_active(&self, group_id: &str) -> JsResult<bool> {
        self.core.is_active(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = hasPendingCommit)]
    pub fn has_pending_commit(&self, group_id: &str) -> JsResult<bool> {
        self.core.has_pending_commit(group_id).map_err(js)
    }

    pub fn members(&self, group_id: &str) -> JsResult<String> {
        self.core.members(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = addMembers)]
    pub fn add_members(&mut self, group_id: &str, key_packages_json: &str) -> JsResult<String> {
        self.core
            .add_members(group_id, key_packages_json)
            .map_err(js)
    }

    #[wasm_bindgen(js_name = removeMembers)]
    pub fn remove_members(&mut self, group_id: &str, devices_json: &str) -> JsResult<String> {
        self.core.remove_members(group_id, devices_json).map_err(js)
    }

    #[wasm_bindgen(js_name = removeUser)]
    pub fn remove_user(&mut self, group_id: &str, user_id: &str) -> JsResult<String> {
        self.core.remove_user(group_id, user_id).map_err(js)
    }

    #[wasm_bindgen(js_name = selfUpdate)]
    pub fn self_update(&mut self, group_id: &str) -> JsResult<String> {
        self.core.self_update(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = commitPendingProposals)]
    pub fn commit_pending_proposals(&mut self, group_id: &str) -> JsResult<String> {
        self.core.commit_pending_proposals(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = leaveGroup)]
    pub fn leave_group(&mut self, group_id: &str) -> JsResult<String> {
        self.core.leave_group(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = confirmCommit)]
    pub fn confirm_commit(&mut self, group_id: &str) -> JsResult<String> {
        self.core.confirm_commit(group_id).map_err(js)
    }

    #[wasm_bindgen(js_name = discardCommit)]
    pub fn discard_commit(&mut self, group_id: &str) -> JsResult<()> {
        self.core.discard_commit(group_id).map_err(js)
    }

    pub fn join(&mut self, welcome_b64: &str) -> JsResult<String> {
        self.core.join(welcome_b64).map_err(js)
    }

    pub fn process(&mut self, group_id: &str, message_json: &str) -> JsResult<String> {
        self.core.process(group_id, message_json).map_err(js)
    }

    pub fn encrypt(&mut self, group_id: &str, plaintext: &str, now_ms: f64) -> JsResult<String> {
        self.core.encrypt(group_id, plaintext, now_ms).map_err(js)
    }

    #[wasm_bindgen(js_name = safetyNumber)]
    pub fn safety_number(&self, other_user_id: &str) -> JsResult<String> {
        self.core.safety_number(other_user_id).map_err(js)
    }

    #[wasm_bindgen(js_name = setUserVerified)]
    pub fn set_user_verified(&mut self, user_id: &str, verified: bool) -> JsResult<usize> {
        self.core.set_user_verified(user_id, verified).map_err(js)
    }

    #[wasm_bindgen(js_name = setVerified)]
    pub fn set_verified(&mut self, user_id: &str, device_id: &str, verified: bool) -> JsResult<()> {
        self.core
            .set_verified(user_id, device_id, verified)
            .map_err(js)
    }

    #[wasm_bindgen(js_name = userTrust)]
    pub fn user_trust(&self, user_id: &str) -> JsResult<String> {
        self.core.user_trust(user_id).map_err(js)
    }

    #[wasm_bindgen(js_name = trustState)]
    pub fn trust_state(&self, user_id: &str, device_id: &str) -> JsResult<String> {
        self.core.trust_state(user_id, device_id).map_err(js)
    }

    #[wasm_bindgen(js_name = pendingKeyChanges)]
    pub fn pending_key_changes(&self) -> JsResult<String> {
        self.core.pending_key_changes().map_err(js)
    }

    #[wasm_bindgen(js_name = acknowledgeKeyChange)]
    pub fn acknowledge_key_change(&mut self, user_id: &str, device_id: &str) -> JsResult<()> {
        self.core
            .acknowledge_key_change(user_id, device_id)
            .map_err(js)
    }
}

/// Parses a join link: `{group_id, code}` JSON; a malformed link: `[BadLink]`.
#[wasm_bindgen(js_name = parseJoinLink)]
pub fn parse_join_link(link: &str) -> JsResult<String> {
    core::parse_join_link(link).map_err(js)
}

/// Seals bytes under a passphrase (Argon2id + AES-256-GCM).
#[wasm_bindgen(js_name = vaultSeal)]
pub fn vault_seal(data: &[u8], passphrase: &str) -> JsResult<Vec<u8>> {
    core::vault_seal(data, passphrase).map_err(js)
}

/// Opens a vault blob; wrong passphrase: `[VaultDecrypt]`.
#[wasm_bindgen(js_name = vaultOpen)]
pub fn vault_open(blob: &[u8], passphrase: &str) -> JsResult<Vec<u8>> {
    core::vault_open(blob, passphrase)
        .map(|z| z.to_vec())
        .map_err(js)
}

/// Fingerprint of a base64 raw signature key.
#[wasm_bindgen(js_name = fingerprintOf)]
pub fn fingerprint_of(signature_key_b64: &str) -> JsResult<String> {
    core::fingerprint_of(signature_key_b64).map_err(js)
}

/// The 60-digit safety number from two users' device keys, each a JSON array of
/// `{device_id, signature_key}` (base64), as `GET /users/{id}/devices` lists them.
#[wasm_bindgen(js_name = safetyNumberOf)]
pub fn safety_number_of(
    user_a: &str,
    devices_a_json: &str,
    user_b: &str,
    devices_b_json: &str,
) -> JsResult<String> {
    core::safety_number_of(user_a, devices_a_json, user_b, devices_b_json).map_err(js)
}

/// A file encrypted for upload (`encryptAttachment`): the ciphertext for the media store and
/// the secrets for the message's attachment descriptor. Call `free()` once read: it holds the key.
#[wasm_bindgen(js_name = EncryptedAttachment)]
pub struct WebEncryptedAttachment {
    inner: parley_mls::EncryptedAttachment,
}

#[wasm_bindgen(js_class = EncryptedAttachment)]
impl WebEncryptedAttachment {
    /// The ciphertext to upload (a copy, as a `Uint8Array`).
    #[wasm_bindgen(getter)]
    pub fn ciphertext(&self) -> Vec<u8> {
        self.inner.ciphertext.clone()
    }

    /// The AES-256 key, standard padded base64 (secret: it goes only into the MLS message).
    #[wasm_bindgen(getter)]
    pub fn key(&self) -> String {
        self.inner.key.key_base64()
    }

    /// The 7-byte nonce prefix, standard padded base64.
    #[wasm_bindgen(getter = noncePrefix)]
    pub fn nonce_prefix(&self) -> String {
        self.inner.key.nonce_prefix_base64()
    }

    /// SHA-256 of the ciphertext, standard padded base64.
    #[wasm_bindgen(getter)]
    pub fn sha256(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.inner.sha256)
    }

    /// Ciphertext size in bytes (the descriptor's `size`).
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        self.inner.ciphertext.len() as f64
    }

    /// Plaintext size in bytes (the descriptor's `plaintext_size`).
    #[wasm_bindgen(getter = plaintextSize)]
    pub fn plaintext_size(&self) -> f64 {
        self.inner.plaintext_size as f64
    }
}

/// Maps attachment errors to stable codes: `[AttachmentHashMismatch] hash mismatch: …` (shown
/// text starts with "hash mismatch"), `[AttachmentCorrupt]`, `[AttachmentFormat]`.
fn attachment_error(e: parley_mls::MlsError) -> WebError {
    use parley_mls::MlsError;
    match e {
        MlsError::AttachmentHashMismatch => WebError::new(
            "AttachmentHashMismatch",
            "hash mismatch: the file was modified or corrupted",
        ),
        MlsError::AttachmentCorrupt(_) => WebError::new("AttachmentCorrupt", e.to_string()),
        MlsError::AttachmentFormat(_) => WebError::new("AttachmentFormat", e.to_string()),
        e => WebError::from(e),
    }
}

/// Encrypts a file under a fresh key (chunked AES-256-GCM, docs/protocol.md): upload
/// `ciphertext`, put `key`, `noncePrefix`, `sha256`, `size`, `plaintextSize` in the descriptor.
#[wasm_bindgen(js_name = encryptAttachment)]
pub fn encrypt_attachment(plaintext: &[u8]) -> JsResult<WebEncryptedAttachment> {
    parley_mls::encrypt_attachment(plaintext)
        .map(|inner| WebEncryptedAttachment { inner })
        .map_err(|e| js(attachment_error(e)))
}

/// Checks the downloaded ciphertext's SHA-256, then decrypts it (key, nonce prefix and hash in
/// standard padded base64). Tampered file: `[AttachmentHashMismatch] hash mismatch: …`.
#[wasm_bindgen(js_name = decryptAttachment)]
pub fn decrypt_attachment(
    ciphertext: &[u8],
    key_b64: &str,
    nonce_prefix_b64: &str,
    sha256_b64: &str,
) -> JsResult<Vec<u8>> {
    use base64::Engine as _;
    let unb64 = |what: &str, text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                js(WebError::new(
                    "BadInput",
                    format!("{what} is not valid base64"),
                ))
            })
    };
    let key = zeroize::Zeroizing::new(unb64("key", key_b64)?);
    let nonce_prefix = unb64("noncePrefix", nonce_prefix_b64)?;
    let sha256 = unb64("sha256", sha256_b64)?;
    parley_mls::decrypt_attachment(ciphertext, &key, &nonce_prefix, &sha256)
        .map_err(|e| js(attachment_error(e)))
}
