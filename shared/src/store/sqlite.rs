//! The embedded default: one SQLite file, created on first run.

use std::{str::FromStr, time::Duration};

use anyhow::Context as _;
use sqlx::{
    SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use time::OffsetDateTime;

use super::{
    DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken, NewSession, Rotation, Session,
    SessionPatch, Standing, StoreError, StoreResult, UsageRecord, User, UserCredentials,
    UserOverview, now, sql, timestamp::DbTime,
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
}

impl SqliteStore {
    pub async fn connect(url: &str, settings: &DbSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid sqlite:// URL")?
            .create_if_missing(true)
            // WAL lets readers work while one writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
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
        Ok(Self { pool, writer })
    }

    fn writer(&self) -> &SqlitePool {
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
        // Bumping the session first takes its row lock, which orders concurrent
        // appends to one session and proves it is this user's.
        let bumped = sqlx::query(
            "UPDATE sessions SET message_count = message_count + 1, updated_at = $3 \
                 WHERE id = $1 AND user_id = $2",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if bumped.rows_affected() == 0 {
            return Err(StoreError::SessionNotFound);
        }
        let stored: Message = sqlx::query_as(
            "INSERT INTO messages (session_id, role, content, tokens, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id, role, content, tokens, status, created_at",
        )
        .bind(session_id)
        .bind(message.role.as_str())
        .bind(&message.content)
        .bind(message.tokens)
        .bind(message.status.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(usage) = usage {
            sqlx::query(
                    "INSERT INTO usage_monthly \
                     (user_id, month, model, prompt_tokens, completion_tokens, requests) \
                     VALUES ($1, $2, $3, $4, $5, 1) \
                     ON CONFLICT (user_id, month, model) DO UPDATE SET \
                     prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens, \
                     requests = usage_monthly.requests + 1",
                )
                .bind(user_id)
                .bind(usage.month())
                .bind(&usage.model)
                .bind(usage.prompt_tokens)
                .bind(usage.completion_tokens)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                    "INSERT INTO usage_daily \
                     (day, user_id, model, prompt_tokens, completion_tokens, requests) \
                     VALUES ($1, $2, $3, $4, $5, 1) \
                     ON CONFLICT (day, user_id, model) DO UPDATE SET \
                     prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
                     requests = usage_daily.requests + 1",
                )
                .bind(&usage.day)
                .bind(user_id)
                .bind(&usage.model)
                .bind(usage.prompt_tokens)
                .bind(usage.completion_tokens)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// SQLite allows one writer. Taking the write lock at BEGIN, instead of at the
    /// first write, stops two read-then-write transactions from deadlocking.
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

sql::impl_sql_store!(SqliteStore);
