//! Password hashing (Argon2id) with bounded concurrency: each hash costs ~19 MiB and tens of
//! milliseconds of a core, so at most `2 × cores` run at once and a few more may wait; past
//! that, and after waiting too long, the caller gets 429 `P_LIMIT_EXCEEDED`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::error::AccountError;

/// Longest a request waits for a hashing slot.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Retry hint given when hashing is saturated.
const RETRY_AFTER_MS: u64 = 1000;

/// A hash of a random password, verified against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Dj0a1xnSh7q0Jm9YyZ4LsCN1jFf8fPq1m5oU4d2R5M";

/// Hashes and verifies passwords, a bounded number at a time.
pub struct Passwords {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Passwords {
    /// `running` hashes at once, `waiting` more queued.
    pub fn new(running: usize, waiting: usize) -> Passwords {
        Passwords {
            slots: Arc::new(Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
        }
    }

    /// Sized for this machine: two hashes per core running, eight per core waiting.
    pub fn for_this_machine() -> Passwords {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords::new(2 * cores, 8 * cores)
    }

    /// A hashing slot, or 429 when too many wait or the wait is too long.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AccountError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = AccountError::RateLimited {
            retry_after_ms: RETRY_AFTER_MS,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy);
        }
        let permit = tokio::time::timeout(MAX_WAIT, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy),
        }
    }

    /// Hashes with Argon2id (default parameters, stored in the PHC string) off the async
    /// threads.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, AccountError> {
        let permit = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AccountError::Internal(format!("hashing password: {e}")))
        })
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user) a dummy hash is
    /// verified, so timing does not reveal whether the user exists.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, AccountError> {
        let permit = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
            let ok = match PasswordHash::new(&stored) {
                Ok(hash) => Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok(),
                Err(_) => false,
            };
            ok && known
        })
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_past_its_slots_and_queue_is_refused_with_429() {
        let passwords = Arc::new(Passwords::new(1, 1));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let p = passwords.clone();
            tasks.push(tokio::spawn(async move {
                p.hash(Zeroizing::new("a long enough password".into()))
                    .await
            }));
        }
        let mut refused = 0;
        let mut hashed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => hashed += 1,
                Err(AccountError::RateLimited { retry_after_ms }) => {
                    assert!(retry_after_ms > 0);
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // One runs, one waits; the other four are refused at once.
        assert!(hashed >= 2, "hashed {hashed}");
        assert!(refused >= 3, "refused {refused}");
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let p = Passwords::new(2, 2);
        let hash = p
            .hash(Zeroizing::new("right password".into()))
            .await
            .unwrap();
        assert!(p
            .verify(Zeroizing::new("right password".into()), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!p
            .verify(Zeroizing::new("wrong password".into()), Some(hash))
            .await
            .unwrap());
        assert!(!p
            .verify(Zeroizing::new("right password".into()), None)
            .await
            .unwrap());
    }
}
