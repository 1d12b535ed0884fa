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
            // sqlx already pings each connection when it is released (in the
            // background); a ping on every acquire too would add a round trip
            // to every query. A connection broken while idle (a restart) fails
            // one query and is then closed.
            .test_before_acquire(false)
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

    /// One message, and with an answer its usage, in one statement: one round
    /// trip, atomic without a transaction. Bumping the session takes its row
    /// lock, which orders concurrent appends to one session and proves it is
    /// this user's; without it, nothing is written.
    async fn append(
        &self,
        user_id: i64,
        session_id: i64,
        message: &NewMessage,
        usage: Option<&UsageRecord>,
        now: DbTime,
    ) -> StoreResult<Message> {
        let stored: Option<Message> = sqlx::query_as(APPEND_MESSAGE)
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .bind(message.role.as_str())
            .bind(&message.content)
            .bind(message.tokens)
            .bind(message.status.as_str())
            .bind(usage.map(UsageRecord::month))
            .bind(usage.map(|usage| usage.model.as_str()))
            .bind(usage.map(|usage| usage.prompt_tokens))
            .bind(usage.map(|usage| usage.completion_tokens))
            .bind(usage.map(|usage| usage.day.as_str()))
            .fetch_optional(&self.pool)
            .await?;
        stored.ok_or(StoreError::SessionNotFound)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// Both appends start alike: $1 session, $2 user, $3 now, $4-$7 the message
/// (role, content, tokens, status). `bumped` is the session when it is the
/// user's, `stored` the message, stored only then.
macro_rules! bump_and_store {
    () => {
        "WITH bumped AS ( \
            UPDATE sessions SET message_count = message_count + 1, updated_at = $3 \
            WHERE id = $1 AND user_id = $2 RETURNING id \
        ), stored AS ( \
            INSERT INTO messages (session_id, role, content, tokens, status, created_at) \
            SELECT id, $4, $5, $6, $7, $3 FROM bumped \
            RETURNING id, role, content, tokens, status, created_at \
        )"
    };
}

/// $1-$7 as `bump_and_store!`; $8-$12 the usage (month, model, prompt and
/// completion tokens, day), all NULL for a user's message.
const APPEND_MESSAGE: &str = concat!(
    bump_and_store!(),
    ", monthly AS ( \
        INSERT INTO usage_monthly (user_id, month, model, prompt_tokens, completion_tokens, requests) \
        SELECT $2, $8, $9, $10, $11, 1 FROM bumped WHERE $9::text IS NOT NULL \
        ON CONFLICT (user_id, month, model) DO UPDATE SET \
        prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens, \
        completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens, \
        requests = usage_monthly.requests + 1 \
    ), daily AS ( \
        INSERT INTO usage_daily (day, user_id, model, prompt_tokens, completion_tokens, requests) \
        SELECT $12, $2, $9, $10, $11, 1 FROM bumped WHERE $9::text IS NOT NULL \
        ON CONFLICT (day, user_id, model) DO UPDATE SET \
        prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
        completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
        requests = usage_daily.requests + 1 \
    ) \
    SELECT id, role, content, tokens, status, created_at FROM stored"
);

/// $1-$7 as `bump_and_store!` (the question), $8 how many earlier messages
/// to recall. The question is bumped and stored as APPEND_MESSAGE
/// stores a message without usage; the recalled history is what the
/// statement's snapshot holds, so a message another request stores meanwhile
/// belongs to that request's exchange, not to this one. `asked` tells the
/// question from its history; nothing comes back when the session is not the
/// user's.
const APPEND_QUESTION: &str = concat!(
    bump_and_store!(),
    " \
    SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored \
    UNION ALL ( \
        SELECT false, id, role, content, tokens, status, created_at FROM messages \
        WHERE session_id = $1 AND EXISTS (SELECT 1 FROM bumped) \
        ORDER BY id DESC LIMIT $8 \
    )"
);

#[derive(sqlx::FromRow)]
struct Recalled {
    asked: bool,
    #[sqlx(flatten)]
    message: Message,
}

sql::impl_sql_store!(PostgresStore, {
    async fn append_question(
        &self,
        user_id: i64,
        session_id: i64,
        question: &NewMessage,
        history: i64,
    ) -> StoreResult<(Message, Vec<Message>)> {
        let rows: Vec<Recalled> = sqlx::query_as(APPEND_QUESTION)
            .bind(session_id)
            .bind(user_id)
            .bind(DbTime(now()))
            .bind(question.role.as_str())
            .bind(&question.content)
            .bind(question.tokens)
            .bind(question.status.as_str())
            // The question itself is one of the `history` messages.
            .bind((history - 1).max(0))
            .fetch_all(&self.pool)
            .await?;
        let (asked, mut recent): (Vec<_>, Vec<_>) = rows.into_iter().partition(|row| row.asked);
        let Some(stored) = asked.into_iter().next().map(|row| row.message) else {
            return Err(StoreError::SessionNotFound);
        };
        recent.sort_by_key(|row| row.message.id);
        let mut recent: Vec<Message> = recent.into_iter().map(|row| row.message).collect();
        if history > 0 {
            recent.push(stored.clone());
        }
        Ok((stored, recent))
    }
});
