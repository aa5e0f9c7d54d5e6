//! Logging: `tracing` to stderr as text or JSON lines, filtered by `log.level` (or
//! `RUST_LOG`), with the dependencies that log what passes through them capped so that no
//! token, password hash or message reaches the log at any level.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

/// Dependencies that log the data passing through them, each with the most verbose level kept
/// from it whatever the filter asks for: tungstenite logs every WebSocket frame (in hex) and
/// message at `trace`, and a browser's first frame carries its access token; tokio-postgres
/// logs every statement's parameters (password hashes, refresh-token hashes, key packages,
/// messages) at `debug`.
const PAYLOAD_LOGGERS: &[(&str, Level)] = &[
    ("tungstenite", Level::DEBUG),
    ("tokio_tungstenite", Level::DEBUG),
    ("tokio_postgres", Level::INFO),
];

/// Whether a span or event of `target` at `level` may be logged: everything except what the
/// payload loggers emit above their cap.
pub fn allowed(target: &str, level: &Level) -> bool {
    PAYLOAD_LOGGERS.iter().all(|(krate, most_verbose)| {
        let within = target == *krate
            || target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.starts_with("::"));
        !within || level <= most_verbose
    })
}

/// Installs the global subscriber (and the bridge for crates that use `log`).
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let cap = filter_fn(|meta: &Metadata<'_>| allowed(meta.target(), meta.level()));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(cap))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_loggers_are_capped_and_everything_else_passes() {
        assert!(!allowed("tungstenite::protocol", &Level::TRACE));
        assert!(!allowed("tungstenite", &Level::TRACE));
        assert!(allowed("tungstenite::protocol", &Level::DEBUG));
        assert!(!allowed("tokio_tungstenite", &Level::TRACE));
        assert!(!allowed("tokio_postgres::query", &Level::DEBUG));
        assert!(allowed("tokio_postgres::connection", &Level::INFO));
        assert!(allowed("tungstenite_other", &Level::TRACE));
        assert!(allowed("parley::sync", &Level::TRACE));
        assert!(allowed("hyper::proto", &Level::TRACE));
    }
}
