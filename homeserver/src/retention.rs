//! Retention jobs: a background task that, at start-up and then every
//! `retention.interval_ms`, purges expired key packages, forgets used client `txn_id`s and
//! answers to inbound federation transactions older than `retention.transactions_ms`, and,
//! when `retention.messages_ms` is set, deletes older messages that every current member
//! device has received and no other server still waits for
//! ([`parley_schema::retention::Retention::prune_messages`]); it deletes media no sent
//! message named, uploads past `retention.media_ms` and cached remote media unread for
//! `retention.remote_media_ms` ([`crate::media::run_retention`]).
//!
//! Expired key packages are never served (every read filters them), so purging them changes no
//! answer: it only frees their rows. Pruned `txn_id`s and transactions change what a very late
//! retry gets: it is treated as new.

use std::time::Duration;

use crate::clock::now_ms;
use crate::state::AppState;

/// What one run of the jobs removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired key packages purged.
    pub key_packages: usize,
    /// Used client `txn_id`s forgotten.
    pub transaction_ids: usize,
    /// Answers to inbound federation transactions forgotten.
    pub inbound_transactions: usize,
    /// Delivered messages deleted.
    pub messages: usize,
    /// Media files deleted.
    pub media: usize,
}

/// Runs the jobs now and then every `retention.interval_ms`, forever (spawned at start-up).
pub async fn run(state: AppState) {
    let period = Duration::from_millis(state.config.retention.interval_ms.max(1));
    let mut ticker = tokio::time::interval(period);
    // A run that took longer than the period is not followed by a burst of catch-up runs.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        run_once(&state).await;
    }
}

/// Wipes the ciphertext of expired disappearing messages now and then every
/// `retention.expiry_sweep_ms`, forever (spawned at start-up). Each sweep looks at what
/// expired since the previous one (the first: everything expired so far).
pub async fn run_expiry(state: AppState) {
    let period = Duration::from_millis(state.config.retention.expiry_sweep_ms.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after = i64::MIN;
    loop {
        ticker.tick().await;
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        // The wire forms kept for sockets hold the ciphertext too.
        state.wire_forms.forget_expired(now);
        match state.store.retention().wipe_expired(after, now).await {
            Ok(wiped) => {
                after = now;
                if wiped > 0 {
                    crate::metrics::messages_expired(wiped);
                    tracing::info!(wiped, "expired messages wiped");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep failed; retrying at the next run")
            }
        }
    }
}

/// One run of every job, messages kept for `retention.messages_ms` (if set).
pub async fn run_once(state: &AppState) -> Pruned {
    run_with(state, state.config.retention.messages_ms).await
}

/// One run of every job, deleting delivered messages older than `messages_ms` (none if
/// `None`). A job that fails is logged and retried at the next run; the others still run.
pub async fn run_with(state: &AppState, messages_ms: Option<u64>) -> Pruned {
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let keep = i64::try_from(state.config.retention.transactions_ms).unwrap_or(i64::MAX);
    let before = now.saturating_sub(keep);
    let store = &state.store;
    // Messages first: the txn_ids of deleted messages then go in the same run.
    let messages = match messages_ms {
        Some(ms) => {
            // What devices said they received so far counts.
            state.received.flush(store).await;
            let before = now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
            logged(
                "messages",
                store
                    .retention()
                    .prune_messages(before)
                    .await
                    .map(|p| p.messages),
            )
        }
        None => 0,
    };
    crate::metrics::messages_pruned(messages);
    let pruned = Pruned {
        messages,
        key_packages: logged(
            "key_packages",
            store.keys().purge_expired_key_packages(now).await,
        ),
        transaction_ids: logged(
            "transaction_ids",
            store.retention().prune_transaction_ids(before).await,
        ),
        inbound_transactions: logged(
            "inbound_transactions",
            store.retention().prune_inbound_transactions(before).await,
        ),
        media: crate::media::run_retention(state).await,
    };
    logged(
        "login_challenges",
        store.login_challenges().purge_expired(now).await,
    );
    if pruned != Pruned::default() {
        tracing::info!(
            key_packages = pruned.key_packages,
            transaction_ids = pruned.transaction_ids,
            inbound_transactions = pruned.inbound_transactions,
            messages = pruned.messages,
            media = pruned.media,
            "retention: pruned rows"
        );
    }
    pruned
}

/// The count of a job's rows, or 0 after logging its failure.
fn logged(job: &'static str, result: parley_schema::StoreResult<usize>) -> usize {
    result.unwrap_or_else(|e| {
        tracing::warn!(job, error = %e, "retention job failed; retrying at the next run");
        0
    })
}
