//! Authentication of federation requests: the `X-Parley` signature of the origin server over
//! method, path, destination and body, checked in order of cost (header, destination, ACL,
//! the client address's budget, then the body, then a key fetch).

use axum::extract::Request;
use axum::http::header;
use parley_federation::auth::{check_destination, parse_body, verify_request, XParleyAuth};
use serde_json::Value;

use crate::api::errors::RequestError;
use crate::api::extract::{read_body, ClientIp};
use crate::federation::client::KeyAnswer;
use crate::state::AppState;

/// An authenticated federation request: the origin server and its JSON body, if any.
pub struct Federated {
    /// The origin server, lower case.
    pub origin: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl Federated {
    /// Authenticates `req` and reads its body; a refusal is counted by reason.
    pub async fn authenticate(req: Request, state: &AppState) -> Result<Federated, RequestError> {
        let result = Self::check(req, state).await;
        if let Err(e) = &result {
            crate::metrics::federation_refused(refusal_reason(e));
        }
        result
    }

    async fn check(req: Request, state: &AppState) -> Result<Federated, RequestError> {
        if !state.config.federation.enabled {
            return Err(RequestError::FederationDisabled);
        }
        let method = req.method().as_str().to_owned();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let ip = ClientIp::of(state, req.headers(), req.extensions())?;
        // Everything that costs little comes first: the header, the destination, the ACL and
        // the client address's budget, before the body is read or any key fetched.
        let auth = XParleyAuth::parse_bytes(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .ok_or(parley_federation::Error::MissingAuthorization)?,
        )?;
        check_destination(&auth, &state.config.server_name)?;
        if !state.fed.acl().allows(&auth.origin) {
            return Err(RequestError::OriginNotAllowed(auth.origin.clone()));
        }
        state.check_federation_address_rate(ip)?;
        let limit = state.config.federation.max_request_bytes;
        let bytes = read_body(req, limit, state).await?;
        let body = parse_body((!bytes.is_empty()).then_some(&bytes[..]))?;
        let key = match state
            .fed
            .verifying_key(&auth.origin, &auth.key_id, || state.take_key_fetch(ip))
            .await
        {
            KeyAnswer::Found(key) => key,
            KeyAnswer::Throttled { retry_after_ms } => {
                return Err(RequestError::LimitExceeded { retry_after_ms })
            }
            KeyAnswer::Unavailable => {
                return Err(parley_federation::Error::UnknownKey {
                    origin: auth.origin.clone(),
                    key_id: auth.key_id.as_str().to_owned(),
                }
                .into())
            }
        };
        verify_request(&auth, &method, &uri, body.as_ref(), &key)?;
        // Normalised once: every later comparison, bucket and key uses the lower-case name.
        let origin = auth.origin.to_ascii_lowercase();
        // Counted only once the origin is proven, so nobody can spend another server's budget.
        state.check_federation_rate(&origin)?;
        // A server that contacts us is up: deliver what we hold for it now.
        state.outbox.contacted(&origin);
        if let Some(claimed) = body
            .as_ref()
            .and_then(|b| b.get("origin"))
            .and_then(Value::as_str)
        {
            if claimed != auth.origin {
                return Err(RequestError::OriginMismatch);
            }
        }
        Ok(Federated { origin, body })
    }
}

/// The `reason` label of a refused federation request.
fn refusal_reason(e: &RequestError) -> &'static str {
    match e {
        RequestError::FederationDisabled => "federation_disabled",
        RequestError::OriginNotAllowed(_) => "acl",
        RequestError::LimitExceeded { .. } => "rate_limited",
        RequestError::TooLarge { .. } => "too_large",
        RequestError::Timeout => "timeout",
        RequestError::OriginMismatch => "origin_mismatch",
        RequestError::NotJson(_) | RequestError::BadJson(_) => "bad_body",
        RequestError::FederationRequest(e) => match e {
            parley_federation::Error::UnknownKey { .. } => "unknown_key",
            parley_federation::Error::MissingAuthorization => "missing_authorization",
            _ => "bad_signature_or_header",
        },
        _ => "other",
    }
}
