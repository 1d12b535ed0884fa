//! The embedded default: one SQLite file, created on first run.

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::{
    SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;
use tokio::sync::Notify;
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
    writer: SqlitePool,
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
            .context("DATABASE_URL is not a valid sqlite:// URL")?
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
        // Each connection to ":memory:" would be a separate, empty database.
        let max_connections = if url.contains(":memory:") {
            1
        } else {
            settings.max_connections
        };
        let open = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // sqlx already pings each connection when it is released; another
                // ping on every acquire is one more trip to its worker thread.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
        };
        let pool = open(max_connections)
            .await
            .with_context(|| format!("opening the SQLite database {url}"))?;
        if settings.migrate_on_start {
            sqlx::migrate!("src/store/migrations/sqlite")
                .run(&pool)
                .await
                .context("migrating the SQLite database")?;
        }
        let writer = if url.contains(":memory:") {
            pool.clone()
        } else {
            open(1)
                .await
                .with_context(|| format!("opening the SQLite database {url}"))?
        };
        let wrote = Arc::new(Notify::new());
        let checkpointer = AbortOnDropHandle::new(tokio::spawn(checkpoint_after_writes(
            pool.clone(),
            wrote.clone(),
        )));
        Ok(Self {
            pool,
            writer,
            wrote,
            _checkpointer: checkpointer,
        })
    }

    fn writer(&self) -> &SqlitePool {
        self.wrote.notify_one();
        &self.writer
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
        let mut tx = self.begin_write().await?;
        let stored = store_message(&mut tx, user_id, session_id, message, usage, now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// SQLite allows one writer. Taking the write lock at BEGIN, instead of at the
    /// first write, stops two read-then-write transactions from deadlocking.
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer().begin_with("BEGIN IMMEDIATE").await
    }
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

/// Bumps the user's session and stores the message in it, with an answer's
/// usage, in one statement batch: one trip to the connection's worker thread,
/// where a statement each was four. Every trip hands the work to that thread
/// and back, which took the server more CPU than SQLite's own work.
/// `SessionNotFound` when the session is not the user's: nothing matched, and
/// the caller's transaction is dropped, so the usage is rolled back with it.
async fn store_message(
    tx: &mut Transaction<'static, sqlx::Sqlite>,
    user_id: i64,
    session_id: i64,
    message: &NewMessage,
    usage: Option<&UsageRecord>,
    now: DbTime,
) -> StoreResult<Message> {
    let query = match usage {
        None => sqlx::query_as(STORE_MESSAGE),
        Some(_) => sqlx::query_as(STORE_ANSWER),
    }
    .bind(session_id)
    .bind(user_id)
    .bind(now)
    .bind(message.role.as_str())
    .bind(&message.content)
    .bind(message.tokens)
    .bind(message.status.as_str());
    let query = match usage {
        None => query,
        Some(usage) => query
            .bind(usage.month())
            .bind(&usage.day)
            .bind(&usage.model)
            .bind(usage.prompt_tokens)
            .bind(usage.completion_tokens),
    };
    // All rows, not the first: SQLite stops a batch at the row it was asked for.
    let stored: Vec<Message> = query.fetch_all(&mut **tx).await?;
    stored.into_iter().next().ok_or(StoreError::SessionNotFound)
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
        let mut tx = self.begin_write().await?;
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
        let stored = store_message(&mut tx, user_id, session.id, question, None, now).await?;
        let mut recent: Vec<Message> = sqlx::query_as(sql::RECENT_MESSAGES)
            .bind(session.id)
            .bind(stored.id)
            .bind(history)
            .fetch_all(&mut *tx)
            .await?;
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
