//! The embedded default: one SQLite file, created on first run.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use sqlx::{
    ConnectOptions as _, Connection as _, SqliteConnection, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio_util::task::AbortOnDropHandle;

use super::{
    Asked, Conversation, DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken,
    NewSession, Rotation, Session, SessionPatch, Standing, StoreError, StoreResult, UsageRecord,
    User, UserCredentials, UserOverview, now, sql, timestamp::DbTime,
};
use crate::config::DbSettings;

pub struct SqliteStore {
    /// Reads: in WAL mode they never wait for the writer.
    pool: SqlitePool,
    /// Writes, on one connection of their own. SQLite has one writer at a
    /// time; when two connections of ours both wanted to write, the loser sat
    /// in SQLite's busy handler, which sleeps 1 to 100 ms between tries (the
    /// /chat p99 at 16 connections was 17 ms). Queued for this connection
    /// instead, writers go first come, first served, as soon as it is free.
    /// Held rather than pooled: a pool pings a connection it is given back,
    /// one more trip to its thread before the next writer could start.
    writer: Mutex<SqliteConnection>,
    /// Told of every write, so that the WAL is checkpointed off the writer's path.
    wrote: Arc<Notify>,
    _checkpointer: AbortOnDropHandle<()>,
}

/// How long the checkpointer lets writes gather before it copies them into
/// the database file.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(200);

/// The writer's own checkpoint, for when the checkpointer falls behind: a WAL
/// of this many pages (4 KiB each), where SQLite's default is 1,000.
const WRITER_CHECKPOINT_PAGES: &str = "16000";

impl SqliteStore {
    pub async fn connect(url: &str, settings: &DbSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid sqlite:// URL")?;
        let options = if url.contains(":memory:") {
            in_memory(options)
        } else {
            options
        }
        .create_if_missing(true)
        // WAL lets readers work while one writer commits.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // A checkpoint syncs the WAL and the database file; on the connection
        // that commits past the limit it held up every write queued behind
        // it (the /chat p99). The checkpointer does it instead.
        .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
        let opening = || format!("opening the SQLite database {url}");
        // First: in memory, the database lasts as long as this connection.
        let writer = options.connect().await.with_context(opening)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            // sqlx already pings each connection when it is released; another
            // ping on every acquire is one more trip to its worker thread.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .with_context(opening)?;
        if settings.migrate_on_start {
            sqlx::migrate!("src/store/migrations/sqlite")
                .run(&pool)
                .await
                .context("migrating the SQLite database")?;
        }
        let wrote = Arc::new(Notify::new());
        let checkpointer = AbortOnDropHandle::new(tokio::spawn(checkpoint_after_writes(
            pool.clone(),
            wrote.clone(),
        )));
        Ok(Self {
            pool,
            writer: Mutex::new(writer),
            wrote,
            _checkpointer: checkpointer,
        })
    }

    async fn writer(&self) -> Result<MutexGuard<'_, SqliteConnection>, sqlx::Error> {
        self.wrote.notify_one();
        Ok(self.writer.lock().await)
    }

    /// One message, and with an answer its usage, in one write transaction.
    async fn append(
        &self,
        user_id: i64,
        session_id: i64,
        message: &NewMessage,
        usage: Option<&UsageRecord>,
        now: DbTime,
    ) -> StoreResult<Message> {
        let mut writer = self.writer().await?;
        let mut tx = Self::begin_write(&mut writer).await?;
        let then = usage.map_or(Then::Nothing, Then::AddUsage);
        let (stored, _) = store_message(&mut tx, user_id, session_id, message, then, now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// SQLite allows one writer. Taking the write lock at BEGIN, instead of at the
    /// first write, stops two read-then-write transactions from deadlocking.
    async fn begin_write(
        writer: &mut SqliteConnection,
    ) -> Result<Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// `sqlite::memory:` as a database in SQLite's memdb VFS, named for this
/// store. Every connection to the name opens the same database, with a
/// file's locking, where sqlx's own in-memory database is a shared cache,
/// whose connections lock each other out table by table: a reader waits
/// for the whole of a write transaction to end. memdb has no WAL: its
/// journal is in memory, and a commit waits for reads in progress (the busy
/// timeout). The database lasts while a connection to it is open: the
/// writer's, which the store holds.
fn in_memory(options: SqliteConnectOptions) -> SqliteConnectOptions {
    static STORES: AtomicU64 = AtomicU64::new(0);
    let store = STORES.fetch_add(1, Ordering::Relaxed);
    // A name that starts with "/" is one the memdb VFS shares between connections.
    options
        .in_memory(false)
        .shared_cache(false)
        .filename(format!("/chat-api-{}-{store}", std::process::id()))
        .vfs("memdb")
}

/// Copies the WAL's pages into the database file a moment after writes, on a
/// reader's connection: a PASSIVE checkpoint never waits for the writer, nor
/// the writer for it, so its syncs are off every request's path. Idle, it
/// sleeps. Stops when the store is dropped.
async fn checkpoint_after_writes(pool: SqlitePool, wrote: Arc<Notify>) {
    loop {
        wrote.notified().await;
        tokio::time::sleep(CHECKPOINT_AFTER).await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(%error, "checkpointing the SQLite WAL");
        }
    }
}

/// What a message's statement batch does after storing it.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    /// Adds an answer's usage.
    AddUsage(&'a UsageRecord),
    /// Reads the session's newest messages, this many: a question's history.
    Recall(i64),
}

/// Bumps the user's session and stores the message in it, then does `then`,
/// in one statement batch: one trip to the connection's worker thread, where
/// a statement each was up to four. Every trip hands the work to that thread
/// and back, which took the server more CPU than SQLite's own work. The
/// stored message, and what `then` read, newest first.
/// `SessionNotFound` when the session is not the user's: nothing matched, and
/// the caller's transaction is dropped, so the usage is rolled back with it.
async fn store_message(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    user_id: i64,
    session_id: i64,
    message: &NewMessage,
    then: Then<'_>,
    now: DbTime,
) -> StoreResult<(Message, Vec<Message>)> {
    let query = match then {
        Then::Nothing => sqlx::query_as(STORE_MESSAGE),
        Then::AddUsage(_) => sqlx::query_as(STORE_ANSWER),
        Then::Recall(_) => sqlx::query_as(STORE_QUESTION),
    }
    .bind(session_id)
    .bind(user_id)
    .bind(now)
    .bind(message.role.as_str())
    .bind(&message.content)
    .bind(message.tokens)
    .bind(message.status.as_str());
    let query = match then {
        Then::Nothing => query,
        Then::AddUsage(usage) => query
            .bind(usage.month())
            .bind(&usage.day)
            .bind(&usage.model)
            .bind(usage.prompt_tokens)
            .bind(usage.completion_tokens),
        Then::Recall(messages) => query.bind(messages),
    };
    // All rows, not the first: SQLite stops a batch at the row it was asked for.
    let mut rows: Vec<Message> = query.fetch_all(&mut **tx).await?;
    if rows.is_empty() {
        return Err(StoreError::SessionNotFound);
    }
    let stored = rows.remove(0);
    Ok((stored, rows))
}

/// $1 session, $2 user, $3 now, $4 to $7 the message. The bump comes first:
/// it takes the session's row for this transaction, as on Postgres.
macro_rules! store_message_sql {
    () => {
        "UPDATE sessions SET message_count = message_count + 1, updated_at = $3 \
             WHERE id = $1 AND user_id = $2; \
         INSERT INTO messages (session_id, role, content, tokens, status, created_at) \
             SELECT $1, $4, $5, $6, $7, $3 \
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2) \
             RETURNING id, role, content, tokens, status, created_at;"
    };
}

const STORE_MESSAGE: &str = store_message_sql!();

/// `STORE_MESSAGE`, then the session's newest $8 messages, newest first:
/// the question just stored and its history. No other message can come
/// between them: the batch runs in the one write transaction.
const STORE_QUESTION: &str = concat!(
    store_message_sql!(),
    " SELECT id, role, content, tokens, status, created_at FROM messages \
         WHERE session_id = $1 AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2) \
         ORDER BY id DESC LIMIT $8;"
);

/// `STORE_MESSAGE`, then the usage: $8 month, $9 day, $10 model, $11 and $12
/// the prompt's and completion's tokens.
const STORE_ANSWER: &str = concat!(
    store_message_sql!(),
    " INSERT INTO usage_monthly (user_id, month, model, prompt_tokens, completion_tokens, requests) \
         VALUES ($2, $8, $10, $11, $12, 1) \
         ON CONFLICT (user_id, month, model) DO UPDATE SET \
         prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens, \
         completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens, \
         requests = usage_monthly.requests + 1; \
     INSERT INTO usage_daily (day, user_id, model, prompt_tokens, completion_tokens, requests) \
         VALUES ($9, $2, $10, $11, $12, 1) \
         ON CONFLICT (day, user_id, model) DO UPDATE SET \
         prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
         completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
         requests = usage_daily.requests + 1;"
);

sql::impl_sql_store!(SqliteStore, {
    /// The default's steps, in one write transaction on the writer's
    /// connection: its page cache holds the pages the last exchanges wrote,
    /// where a reader's is emptied by every write and read again from the
    /// file, and the reads take no trips to a reader's thread.
    async fn ask(
        &self,
        user_id: i64,
        month: &str,
        conversation: &Conversation,
        question: &NewMessage,
        history: i64,
        default_quota: Option<i64>,
    ) -> StoreResult<Option<(Standing, Option<Asked>)>> {
        let mut writer = self.writer().await?;
        let mut tx = Self::begin_write(&mut writer).await?;
        let row = sqlx::query(sql::STANDING_AND_SESSION)
            .bind(user_id)
            .bind(month)
            .bind(conversation.existing())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (standing, found) = sql::standing_and_session_from!(row);
        // Returning early drops `tx`, which rolls it back: nothing is written.
        if !standing.within(default_quota) {
            return Ok(Some((standing, None)));
        }
        let now = DbTime(now());
        let session: Session = match (conversation, found) {
            (Conversation::Existing(_), Some(session)) => session,
            (Conversation::Existing(_), None) => return Ok(Some((standing, None))),
            (Conversation::New(new), _) => {
                sqlx::query_as(sql::CREATE_SESSION)
                    .bind(user_id)
                    .bind(&new.title)
                    .bind(&new.system_prompt)
                    .bind(&new.model)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        let recall = Then::Recall(history);
        let (stored, mut recent) =
            store_message(&mut tx, user_id, session.id, question, recall, now).await?;
        tx.commit().await?;
        recent.reverse();
        let asked = Asked {
            session,
            question: stored,
            recent,
        };
        Ok(Some((standing, Some(asked))))
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Settings, store::Store as _};

    async fn in_memory_store() -> SqliteStore {
        let settings = Settings::from_lookup(|_| None).unwrap().db;
        SqliteStore::connect("sqlite::memory:", &settings)
            .await
            .unwrap()
    }

    /// The pool closes its connections when it likes (idle ones after ten
    /// minutes, all of them after thirty): the database must not go with them.
    #[tokio::test]
    async fn an_in_memory_database_outlives_the_pools_connections() {
        let mut store = in_memory_store().await;
        let user = store.create_user("ada@example.com", "hash").await.unwrap();
        // Every connection the pool made is closed, then it makes new ones.
        let options = store.pool.connect_options();
        store.pool.close().await;
        store.pool = SqlitePool::connect_lazy_with((*options).clone());
        let found = store.find_user(user.id).await.unwrap();
        assert_eq!(
            found.map(|user| user.email).as_deref(),
            Some("ada@example.com")
        );
    }

    #[tokio::test]
    async fn each_in_memory_store_is_a_database_of_its_own() {
        let (one, other) = (in_memory_store().await, in_memory_store().await);
        one.create_user("ada@example.com", "hash").await.unwrap();
        let found = other.find_user_by_email("ada@example.com").await.unwrap();
        assert!(found.is_none());
    }
}
