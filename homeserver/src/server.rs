//! Start-up: open the store, load keys, build the router, serve until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use parley_federation::keys::ServerSigningKey;
use parley_schema::{Store, StoreConfig};

use crate::accounts::tokens::TokenKeys;
use crate::config::Config;
use crate::federation::client::FederationClient;
use crate::state::AppState;

/// Runs the homeserver until SIGINT/SIGTERM, then lets in-flight requests finish and closes
/// the database.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    if config.metrics.bearer_token.is_some() && crate::metrics::install().is_none() {
        tracing::warn!("another metrics recorder is installed: /_parley/metrics will be empty");
    }
    crate::api::web_client::log_web_client_dir(&config);
    crate::data_dir::prepare(&config.data_dir)?;
    let store_config = StoreConfig {
        max_connections: config.database_max_connections,
        ..StoreConfig::default()
    };
    // Held until the server stops: a second server on the same SQLite file refuses to start.
    let _sqlite_lock = parley_schema::lock_sqlite_for_this_process(&config.database_url())?;
    let store = Store::connect(&config.database_url(), &store_config).await?;
    let tokens = TokenKeys::load_or_generate(&config.data_dir, &config.server_name)?;
    let (signing_key, created) = ServerSigningKey::load_or_generate(&config.data_dir)?;
    if created {
        tracing::info!(key_id = %signing_key.key_id().as_str(), "generated a federation signing key");
    }
    let fed = Arc::new(FederationClient::new(
        &config.federation,
        &config.server_name,
        Arc::new(signing_key),
    )?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(server_name = %config.server_name, listen = %local, backend = ?store.backend(), "parley listening");
    // A machine-readable line for scripts and test harnesses that start us on port 0.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("parley listening on {scheme}://{local}");
    if config.federation.allow_insecure_http {
        tracing::warn!("federation.allow_insecure_http is on: requests to other servers use plain HTTP (for tests on loopback only)");
    }
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::server_config(&t.cert_file, &t.key_file)?),
        None => None,
    };
    fed.acl().reload(&store).await?;
    tokio::spawn(crate::federation::acl::keep_loaded(
        fed.acl().clone(),
        store.clone(),
    ));
    let state = AppState::new(config, store.clone(), tokens, fed);
    if let Some(cluster) = store.cluster() {
        // Other processes may serve this database: share wake-ups with them.
        state.notifier.join_cluster(cluster.clone());
        state.outbox.join_cluster(cluster.clone());
        state.ephemerals.join_cluster(cluster.clone());
    }
    state.outbox.resume().await;
    tokio::spawn(crate::retention::run(state.clone()));
    tokio::spawn(crate::retention::run_expiry(state.clone()));
    tokio::spawn(state.received.clone().keep_flushing(store.clone()));
    if state.config.federation.enabled {
        // Followed groups may lag behind their hubs (a restore from backup, a fill cut short
        // by a restart): catch each up once, in the background.
        tokio::spawn(crate::federation::follower::catch_up_all(state.clone()));
    }
    let drain = state.drain.clone();
    let received = state.received.clone();
    let outbox = state.outbox.clone();
    let shutdown = {
        let drain = drain.clone();
        async move {
            shutdown_signal().await;
            tracing::info!(
                websockets = drain.open_sockets(),
                "shutdown signal: draining (ready answers 503, sockets get a reconnect hint)"
            );
            drain.start();
        }
    };
    let limits = crate::connections::ConnectionLimits {
        header_read_timeout: Duration::from_millis(state.config.limits.header_read_timeout_ms),
        max_connections: state.config.limits.max_connections,
    };
    crate::connections::serve(listener, tls, crate::api::router(state), limits, shutdown).await;
    let left = drain.sockets_closed(SOCKET_CLOSE_GRACE).await;
    received.flush(&store).await;
    outbox.release_all().await;
    tracing::info!(
        websockets_left = left,
        "shutting down: in-flight requests done, closing database"
    );
    store.close();
    Ok(())
}

/// How long a drain waits for WebSockets to take their close frame and go.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
