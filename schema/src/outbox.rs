//! The durable outbox: events for other servers, queued in the database transaction that
//! causes them and read back, typed, by the sender. A row is one [`OutboundEvent`]; which
//! columns each kind uses is fixed by the table's CHECK (see the `typed_outbox` migration), and
//! [`OutboxRow`] reads a row back into its event.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use crate::schema::outbox;
use crate::{with_conn, Store, StoreError, StoreResult};

/// `kind` of a row carrying a message of a group's log.
pub(crate) const MESSAGE: &str = "message";
/// `kind` of a row carrying a Welcome.
pub(crate) const WELCOME: &str = "welcome";
/// `kind` of a row carrying a device-list update.
pub(crate) const DEVICE_LIST_UPDATE: &str = "device_list_update";

/// A device an outbound event names: `{user_id, device_id}` (its JSON form in the
/// `recipients` column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutboundDevice {
    /// `@localpart:server`.
    pub user_id: String,
    /// The device's id on its server.
    pub device_id: String,
}

/// A device and its bound signature key, as a device-list update lists it (its JSON form in
/// the `devices` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundDeviceKey {
    /// The device's id.
    pub device_id: String,
    /// The raw 32-byte Ed25519 key in padded standard base64, as the update sends it.
    pub signature_key: String,
}

/// A commit's Welcome for the devices it adds on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundWelcome {
    /// The device whose commit made the Welcome.
    pub sender: OutboundDevice,
    /// The destination's added devices the Welcome is for.
    pub recipients: Vec<OutboundDevice>,
    /// The MLS Welcome message.
    pub message: Vec<u8>,
}

/// What one outbox row carries to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    /// Message `seq` of `group_id`'s log (read from the log when it is sent).
    Message {
        /// The group.
        group_id: String,
        /// The message's seq in the group's log.
        seq: i64,
    },
    /// A Welcome into `group_id`.
    Welcome {
        /// The group joined.
        group_id: String,
        /// The Welcome and whom it is for.
        welcome: OutboundWelcome,
    },
    /// A local user's current devices.
    DeviceListUpdate {
        /// The user.
        user_id: String,
        /// Their devices with a bound signature key.
        devices: Vec<OutboundDeviceKey>,
    },
}

impl OutboundEvent {
    /// The row's `kind` for this event (also the federation event's `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundEvent::Message { .. } => MESSAGE,
            OutboundEvent::Welcome { .. } => WELCOME,
            OutboundEvent::DeviceListUpdate { .. } => DEVICE_LIST_UPDATE,
        }
    }
}

/// An event queued with the commit that causes it, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxItem {
    /// The commit itself, for `destination` (the row names the seq it takes).
    Message {
        /// Server name to deliver to.
        destination: String,
    },
    /// The commit's Welcome, for `destination`'s added devices.
    Welcome {
        /// Server name to deliver to.
        destination: String,
        /// The Welcome and whom it is for.
        welcome: OutboundWelcome,
    },
}

impl OutboxItem {
    /// The accepted message or commit itself, for `destination`.
    pub fn message(destination: &str) -> OutboxItem {
        OutboxItem::Message {
            destination: destination.to_owned(),
        }
    }

    /// A Welcome for `destination`'s added devices.
    pub fn welcome(destination: &str, welcome: OutboundWelcome) -> OutboxItem {
        OutboxItem::Welcome {
            destination: destination.to_owned(),
            welcome,
        }
    }
}

/// A queued event, as the sender reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Queue order within a destination; the sender names a transaction after its rows' ids.
    pub id: i64,
    /// Server name to deliver to.
    pub destination: String,
    /// The event, or why the row does not read as one (the sender drops such a row rather
    /// than let it block the queue).
    pub event: Result<OutboundEvent, UnreadableRow>,
    /// When it was queued (ms since the Unix epoch).
    pub created_ts: i64,
}

/// An outbox row that does not read as an [`OutboundEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox row of kind {kind:?}: {reason}")]
pub struct UnreadableRow {
    /// The row's `kind`.
    pub kind: String,
    /// What is missing or malformed.
    pub reason: String,
}

/// Every column of an outbox row.
#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct OutboxColumns {
    id: i64,
    destination: String,
    kind: String,
    group_id: Option<String>,
    seq: Option<i64>,
    welcome: Option<Vec<u8>>,
    sender_user: Option<String>,
    sender_device: Option<String>,
    recipients: Option<String>,
    user_id: Option<String>,
    devices: Option<String>,
    created_ts: i64,
}

impl OutboxColumns {
    fn into_row(self) -> OutboxRow {
        let (id, destination, created_ts) = (self.id, self.destination.clone(), self.created_ts);
        let kind = self.kind.clone();
        OutboxRow {
            id,
            destination,
            event: self
                .into_event()
                .map_err(|reason| UnreadableRow { kind, reason }),
            created_ts,
        }
    }

    fn into_event(self) -> Result<OutboundEvent, String> {
        match self.kind.as_str() {
            MESSAGE => Ok(OutboundEvent::Message {
                group_id: column(self.group_id, "group_id")?,
                seq: column(self.seq, "seq")?,
            }),
            WELCOME => Ok(OutboundEvent::Welcome {
                group_id: column(self.group_id, "group_id")?,
                welcome: OutboundWelcome {
                    sender: OutboundDevice {
                        user_id: column(self.sender_user, "sender_user")?,
                        device_id: column(self.sender_device, "sender_device")?,
                    },
                    recipients: from_json(column(self.recipients, "recipients")?, "recipients")?,
                    message: column(self.welcome, "welcome")?,
                },
            }),
            DEVICE_LIST_UPDATE => Ok(OutboundEvent::DeviceListUpdate {
                user_id: column(self.user_id, "user_id")?,
                devices: from_json(column(self.devices, "devices")?, "devices")?,
            }),
            _ => Err("unknown kind".into()),
        }
    }
}

/// A column the row's kind needs.
fn column<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{name} is missing"))
}

/// A JSON column's value.
fn from_json<T: serde::de::DeserializeOwned>(json: String, name: &str) -> Result<T, String> {
    serde_json::from_str(&json).map_err(|e| format!("{name} is malformed: {e}"))
}

/// The JSON form of a list column's value.
pub(crate) fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(diesel::result::Error::SerializationError(Box::new(e))))
}

/// Queues the outbox rows of a message or commit just appended to `group_id` as `seq`, in the
/// current transaction: a commit's [`OutboxItem`]s (on an async connection), or with
/// `@messages` the destination names of a message, which also takes the `.await` (or nothing,
/// on SQLite's synchronous writer connection) to put after each statement.
macro_rules! queue_outbox {
    ($c:expr, $items:expr, $group_id:expr, $seq:expr, $ts:expr) => {
        for item in $items {
            match item {
                $crate::outbox::OutboxItem::Message { destination } => {
                    $crate::outbox::queue_outbox!(@message $c, destination, $group_id, $seq, $ts; .await);
                }
                $crate::outbox::OutboxItem::Welcome { destination, welcome } => {
                    let recipients = $crate::outbox::to_json(&welcome.recipients)?;
                    diesel::insert_into($crate::schema::outbox::table)
                        .values((
                            $crate::schema::outbox::destination.eq(destination),
                            $crate::schema::outbox::kind.eq($crate::outbox::WELCOME),
                            $crate::schema::outbox::group_id.eq($group_id),
                            $crate::schema::outbox::welcome.eq(&welcome.message),
                            $crate::schema::outbox::sender_user.eq(&welcome.sender.user_id),
                            $crate::schema::outbox::sender_device.eq(&welcome.sender.device_id),
                            $crate::schema::outbox::recipients.eq(&recipients),
                            $crate::schema::outbox::created_ts.eq($ts),
                        ))
                        .execute($c)
                        .await?;
                }
            }
        }
    };
    (@messages $c:expr, $destinations:expr, $group_id:expr, $seq:expr, $ts:expr; $($aw:tt)*) => {
        for destination in $destinations {
            $crate::outbox::queue_outbox!(@message $c, destination, $group_id, $seq, $ts; $($aw)*);
        }
    };
    (@message $c:expr, $destination:expr, $group_id:expr, $seq:expr, $ts:expr; $($aw:tt)*) => {
        diesel::insert_into($crate::schema::outbox::table)
            .values((
                $crate::schema::outbox::destination.eq($destination),
                $crate::schema::outbox::kind.eq($crate::outbox::MESSAGE),
                $crate::schema::outbox::group_id.eq($group_id),
                $crate::schema::outbox::seq.eq($seq),
                $crate::schema::outbox::created_ts.eq($ts),
            ))
            .execute($c)
            $($aw)*?;
    };
}
pub(crate) use queue_outbox;

/// The federation queue: events waiting for other servers ([`Store::outbox`]).
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'s> {
    store: &'s Store,
}

impl Store {
    /// The federation queue: events waiting for other servers.
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox { store: self }
    }
}

/// One destination's queue, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub destination: String,
    /// Events queued.
    pub queued: i64,
    /// When the oldest was queued.
    pub oldest_ts: i64,
}

impl Outbox<'_> {
    /// Every destination with queued events: how many, and since when.
    pub async fn queues(&self) -> StoreResult<Vec<QueueSummary>> {
        let rows: Vec<(String, i64, Option<i64>)> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                outbox::table
                    .group_by(outbox::destination)
                    .select((
                        outbox::destination,
                        diesel::dsl::count_star(),
                        diesel::dsl::min(outbox::created_ts),
                    ))
                    .order(outbox::destination.asc())
                    .load(conn)
                    .await?,
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|(destination, queued, oldest)| QueueSummary {
                destination,
                queued,
                oldest_ts: oldest.unwrap_or(0),
            })
            .collect())
    }

    /// Servers with queued events.
    pub async fn outbox_destinations(&self) -> StoreResult<Vec<String>> {
        with_conn!(self.store, read, |conn| {
            Ok(outbox::table
                .select(outbox::destination)
                .distinct()
                .load(conn)
                .await?)
        })
    }

    /// The oldest queued events for one destination, in order.
    pub async fn outbox_batch(&self, destination: &str, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let rows: Vec<OutboxColumns> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                outbox::table
                    .filter(outbox::destination.eq(destination))
                    .order(outbox::id.asc())
                    .limit(limit)
                    .select(OutboxColumns::as_select())
                    .load(conn)
                    .await?,
            )
        })?;
        Ok(rows.into_iter().map(OutboxColumns::into_row).collect())
    }

    /// Queued events for one destination.
    pub async fn outbox_len(&self, destination: &str) -> StoreResult<i64> {
        with_conn!(self.store, read, |conn| {
            Ok(outbox::table
                .filter(outbox::destination.eq(destination))
                .count()
                .get_result(conn)
                .await?)
        })
    }

    /// Drops `destination`'s events queued before `before_ts` (a server unreachable for too
    /// long catches up from the hubs instead); returns how many.
    pub async fn drop_outbox_before(
        &self,
        destination: &str,
        before_ts: i64,
    ) -> StoreResult<usize> {
        let destination = destination.to_owned();
        with_conn!(self.store, write, |conn| {
            Ok(diesel::delete(
                outbox::table
                    .filter(outbox::destination.eq(&destination))
                    .filter(outbox::created_ts.lt(before_ts)),
            )
            .execute(conn)
            .await?)
        })
    }

    /// Forgets delivered events.
    pub async fn delete_outbox(&self, ids: &[i64]) -> StoreResult<()> {
        let ids = ids.to_vec();
        with_conn!(self.store, write, |conn| {
            diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids)))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Queues `user_id`'s device list (a local user's `devices`) for each destination.
    pub async fn queue_device_list_update(
        &self,
        destinations: &[String],
        user_id: &str,
        devices: &[OutboundDeviceKey],
        now_ms: i64,
    ) -> StoreResult<()> {
        let (destinations, user_id) = (destinations.to_vec(), user_id.to_owned());
        let devices = to_json(&devices)?;
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                for d in &destinations {
                    diesel::insert_into(outbox::table)
                        .values((
                            outbox::destination.eq(d),
                            outbox::kind.eq(DEVICE_LIST_UPDATE),
                            outbox::user_id.eq(&user_id),
                            outbox::devices.eq(&devices),
                            outbox::created_ts.eq(now_ms),
                        ))
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use diesel::migration::MigrationSource;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::AsyncPgConnection;
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

    use super::*;
    use crate::db::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
    use crate::sqlite_conn::establish_sync;
    use crate::testing;

    /// Rows as the outbox held them before it was typed: a Welcome's sender and recipients,
    /// and a device-list update's body, as JSON in `recipients`. Row 4 was sent already.
    /// `{blob}` is the Welcome's bytes in the backend's syntax.
    const OLD_ROWS: &str = r#"
        INSERT INTO outbox (destination, kind, group_id, seq, payload, recipients, created_ts)
        VALUES
            ('b.example', 'message', '!g:a.example', 5, NULL, NULL, 1),
            ('b.example', 'welcome', '!g:a.example', NULL, {blob},
             '{"recipients":[{"device_id":"E","user_id":"@b:b.example"}],"sender":{"device_id":"D","user_id":"@a:a.example"}}', 2),
            ('b.example', 'device_list_update', '', NULL, NULL,
             '{"devices":[{"device_id":"D","signature_key":"AAAA"}],"user_id":"@a:a.example"}', 3),
            ('b.example', 'message', '!g:a.example', 6, NULL, NULL, 4);
        DELETE FROM outbox WHERE id = 4;"#;

    /// Applies the migrations before the typed outbox, writes [`OLD_ROWS`], then the rest.
    fn migrate_with_old_rows<C>(conn: &mut C, migrations: fn() -> EmbeddedMigrations, blob: &str)
    where
        C: MigrationHarness<C::Backend> + diesel::Connection,
    {
        for migration in conn.pending_migrations(migrations()).unwrap() {
            if migration.name().to_string().ends_with("_typed_outbox") {
                break;
            }
            conn.run_migration(&*migration).unwrap();
        }
        conn.batch_execute(&OLD_ROWS.replace("{blob}", blob))
            .unwrap();
        conn.run_pending_migrations(migrations()).unwrap();
    }

    /// The old rows, typed; and the next row gets an id never handed out before.
    async fn assert_old_rows_read_typed(store: &Store) {
        let events: Vec<(i64, Result<OutboundEvent, UnreadableRow>)> = store
            .outbox()
            .outbox_batch("b.example", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.event))
            .collect();
        let a = || OutboundDevice {
            user_id: "@a:a.example".into(),
            device_id: "D".into(),
        };
        assert_eq!(
            events,
            [
                (
                    1,
                    Ok(OutboundEvent::Message {
                        group_id: "!g:a.example".into(),
                        seq: 5
                    })
                ),
                (
                    2,
                    Ok(OutboundEvent::Welcome {
                        group_id: "!g:a.example".into(),
                        welcome: OutboundWelcome {
                            sender: a(),
                            recipients: vec![OutboundDevice {
                                user_id: "@b:b.example".into(),
                                device_id: "E".into(),
                            }],
                            message: vec![1, 2],
                        },
                    })
                ),
                (
                    3,
                    Ok(OutboundEvent::DeviceListUpdate {
                        user_id: "@a:a.example".into(),
                        devices: vec![OutboundDeviceKey {
                            device_id: "D".into(),
                            signature_key: "AAAA".into(),
                        }],
                    })
                ),
            ],
            "{:?}",
            store.backend()
        );
        store
            .outbox()
            .queue_device_list_update(&["b.example".into()], "@a:a.example", &[], 5)
            .await
            .unwrap();
        let ids: Vec<i64> = store
            .outbox()
            .outbox_batch("b.example", 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [1, 2, 3, 5], "{:?}", store.backend());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rows_queued_before_the_outbox_was_typed_are_read_back_typed_and_keep_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let mut conn = establish_sync(path.to_str().unwrap(), 1000).unwrap();
        migrate_with_old_rows(&mut conn, || SQLITE_MIGRATIONS, "x'0102'");
        drop(conn);
        let store = Store::connect(&testing::sqlite_url(dir.path()), &Default::default())
            .await
            .unwrap();
        assert_old_rows_read_typed(&store).await;
        store.close();

        let url = testing::fresh_postgres_url().await;
        let pg_url = url.clone();
        // diesel's migration runner is synchronous: off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            let mut conn =
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(
                    &pg_url,
                )
                .unwrap();
            migrate_with_old_rows(&mut conn, || POSTGRES_MIGRATIONS, r"'\x0102'::bytea");
        })
        .await
        .unwrap();
        let store = Store::connect(&url, &Default::default()).await.unwrap();
        assert_old_rows_read_typed(&store).await;
    }

    #[test]
    fn the_typed_outbox_migrates_back_to_the_json_it_replaced_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let mut conn = establish_sync(path.to_str().unwrap(), 1000).unwrap();
        migrate_with_old_rows(&mut conn, || SQLITE_MIGRATIONS, "x'0102'");
        let typed_outbox =
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                .unwrap()
                .into_iter()
                .find(|m| m.name().to_string().ends_with("_typed_outbox"))
                .unwrap()
                .name()
                .version()
                .as_owned();
        while conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap() != typed_outbox {}
        #[derive(diesel::QueryableByName)]
        struct Old {
            #[diesel(sql_type = diesel::sql_types::Text)]
            group_id: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            recipients: Option<String>,
        }
        let old: Vec<Old> = diesel::RunQueryDsl::load(
            diesel::sql_query("SELECT group_id, recipients FROM outbox ORDER BY id"),
            &mut conn,
        )
        .unwrap();
        let json = |o: &Old| {
            o.recipients
                .as_deref()
                .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap())
        };
        assert_eq!(old.len(), 3);
        assert_eq!(json(&old[0]), None);
        assert_eq!(
            json(&old[1]),
            Some(serde_json::json!({
                "sender": {"user_id": "@a:a.example", "device_id": "D"},
                "recipients": [{"user_id": "@b:b.example", "device_id": "E"}]}))
        );
        assert_eq!(
            json(&old[2]),
            Some(serde_json::json!({
                "user_id": "@a:a.example",
                "devices": [{"device_id": "D", "signature_key": "AAAA"}]}))
        );
        assert_eq!(old[2].group_id, "");
    }
}
