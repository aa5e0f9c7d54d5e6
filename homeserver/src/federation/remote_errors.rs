//! Another server's answer to a submission made for our client, as our client sees it.

use parley_client_api::ErrCode;
use serde_json::{json, Map, Value};

use super::client::FedError;

/// Another server's answer to a request made for our client (a submission to a remote hub, a
/// remote device list), as our client may see it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The other server could not be reached or gave an answer that cannot be used, its
    /// authentication failures included.
    #[error("{0}")]
    Unreachable(String),
    /// One of the protocol's verdicts, passed on with its status and a body rebuilt from its
    /// known fields.
    #[error("{}", body.get("error").and_then(|e| e.as_str()).unwrap_or("remote error"))]
    Verdict { status: u16, body: Value },
}

impl From<FedError> for RemoteError {
    /// Another server's answer to a submission made for our client (a hub's verdict on a
    /// follower's commit or message) reaches the client only as one of the protocol's
    /// verdicts, rebuilt from its known fields; anything else, its authentication errors
    /// included (a client must never read another server's 401 as its own token failing),
    /// is 502 `P_UNREACHABLE_SERVER`.
    fn from(e: FedError) -> Self {
        match e {
            FedError::Refused {
                status,
                body,
                server,
            } => sanitize_remote_error(&server, status, &body),
            other => RemoteError::Unreachable(other.to_string()),
        }
    }
}

/// Verdicts another server may hand our client, with their status; other codes are 502.
const PASSED_THROUGH: [(ErrCode, u16); 8] = [
    (ErrCode::StaleEpoch, 409),
    (ErrCode::InvalidMessage, 400),
    (ErrCode::NotMember, 403),
    (ErrCode::NotAdmin, 403),
    (ErrCode::JoinRefused, 403),
    (ErrCode::TooLarge, 413),
    (ErrCode::LimitExceeded, 429),
    (ErrCode::NotFound, 404),
];

/// Longest remote `error` text passed on.
const MAX_REMOTE_ERROR_CHARS: usize = 200;

fn sanitize_remote_error(server: &str, status: u16, body: &Value) -> RemoteError {
    let code = body
        .get("errcode")
        .and_then(Value::as_str)
        .and_then(ErrCode::parse);
    let Some((code, expected)) = code.and_then(|c| PASSED_THROUGH.iter().find(|(k, _)| *k == c))
    else {
        return RemoteError::Unreachable(format!("{server} refused the request ({status})"));
    };
    if status != *expected {
        return RemoteError::Unreachable(format!("{server} answered {status}"));
    }
    let text: String = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REMOTE_ERROR_CHARS)
        .collect();
    let mut rebuilt = Map::new();
    rebuilt.insert("errcode".into(), json!(code.as_str()));
    rebuilt.insert("error".into(), json!(format!("{server}: {text}")));
    for field in ["current_epoch", "retry_after_ms", "index"] {
        if let Some(n) = body.get(field).and_then(Value::as_u64) {
            rebuilt.insert(field.into(), json!(n));
        }
    }
    RemoteError::Verdict {
        status: *expected,
        body: Value::Object(rebuilt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_auth_errors_become_502_and_verdicts_are_rebuilt() {
        for (status, body) in [
            (401, json!({"errcode": "P_UNKNOWN_TOKEN", "error": "x"})),
            (401, json!({"errcode": "P_UNAUTHORIZED", "error": "x"})),
            (403, json!({"errcode": "P_FORBIDDEN", "error": "x"})),
            (
                409,
                json!({"errcode": "P_NOT_MEMBER", "error": "wrong status"}),
            ),
            (400, json!({"errcode": "P_MADE_UP", "error": "x"})),
        ] {
            let e = sanitize_remote_error("b.example", status, &body);
            assert!(matches!(e, RemoteError::Unreachable(_)), "{body}");
        }
        let e = sanitize_remote_error(
            "b.example",
            409,
            &json!({"errcode": "P_STALE_EPOCH", "error": "epoch\nmoved", "current_epoch": 7, "evil": {"x": 1}}),
        );
        match e {
            RemoteError::Verdict { status, body } => {
                assert_eq!(status, 409);
                assert_eq!(body["errcode"], "P_STALE_EPOCH");
                assert_eq!(body["current_epoch"], 7);
                assert!(body.get("evil").is_none());
            }
            other => panic!("{other:?}"),
        }
    }
}
