//! PostgreSQL, for servers and Lambda (through RDS Proxy at scale).

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    PgPool, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::OffsetDateTime;

use super::{
    DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken, NewSession, Rotation, Session,
    SessionPatch, Standing, StoreError, StoreResult, UsageRecord, User, UserCredentials,
    UserOverview, now, sql, timestamp::DbTime,
};
use crate::config::DbSettings;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, settings: &DbSettings) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .context("DATABASE_URL is not a valid postgres:// URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            // A request waits this long for a connection before it gets a 503.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("connecting to Postgres (DATABASE_URL)")?;
        if settings.migrate_on_start {
            // sqlx holds an advisory lock while migrating, so concurrent starts are safe.
            sqlx::migrate!("src/store/migrations/postgres")
                .run(&pool)
                .await
                .context("migrating the Postgres database")?;
        }
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

sql::impl_sql_store!(PostgresStore);
