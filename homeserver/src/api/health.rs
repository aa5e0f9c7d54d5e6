//! `/_parley/health` (the process serves) and `/_parley/ready` (it can serve requests: not
//! draining, the database answers, migrations are current).

use std::time::{Duration, Instant};

use parley_client_api::endpoint::NoQuery;
use parley_client_api::health::{Health, HealthResponse, Ready};

use crate::api::errors::{ApiResult, RequestError};
use crate::api::route::Routes;
use crate::state::AppState;

/// The health endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<Health, _, _>(health)
        .serve::<Ready, _, _>(ready)
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
