//! A typed async client over the endpoint declarations, for the web client, sytest and tools.

use crate::accounts::{self, LoginRequest, RegisterRequest, SessionResponse};
use crate::endpoint::{fill_path, path_of, Auth, Empty, Endpoint, Method, NoQuery};
use crate::error::ErrorBody;
use crate::params::WelcomePath;
use crate::versions::{GetVersions, VersionsResponse};
use crate::{groups, keys, sync};

/// What can go wrong calling a homeserver.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a protocol error.
    #[error("{status}: {} {}", body.errcode, body.error)]
    Api { status: u16, body: ErrorBody },
    /// The request could not be sent or the answer not read.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer was not the declared response type.
    #[error("unexpected response ({status}): {detail}")]
    Decode { status: u16, detail: String },
    /// The caller passed the wrong number of path parameters or an unencodable query.
    #[error("bad request built by caller: {0}")]
    Usage(String),
    /// The endpoint needs an access token and none is set.
    #[error("no access token set")]
    NoToken,
}

impl ClientError {
    /// The protocol error code, if the server sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.errcode),
            _ => None,
        }
    }

    /// The HTTP status of a protocol error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one homeserver, optionally holding an access token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    access_token: Option<String>,
}

impl Client {
    /// A client for the homeserver at `base_url` (e.g. `http://127.0.0.1:8008`).
    pub fn new(base_url: impl Into<String>) -> Client {
        Client::with_http(reqwest::Client::new(), base_url)
    }

    /// Like [`Client::new`] with a caller-configured HTTP client.
    pub fn with_http(http: reqwest::Client, base_url: impl Into<String>) -> Client {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Client {
            http,
            base_url,
            access_token: None,
        }
    }

    /// The homeserver's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sets (or clears) the access token sent to authenticated endpoints.
    pub fn set_access_token(&mut self, token: Option<String>) {
        self.access_token = token;
    }

    /// The current access token.
    pub fn access_token(&self) -> Option<&str> {
        self.access_token.as_deref()
    }

    /// Calls endpoint `E` with its path parameters and `request`.
    pub async fn call<E: Endpoint>(
        &self,
        params: &E::Path,
        request: &E::Request,
    ) -> Result<E::Response, ClientError> {
        let path = path_of::<E>(params)
            .ok_or_else(|| ClientError::Usage(format!("path parameters for {}", E::PATH)))?;
        self.call_at::<E>(path, request).await
    }

    /// [`Client::call`] with the path's `{name}`s filled, in order, with any strings: a
    /// black-box test can name an id outside its grammar and see the server refuse it.
    pub async fn call_with_raw_path<E: Endpoint>(
        &self,
        params: &[&str],
        request: &E::Request,
    ) -> Result<E::Response, ClientError> {
        let path = fill_path(E::PATH, params)
            .ok_or_else(|| ClientError::Usage(format!("path parameters for {}", E::PATH)))?;
        self.call_at::<E>(path, request).await
    }

    /// Calls `E` at the concrete `path`.
    async fn call_at<E: Endpoint>(
        &self,
        path: String,
        request: &E::Request,
    ) -> Result<E::Response, ClientError> {
        let mut url = format!("{}{}", self.base_url, path);
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder;
        if E::METHOD.has_body() {
            builder = self.http.request(method, &url).json(request);
        } else {
            let query = serde_urlencoded::to_string(request)
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query);
            }
            builder = self.http.request(method, &url);
        }
        if matches!(E::AUTH, Auth::AccessToken | Auth::AdminToken) {
            let token = self.access_token.as_deref().ok_or(ClientError::NoToken)?;
            builder = builder.bearer_auth(token);
        }
        let response = builder.send().await?;
        decode_response::<E::Response>(response).await
    }

    /// `GET /_parley/client/versions`.
    pub async fn versions(&self) -> Result<VersionsResponse, ClientError> {
        self.call::<GetVersions>(&(), &NoQuery {}).await
    }

    /// Registers `username` and keeps the new access token.
    pub async fn register(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<SessionResponse, ClientError> {
        let request = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device_name: None,
            registration_token: None,
        };
        let session = self.call::<accounts::Register>(&(), &request).await?;
        self.access_token = Some(session.access_token.clone());
        Ok(session)
    }

    /// Logs in (new device unless `device_id` is given) and keeps the new access token.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
        device_id: Option<&str>,
    ) -> Result<SessionResponse, ClientError> {
        let request = LoginRequest::password(username, password, device_id);
        let session = self.call::<accounts::Login>(&(), &request).await?;
        self.access_token = Some(session.access_token.clone());
        Ok(session)
    }

    /// Rotates the session's tokens and keeps the new access token.
    pub async fn refresh(&mut self, refresh_token: &str) -> Result<SessionResponse, ClientError> {
        let request = accounts::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        let session = self.call::<accounts::Refresh>(&(), &request).await?;
        self.access_token = Some(session.access_token.clone());
        Ok(session)
    }

    /// `GET /whoami`.
    pub async fn whoami(&self) -> Result<accounts::WhoAmIResponse, ClientError> {
        self.call::<accounts::WhoAmI>(&(), &NoQuery {}).await
    }

    /// `POST /logout`.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call::<accounts::Logout>(&(), &Empty {})
            .await
            .map(drop)
    }

    /// `GET /devices`.
    pub async fn devices(&self) -> Result<accounts::DevicesResponse, ClientError> {
        self.call::<accounts::ListDevices>(&(), &NoQuery {}).await
    }

    /// `DELETE /devices/{device_id}`.
    pub async fn delete_device(&self, device_id: &str) -> Result<(), ClientError> {
        self.call_with_raw_path::<accounts::DeleteDevice>(&[device_id], &NoQuery {})
            .await
            .map(drop)
    }
}

/// Delivery-service calls (keys, groups, sync).
impl Client {
    /// `PUT /devices/{device_id}/signature_key` with the raw 32-byte key.
    pub async fn bind_signature_key(&self, device_id: &str, key: &[u8]) -> Result<(), ClientError> {
        let request = keys::BindSignatureKeyRequest {
            signature_key: b64(key),
        };
        self.call_with_raw_path::<keys::BindSignatureKey>(&[device_id], &request)
            .await
            .map(drop)
    }

    /// `GET /users/{user_id}/devices`.
    pub async fn user_devices(
        &self,
        user_id: &str,
    ) -> Result<keys::UserDevicesResponse, ClientError> {
        self.call_with_raw_path::<keys::UserDevices>(&[user_id], &NoQuery {})
            .await
    }

    /// `POST /keys/upload` with raw `MLSMessage` bytes.
    pub async fn upload_keys(
        &self,
        key_packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<keys::KeyCountResponse, ClientError> {
        let request = keys::UploadKeysRequest {
            key_packages: key_packages.iter().map(|k| b64(k)).collect(),
            last_resort: last_resort.map(b64),
        };
        self.call::<keys::UploadKeys>(&(), &request).await
    }

    /// `GET /keys/count`.
    pub async fn key_count(&self) -> Result<keys::KeyCountResponse, ClientError> {
        self.call::<keys::KeyCount>(&(), &NoQuery {}).await
    }

    /// `POST /keys/claim`.
    pub async fn claim_keys(
        &self,
        user_ids: &[&str],
    ) -> Result<keys::ClaimKeysResponse, ClientError> {
        let request = keys::ClaimKeysRequest {
            user_ids: user_ids.iter().map(|u| u.to_string()).collect(),
        };
        self.call::<keys::ClaimKeys>(&(), &request).await
    }

    /// `POST /groups`.
    pub async fn create_group(&self) -> Result<String, ClientError> {
        self.create_group_with(&groups::CreateGroupRequest::default())
            .await
    }

    /// `POST /groups` with a body, e.g. `{"roles": true}` for a group with roles.
    pub async fn create_group_with(
        &self,
        request: &groups::CreateGroupRequest,
    ) -> Result<String, ClientError> {
        Ok(self
            .call::<groups::CreateGroup>(&(), request)
            .await?
            .group_id)
    }

    /// `GET /groups`.
    pub async fn groups(&self) -> Result<groups::ListGroupsResponse, ClientError> {
        self.call::<groups::ListGroups>(&(), &NoQuery {}).await
    }

    /// `POST /groups/{group_id}/commit`.
    pub async fn commit(
        &self,
        group_id: &str,
        request: &groups::CommitRequest,
    ) -> Result<groups::CommitResponse, ClientError> {
        self.call_with_raw_path::<groups::SubmitCommit>(&[group_id], request)
            .await
    }

    /// `POST /groups/{group_id}/forked`: this device lost the group's state; ask to be
    /// re-added.
    pub async fn report_fork(&self, group_id: &str) -> Result<Empty, ClientError> {
        self.call_with_raw_path::<crate::groups::GroupForked>(&[group_id], &Empty {})
            .await
    }

    /// `POST /groups/{group_id}/join_info`: the GroupInfo to join by link.
    pub async fn join_info(
        &self,
        group_id: &str,
        code: &str,
    ) -> Result<crate::join::JoinInfoResponse, ClientError> {
        let request = crate::join::JoinInfoRequest {
            code: code.to_owned(),
        };
        self.call_with_raw_path::<crate::join::GroupJoinInfo>(&[group_id], &request)
            .await
    }

    /// `PUT /groups/{group_id}/send/{txn_id}` with raw `MLSMessage` bytes.
    pub async fn send(
        &self,
        group_id: &str,
        txn_id: &str,
        message: &[u8],
    ) -> Result<u64, ClientError> {
        let request = groups::SendRequest::new(b64(message));
        Ok(self
            .call_with_raw_path::<groups::SendMessage>(&[group_id, txn_id], &request)
            .await?
            .seq)
    }

    /// `GET /sync`.
    pub async fn sync(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Result<sync::SyncResponse, ClientError> {
        let request = sync::SyncRequest {
            since: since.map(str::to_owned),
            timeout_ms: Some(timeout_ms),
        };
        self.call::<sync::Sync>(&(), &request).await
    }

    /// `DELETE /welcomes/{id}`.
    pub async fn delete_welcome(&self, id: &str) -> Result<(), ClientError> {
        self.call::<sync::DeleteWelcome>(&WelcomePath { id: id.to_owned() }, &NoQuery {})
            .await
            .map(drop)
    }
}

/// Standard padded base64, as every binary value in client-API bodies.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .ok()
}

/// Reads a response: the declared type on 200, an [`ErrorBody`] otherwise.
async fn decode_response<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    if status == 200 {
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            status,
            detail: e.to_string(),
        })
    } else {
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(e) => Err(ClientError::Decode {
                status,
                detail: e.to_string(),
            }),
        }
    }
}
