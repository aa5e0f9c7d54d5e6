//! `GET /_parley/health` and `GET /_parley/ready`: for load balancers and orchestrators
//! (docs/operations.md#health).

use serde::{Deserialize, Serialize};

crate::endpoint! {
    /// 200 while the process runs and serves HTTP; checks nothing else.
    Health: Get "/_parley/health",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => HealthResponse, errors []
}

crate::endpoint! {
    /// 200 when the database answers and every migration of this build is applied; 503
    /// `P_NOT_READY` otherwise (and while the server drains on shutdown).
    Ready: Get "/_parley/ready",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => HealthResponse, errors [NotReady]
}

/// Response of [`Health`] and [`Ready`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthResponse {
    /// `"ok"`.
    pub status: String,
}

crate::endpoint! {
    /// Prometheus metrics (text format 0.0.4), for a scraper sending
    /// `Authorization: Bearer <metrics.bearer_token>`; 401 `P_UNAUTHORIZED` without it, and 404
    /// `P_NOT_FOUND` when the server sets no token.
    GetMetrics: Get "/_parley/metrics",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => String, errors [Unauthorized, NotFound]
}
