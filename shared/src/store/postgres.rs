//! PostgreSQL, for servers and Lambda (through RDS Proxy at scale).

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    FromRow as _, PgPool, Row as _, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use time::OffsetDateTime;

use super::{
    Asked, DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken, NewSession, Rotation,
    Session, SessionPatch, Standing, StoreError, StoreResult, UsageRecord, User, UserCredentials,
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

    /// Postgres has no single writer: writes share the pool.
    fn writer(&self) -> &PgPool {
        &self.pool
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

/// Every append starts alike: $1 session, $2 user, $3 now, $4-$7 the message
/// (role, content, tokens, status). `bumped` is the session when it is the
/// user's, `stored` the message, stored only then. `$before`: CTEs ahead of
/// the bump; `$only_if`: a further condition for it; `$returning`: more of the
/// session's columns.
macro_rules! bump_and_store {
    () => {
        bump_and_store!("", "", "")
    };
    ($before:literal, $only_if:literal, $returning:literal) => {
        concat!(
            "WITH ",
            $before,
            "bumped AS ( \
                UPDATE sessions SET message_count = message_count + 1, updated_at = $3 \
                WHERE id = $1 AND user_id = $2 ",
            $only_if,
            " RETURNING id",
            $returning,
            " \
            ), stored AS ( \
                INSERT INTO messages (session_id, role, content, tokens, status, created_at) \
                SELECT id, $4, $5, $6, $7, $3 FROM bumped \
                RETURNING id, role, content, tokens, status, created_at \
            )"
        )
    };
}

/// After `bump_and_store!`, $8 how many earlier messages to recall: the
/// question, and its history as the statement's snapshot holds it, so a
/// message another request stores meanwhile belongs to that request's
/// exchange, not to this one. `asked` tells the question from its history;
/// nothing comes back when nothing was stored.
macro_rules! question_and_history {
    () => {
        "SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored \
        UNION ALL ( \
            SELECT false, id, role, content, tokens, status, created_at FROM messages \
            WHERE session_id = $1 AND EXISTS (SELECT 1 FROM bumped) \
            ORDER BY id DESC LIMIT $8 \
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

/// $1-$7 as `bump_and_store!` (the question), $8 as `question_and_history!`;
/// stored as APPEND_MESSAGE stores a message without usage.
const APPEND_QUESTION: &str = concat!(bump_and_store!(), " ", question_and_history!());

/// APPEND_QUESTION, but only while the user's tokens in month $9 are below
/// the quota (their own, else $10; neither: unlimited), with the standing
/// the quota was judged by and the session's columns. One row per message
/// recalled; one row with no session when nothing was stored; none when the
/// user does not exist.
const ASK: &str = concat!(
    bump_and_store!(
        "standing AS ( \
            SELECT u.email, u.is_admin, u.token_quota, CAST(COALESCE(( \
                SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly \
                WHERE user_id = u.id AND month = $9), 0) AS BIGINT) AS used_tokens \
            FROM users u WHERE u.id = $2 \
        ), ",
        "AND EXISTS (SELECT 1 FROM standing \
            WHERE COALESCE(token_quota, $10) IS NULL OR used_tokens < COALESCE(token_quota, $10))",
        ", title, system_prompt, model, message_count, created_at, updated_at"
    ),
    ", exchange AS (",
    question_and_history!(),
    ") \
    SELECT s.email, s.is_admin, s.token_quota, s.used_tokens, \
        b.id AS session_id, b.title, b.system_prompt, b.model, b.message_count, \
        b.created_at AS session_created_at, b.updated_at, \
        e.asked, e.id, e.role, e.content, e.tokens, e.status, e.created_at \
    FROM standing s LEFT JOIN bumped b ON true LEFT JOIN exchange e ON true"
);

#[derive(sqlx::FromRow)]
struct Recalled {
    asked: bool,
    #[sqlx(flatten)]
    message: Message,
}

/// The question and the history before it, oldest first, from the rows of
/// `question_and_history!`; none asked means nothing was stored.
fn question_and_history(rows: Vec<Recalled>, history: i64) -> Option<(Message, Vec<Message>)> {
    let (asked, mut recent): (Vec<_>, Vec<_>) = rows.into_iter().partition(|row| row.asked);
    let stored = asked.into_iter().next()?.message;
    recent.sort_by_key(|row| row.message.id);
    let mut recent: Vec<Message> = recent.into_iter().map(|row| row.message).collect();
    if history > 0 {
        recent.push(stored.clone());
    }
    Some((stored, recent))
}

/// The session's columns of an ASK row, named apart from the message's.
fn asked_session(row: &PgRow, id: i64) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id,
        title: row.try_get("title")?,
        system_prompt: row.try_get("system_prompt")?,
        model: row.try_get("model")?,
        message_count: row.try_get("message_count")?,
        created_at: row.try_get("session_created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
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
        question_and_history(rows, history).ok_or(StoreError::SessionNotFound)
    }

    async fn ask(
        &self,
        user_id: i64,
        month: &str,
        session_id: i64,
        question: &NewMessage,
        history: i64,
        default_quota: Option<i64>,
    ) -> StoreResult<Option<(Standing, Option<Asked>)>> {
        let rows = sqlx::query(ASK)
            .bind(session_id)
            .bind(user_id)
            .bind(DbTime(now()))
            .bind(question.role.as_str())
            .bind(&question.content)
            .bind(question.tokens)
            .bind(question.status.as_str())
            .bind((history - 1).max(0))
            .bind(month)
            .bind(default_quota)
            .fetch_all(&self.pool)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let standing = Standing::from_row(first)?;
        let Some(id) = first.try_get::<Option<i64>, _>("session_id")? else {
            return Ok(Some((standing, None)));
        };
        let session = asked_session(first, id)?;
        let recalled = rows
            .iter()
            .map(Recalled::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (question, recent) =
            question_and_history(recalled, history).ok_or(StoreError::SessionNotFound)?;
        let asked = Asked {
            session,
            question,
            recent,
        };
        Ok(Some((standing, Some(asked))))
    }
});
