//! The Parley client–server protocol (docs/protocol.md#client-server-api).
//!
//! Every endpoint is declared once here as a type implementing [`endpoint::Endpoint`]; the
//! homeserver's router and the typed [`client::Client`] both read those declarations, so the
//! two cannot drift apart.

pub mod accounts;
pub mod admin;
pub mod client;
pub mod disappearing;
pub mod endpoint;
pub mod error;
pub mod groups;
pub mod health;
pub mod ids;
pub mod join;
pub mod keys;
pub mod media;
pub mod openapi;
pub mod params;
pub mod roles;
pub mod sync;
pub mod versions;

pub use client::{Client, ClientError};
pub use endpoint::{Auth, BodyLimit, Endpoint, EndpointInfo, Method, RateLimitClass};
pub use error::{ErrCode, ErrorBody};

/// Path prefix of the client–server API.
pub const CLIENT_PREFIX: &str = "/_parley/client/v1";

/// Every endpoint of the client–server API, in documentation order.
pub fn endpoints() -> Vec<EndpointInfo> {
    use EndpointInfo as E;
    vec![
        E::of::<versions::GetVersions>(),
        E::of::<versions::GetClientApiDocument>(),
        E::of::<versions::ApiReference>(),
        E::of::<health::Health>(),
        E::of::<health::Ready>(),
        E::of::<health::GetMetrics>(),
        E::of::<accounts::Register>(),
        E::of::<accounts::Login>(),
        E::of::<accounts::LoginChallenge>(),
        E::of::<accounts::Refresh>(),
        E::of::<accounts::Logout>(),
        E::of::<accounts::WhoAmI>(),
        E::of::<accounts::ListDevices>(),
        E::of::<accounts::DeleteDevice>(),
        E::of::<keys::BindSignatureKey>(),
        E::of::<keys::UserDevices>(),
        E::of::<keys::UploadKeys>(),
        E::of::<keys::KeyCount>(),
        E::of::<keys::ClaimKeys>(),
        E::of::<groups::CreateGroup>(),
        E::of::<groups::ListGroups>(),
        E::of::<groups::SubmitCommit>(),
        E::of::<join::GroupJoinInfo>(),
        E::of::<groups::GroupForked>(),
        E::of::<groups::SendMessage>(),
        E::of::<groups::SendEphemeral>(),
        E::of::<media::UploadMedia>(),
        E::of::<media::DownloadMedia>(),
        E::of::<sync::Sync>(),
        E::of::<sync::DeleteWelcome>(),
        E::of::<sync::WebSocket>(),
        E::of::<admin::ListUsers>(),
        E::of::<admin::GetUser>(),
        E::of::<admin::CreateUser>(),
        E::of::<admin::ResetPassword>(),
        E::of::<admin::SetAdmin>(),
        E::of::<admin::DeactivateUser>(),
        E::of::<admin::CreateRegistrationToken>(),
        E::of::<admin::ListRegistrationTokens>(),
        E::of::<admin::RevokeRegistrationToken>(),
        E::of::<admin::GetServerAcl>(),
        E::of::<admin::AddAclRule>(),
        E::of::<admin::RemoveAclRule>(),
        E::of::<admin::OutboxStatus>(),
        E::of::<admin::RetryDestination>(),
        E::of::<admin::RunRetention>(),
        E::of::<admin::AuditLog>(),
    ]
}
