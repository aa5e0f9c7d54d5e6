//! Parley storage: the diesel schema, migrations for SQLite and PostgreSQL, and the [`Store`]
//! through which every query runs.
//!
//! The store's queries are grouped by concept, one repository per module, each reached from
//! the store: [`Store::accounts`], [`Store::keys`], [`Store::hub_log`], [`Store::stream`],
//! [`Store::outbox`], [`Store::federation`], [`Store::retention`] and [`Store::admin`].
//!
//! One store API serves both backends. Each query is written once with diesel's DSL and
//! instantiated for both connection types by the [`with_conn!`] macro.

#[macro_use]
mod statements;
pub mod accounts;
pub mod admin;
mod append;
mod cache;
pub mod challenges;
pub mod cluster;
mod db;
pub mod federation;
mod fixed_sql;
pub mod hub_log;
pub mod keys;
pub mod leases;
pub mod media;
pub mod metrics;
pub mod outbox;
mod pg_append;
mod pg_writer;
mod readiness;
pub mod retention;
mod rows;
pub mod schema;
mod sqlite_conn;
mod sqlite_writer;
pub mod stream;
pub mod tail;
pub mod testing;
mod writer;

pub use accounts::{Accounts, Device, NewDevice, RotateOutcome, Session, User};
pub use admin::{
    AclRule, Admin, AuditEntry, Deactivated, NewAuditEntry, NewRegistrationToken,
    RegistrationToken, UserSummary,
};
pub use db::{lock_sqlite_for_this_process, Backend, Store, StoreConfig};
pub use federation::{Federation, InboundClaim, RemoteMessage, RemoteStored};
pub use hub_log::{
    Accepted, Appended, CommitToApply, EpochRoster, Group, GroupMessage, HubLog, Member,
    MessageToAppend, Refused,
};
pub use keys::{BindOutcome, ClaimedKeyPackage, KeyDirectory, NewKeyPackage};
pub use outbox::{
    OutboundDevice, OutboundDeviceKey, OutboundEvent, OutboundWelcome, Outbox, OutboxItem,
    OutboxRow, QueueSummary, UnreadableRow,
};
pub use retention::{RetainedRows, Retention};
pub use stream::{DeliveryStream, Welcome};
pub use tail::{Tail, TailEvent, TailRead};

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (e.g. the user id is taken).
    #[error("already exists")]
    Conflict,
    /// The database refused or failed a query.
    #[error("database: {0}")]
    Database(diesel::result::Error),
    /// No connection could be had from the pool.
    #[error("connection pool: {0}")]
    Pool(String),
    /// The database URL is not one this store understands.
    #[error("unsupported database url (use sqlite://PATH or postgres://...)")]
    BadUrl,
    /// A migration failed to apply.
    #[error("migration: {0}")]
    Migration(String),
    /// Another process has this SQLite database open: SQLite serves one process.
    #[error(
        "the SQLite database {0} is in use by another parley process; SQLite serves one \
         process (stop the other one first)"
    )]
    InUse(String),
    /// A write would take a quota past its bound; nothing was written.
    #[error("quota exceeded: {0}")]
    Quota(String),
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => StoreError::Conflict,
            other => StoreError::Database(other),
        }
    }
}

/// Result alias of this crate.
pub type StoreResult<T> = Result<T, StoreError>;
