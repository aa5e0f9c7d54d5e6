//! The media repository (docs/protocol.md#media): encrypted attachments as opaque bytes. The
//! server only ever sees ciphertext; keys travel inside MLS application messages.

use serde::{Deserialize, Serialize};

crate::endpoint! {
    /// Uploads an attachment's ciphertext (`Content-Type: application/octet-stream`, the raw
    /// bytes as the body), streamed to disk: 413 `P_TOO_LARGE` past `limits.max_upload_bytes`,
    /// 413 `P_QUOTA_EXCEEDED` past the uploader's quota.
    UploadMedia: Post "/_parley/client/v1/media",
    auth AccessToken, rate MediaUpload, body Media, path (),
    MediaBytes => UploadMediaResponse, errors [TooLarge, QuotaExceeded, Timeout]
}
crate::endpoint! {
    /// Downloads an attachment's ciphertext, from this server's repository or, for another
    /// server's media, through this server (fetched over federation once, then cached). A
    /// `Range: bytes=a-b` header is answered 206 with that part.
    DownloadMedia: Get "/_parley/client/v1/media/{server_name}/{media_id}",
    auth AccessToken, rate MediaDownload, body Default, path MediaPath,
    crate::endpoint::NoQuery => MediaBytes, errors [NotFound, UnreachableServer, TooLarge, RangeNotSatisfiable]
}

/// Raw bytes (`application/octet-stream`) in a request or response body, in place of JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBytes {}

impl schemars::JsonSchema for MediaBytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MediaBytes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
        })
    }
}

/// Response of [`UploadMedia`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadMediaResponse {
    /// The media's id on its server: 22 characters of base64url, 128 random bits.
    pub media_id: String,
    /// The server holding it (this one).
    pub server_name: String,
    /// Bytes stored.
    pub size: u64,
}

/// `{server_name}` and `{media_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MediaPath {
    /// The server the media was uploaded to.
    pub server_name: String,
    /// The media's id there.
    pub media_id: String,
}

/// Longest media id accepted (ids of other servers included).
pub const MAX_MEDIA_ID_LEN: usize = 64;

/// Whether `s` is a media id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_media_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MEDIA_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_url_safe_and_bounded() {
        assert!(is_valid_media_id("AbC_-09"));
        assert!(!is_valid_media_id(""));
        assert!(!is_valid_media_id("a/b"));
        assert!(!is_valid_media_id("a.b"));
        assert!(!is_valid_media_id(&"a".repeat(65)));
        assert!(is_valid_media_id(&"a".repeat(64)));
    }
}
