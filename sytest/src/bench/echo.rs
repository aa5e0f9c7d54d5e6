//! The baseline: a bare axum endpoint echoing the request body, in its own process.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

/// Path of the echo endpoint.
pub const ECHO_PATH: &str = "/echo";

/// Runs the echo server until killed (its own multi-threaded runtime, like `parley serve`).
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the echo server listens on loopback only"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route(ECHO_PATH, post(|body: Bytes| async move { body }));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!(
            "parley-bench echo listening on http://{}",
            listener.local_addr()?
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
