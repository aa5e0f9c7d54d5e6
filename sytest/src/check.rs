//! Assertions for tests: each returns an error describing what the server did instead.

use std::fmt::Debug;

use parley_client_api::{ClientError, ErrorBody};
use serde_json::Value;

/// Checks that `result` is the protocol error `status`/`errcode` with a string `error`.
pub fn expect_error<T: Debug>(
    result: Result<T, ClientError>,
    status: u16,
    errcode: &str,
) -> anyhow::Result<ErrorBody> {
    match result {
        Ok(value) => anyhow::bail!("expected {status} {errcode}, got success: {value:?}"),
        Err(ClientError::Api { status: s, body }) if s == status && body.errcode == errcode => {
            Ok(body)
        }
        Err(e) => anyhow::bail!("expected {status} {errcode}, got {e}"),
    }
}

/// Checks that `result` is a success, naming `what` was attempted otherwise.
pub fn expect_ok<T>(result: Result<T, ClientError>, what: &str) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// Checks `actual == expected`, naming `what` was compared.
pub fn expect_eq<T: PartialEq + Debug + ?Sized>(
    actual: &T,
    expected: &T,
    what: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        actual == expected,
        "{what}: expected {expected:?}, got {actual:?}"
    );
    Ok(())
}

/// A raw HTTP answer: status and body (JSON when it parses, the text otherwise).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON; `Value::Null` when it is not JSON.
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// Checks the reply is error `status`/`errcode` with a string `error`; the body.
    pub fn expect_error(&self, status: u16, errcode: &str) -> anyhow::Result<&Value> {
        let code = self.json.get("errcode").and_then(Value::as_str);
        anyhow::ensure!(
            self.status == status && code == Some(errcode),
            "expected {status} {errcode}, got {} {}",
            self.status,
            shorten(&self.text)
        );
        anyhow::ensure!(
            self.json.get("error").is_some_and(Value::is_string),
            "error body has no string \"error\": {}",
            shorten(&self.text)
        );
        Ok(&self.json)
    }

    /// Checks the reply is 200 with a JSON object; the object.
    pub fn expect_ok(&self) -> anyhow::Result<&serde_json::Map<String, Value>> {
        anyhow::ensure!(
            self.status == 200,
            "expected 200, got {} {}",
            self.status,
            shorten(&self.text)
        );
        self.json.as_object().ok_or_else(|| {
            anyhow::anyhow!("200 body is not a JSON object: {}", shorten(&self.text))
        })
    }
}

/// Sends a raw request and reads the whole answer.
pub async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply { status, json, text })
}

/// At most 300 characters of `text`, for messages.
pub fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(300).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, errcode: &str) -> Result<(), ClientError> {
        Err(ClientError::Api {
            status,
            body: ErrorBody {
                errcode: errcode.into(),
                error: "x".into(),
                extra: Default::default(),
            },
        })
    }

    #[test]
    fn expect_error_needs_both_status_and_code() {
        assert!(expect_error(api(401, "P_UNKNOWN_TOKEN"), 401, "P_UNKNOWN_TOKEN").is_ok());
        assert!(expect_error(api(403, "P_UNKNOWN_TOKEN"), 401, "P_UNKNOWN_TOKEN").is_err());
        assert!(expect_error(api(401, "P_MISSING_TOKEN"), 401, "P_UNKNOWN_TOKEN").is_err());
        assert!(expect_error(Ok::<(), ClientError>(()), 401, "P_UNKNOWN_TOKEN").is_err());
    }

    #[test]
    fn replies_need_a_string_error() {
        let reply = Reply {
            status: 404,
            json: serde_json::json!({"errcode": "P_UNRECOGNIZED"}),
            text: String::new(),
        };
        assert!(reply.expect_error(404, "P_UNRECOGNIZED").is_err());
    }
}
