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
    pool: SqlitePool,
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
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite database {url}"))?;
        if settings.migrate_on_start {
            sqlx::migrate!("src/store/migrations/sqlite")
                .run(&pool)
                .await
                .context("migrating the SQLite database")?;
        }
        Ok(Self { pool })
    }

    /// SQLite allows one writer. Taking the write lock at BEGIN, instead of at the
    /// first write, stops two read-then-write transactions from deadlocking.
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

sql::impl_sql_store!(SqliteStore);
