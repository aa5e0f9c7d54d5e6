//! `/_parley/health` (the process serves) and `/_parley/ready` (it can serve requests: not
//! draining, the database answers, migrations are current).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use parley_client_api::endpoint::NoQuery;
use parley_client_api::health::{GetMetrics, Health, HealthResponse, Ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::errors::{ApiError, ApiResult, RequestError};
use crate::api::route::Routes;
use crate::state::AppState;

/// The health endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<Health, _, _>(health)
        .serve::<Ready, _, _>(ready)
        .serve_raw::<GetMetrics>(axum::routing::get(metrics))
}

/// The Prometheus text, for a scraper with the configured bearer token.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.config.metrics.bearer_token else {
        return ApiError::from(RequestError::NotFoundInPath(
            "metrics are not enabled".into(),
        ))
        .into_response();
    };
    let given = crate::accounts::session::bearer_token(&headers).unwrap_or_default();
    // Compared as digests, in constant time: neither the token nor its length leaks.
    let matches: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into();
    if !matches {
        crate::metrics::auth_failure("metrics_token");
        return ApiError::from(RequestError::MetricsUnauthorized).into_response();
    }
    record_gauges(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

fn ok() -> HealthResponse {
    HealthResponse {
        status: "ok".into(),
    }
}

async fn health(_: AppState, _: (), _: (), _: NoQuery) -> ApiResult<HealthResponse> {
    Ok(ok())
}

async fn ready(state: AppState, _: (), _: (), _: NoQuery) -> ApiResult<HealthResponse> {
    if state.drain.is_draining() {
        return Err(RequestError::NotReady("the server is shutting down".into()).into());
    }
    let mut last = state.readiness.lock().await;
    let verdict = match &*last {
        Some((at, verdict)) if at.elapsed() < RECHECK_AFTER => verdict.clone(),
        _ => {
            let verdict = check(&state).await;
            *last = Some((Instant::now(), verdict.clone()));
            verdict
        }
    };
    verdict
        .map(|()| ok())
        .map_err(|reason| RequestError::NotReady(reason).into())
}

/// How long a readiness verdict is reused.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// Whether the database answers and has every migration of this build.
async fn check(state: &AppState) -> Result<(), String> {
    match state.store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => Ok(()),
        Ok(pending) => Err(format!(
            "{} database migration(s) of this build are not applied",
            pending.len()
        )),
        Err(e) => {
            // The cause goes to the log: the answer is public.
            tracing::warn!(error = %e, "readiness: the database does not answer");
            Err("the database does not answer".into())
        }
    }
}

/// Sets the gauges read from the state and the store at each scrape.
async fn record_gauges(state: &AppState) {
    use crate::metrics::{
        DEVICES_WITHOUT_KEY_PACKAGES, KEY_PACKAGE_STOCK, OUTBOX_DEPTH, OUTBOX_OLDEST_AGE,
        WEBSOCKETS_OPEN,
    };
    /// Destinations reported before: one whose queue has emptied is reported as 0.
    static REPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    metrics::gauge!(WEBSOCKETS_OPEN).set(state.drain.open_sockets() as f64);
    let now = crate::clock::now_ms() as i64;
    if let Ok((stock, without)) = state.store.keys().stock(now).await {
        metrics::gauge!(KEY_PACKAGE_STOCK).set(stock as f64);
        metrics::gauge!(DEVICES_WITHOUT_KEY_PACKAGES).set(without as f64);
    }
    let Ok(queues) = state.store.outbox().queues().await else {
        return;
    };
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    for gone in reported
        .iter()
        .filter(|d| !queues.iter().any(|q| &q.destination == *d))
    {
        metrics::gauge!(OUTBOX_DEPTH, "destination" => gone.clone()).set(0.0);
        metrics::gauge!(OUTBOX_OLDEST_AGE, "destination" => gone.clone()).set(0.0);
    }
    reported.clear();
    for q in queues {
        let age = (now - q.oldest_ts).max(0) as f64 / 1000.0;
        metrics::gauge!(OUTBOX_DEPTH, "destination" => q.destination.clone()).set(q.queued as f64);
        metrics::gauge!(OUTBOX_OLDEST_AGE, "destination" => q.destination.clone()).set(age);
        reported.push(q.destination);
    }
}
