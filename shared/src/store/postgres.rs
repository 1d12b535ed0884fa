//! PostgreSQL, for servers and Lambda (through RDS Proxy at scale).

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    Connection as _, FromRow as _, PgConnection, Row as _, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use time::OffsetDateTime;

use super::{
    Asked, Conversation, DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken,
    NewSession, Rotation, Session, SessionPatch, Standing, StoreError, StoreResult, UnknownValue,
    UsageRecord, User, UserCredentials, UserOverview, now, sql,
    timestamp::DbTime,
    warm_pool::{Lease, WarmPool},
};
use crate::config::DbSettings;

/// A request waits this long for a connection before it gets a 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PostgresStore {
    pool: WarmPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, settings: &DbSettings) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .context("DATABASE_URL is not a valid postgres:// URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            // A ping on every acquire would add a round trip to every query.
            // A connection broken while idle (a restart) fails one query and
            // is then closed.
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
        Ok(Self {
            pool: WarmPool::new(pool),
        })
    }

    /// Postgres has no single writer: a write takes any of the pool's connections.
    /// Dropped, never released: a transaction's connection is pinged before
    /// it is reused, which sends the ROLLBACK of one that did not commit.
    async fn writer(&self) -> Result<Lease, sqlx::Error> {
        self.pool.lease().await
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
        self.append_after(user_id, session_id, None, message, usage, now)
            .await
    }

    /// `append`, and with `question`, only while that question is there.
    async fn append_after(
        &self,
        user_id: i64,
        session_id: i64,
        question: Option<&Message>,
        message: &NewMessage,
        usage: Option<&UsageRecord>,
        now: DbTime,
    ) -> StoreResult<Message> {
        let statement = match question {
            None => APPEND_MESSAGE,
            Some(_) => APPEND_ANSWER,
        };
        let query = sqlx::query_as(statement)
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
            .bind(usage.map(|usage| usage.day.as_str()));
        let query = match question {
            None => query,
            Some(question) => query.bind(question.id).bind(DbTime(question.created_at)),
        };
        let stored: Option<Message> = query.fetch_optional(&self.pool).await?;
        stored.ok_or(StoreError::SessionNotFound)
    }

    async fn begin_write(
        writer: &mut PgConnection,
    ) -> Result<Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        writer.begin().await
    }
}

/// The user's session $1 (the user $2), bumped at $3; nothing when it is
/// not theirs or `$only_if` fails. `$returning`: more of its columns.
macro_rules! bump_session {
    ($only_if:expr, $returning:expr) => {
        concat!(
            "bumped AS ( \
                UPDATE sessions SET message_count = message_count + 1, updated_at = $3 \
                WHERE id = $1 AND user_id = $2 ",
            $only_if,
            " RETURNING id",
            $returning,
            " )"
        )
    };
}

/// The message $4-$7 (role, content, tokens, status) at $3, stored in the
/// session the CTE `$session` holds, and only when it holds one.
macro_rules! store_message {
    ($session:literal) => {
        concat!(
            "stored AS ( \
                INSERT INTO messages (session_id, role, content, tokens, status, created_at) \
                SELECT id, $4, $5, $6, $7, $3 FROM ",
            $session,
            " RETURNING id, role, content, tokens, status, created_at )"
        )
    };
}

/// The user $2's standing in month $9: what the quota is judged by.
macro_rules! standing {
    () => {
        "standing AS ( \
            SELECT u.email, u.is_admin, u.token_quota, CAST(COALESCE(( \
                SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly \
                WHERE user_id = u.id AND month = $9), 0) AS BIGINT) AS used_tokens \
            FROM users u WHERE u.id = $2 )"
    };
}

/// Of `standing`: its tokens are below the quota, the user's own, else $10;
/// neither is unlimited. `Standing::within` in SQL.
macro_rules! within_quota {
    () => {
        "(COALESCE(token_quota, $10) IS NULL OR used_tokens < COALESCE(token_quota, $10))"
    };
}

/// The session columns beside `id`.
macro_rules! session_columns {
    () => {
        "title, system_prompt, model, message_count, created_at, updated_at"
    };
}

/// An ask's rows: the standing, with the session (`$session`) and the
/// `exchange` messages when the question was stored. One row per message;
/// one without a session when nothing was stored; none when the user does
/// not exist.
///
/// The statement's own transaction commits without waiting for the disk
/// (`set_config(..., true)` lasts until that commit): the rows come back a
/// flush sooner, and the flush that follows, the answer's or
/// `make_durable`'s, carries the question to disk with its own (`Store::ask`).
/// The filter holds for every row; it is only there to run the call.
/// `e.asked` is column `ASKED_COLUMN`: `Recalled` reads by position.
macro_rules! asked_rows {
    ($session:literal) => {
        concat!(
            "SELECT s.email, s.is_admin, s.token_quota, s.used_tokens, \
                c.id AS session_id, c.title, c.system_prompt, c.model, c.message_count, \
                c.created_at AS session_created_at, c.updated_at, \
                e.asked, e.id, e.role, e.content, e.tokens, e.status, e.created_at \
            FROM standing s LEFT JOIN ",
            $session,
            " c ON true LEFT JOIN exchange e ON true \
            WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL"
        )
    };
}

/// $1-$7 as `bump_session!` and `store_message!`; $8-$12 the usage (month,
/// model, prompt and completion tokens, day), all NULL for a user's message;
/// stored only if `$only_if`.
macro_rules! append {
    ($only_if:expr) => {
        concat!(
    "WITH ",
    bump_session!($only_if, ""),
    ", ",
    store_message!("bumped"),
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
        )
    };
}

const APPEND_MESSAGE: &str = append!("");

/// An answer, stored as APPEND_MESSAGE stores a message, only while its
/// question ($13, asked at $14) is in the session: one that a crash lost
/// before it reached the disk (`Store::ask`) takes the answer with it. The
/// time too, since after such a crash its id can be handed out again.
const APPEND_ANSWER: &str = append!(
    "AND EXISTS (SELECT 1 FROM messages WHERE id = $13 AND session_id = $1 AND created_at = $14)"
);

/// A question ($4-$7) in the user's session $1, stored as APPEND_MESSAGE
/// stores a message without usage, only within the quota (month $9, default
/// $10), with the $8 messages before it. The history is what the statement's
/// snapshot holds, so a message another request stores meanwhile belongs to
/// that request's exchange, not to this one; `asked` tells the question
/// from it.
const ASK: &str = concat!(
    "WITH ",
    standing!(),
    ", ",
    bump_session!(
        concat!(
            "AND EXISTS (SELECT 1 FROM standing WHERE ",
            within_quota!(),
            ")"
        ),
        concat!(", ", session_columns!())
    ),
    ", ",
    store_message!("bumped"),
    ", exchange AS ( \
        SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored \
        UNION ALL ( \
            SELECT false, id, role, content, tokens, status, created_at FROM messages \
            WHERE session_id = $1 AND EXISTS (SELECT 1 FROM bumped) \
            ORDER BY id DESC LIMIT $8 \
        ) \
    ) ",
    asked_rows!("bumped")
);

/// A question ($4-$7) in a new session of the user's (title $1, system
/// prompt $8, model $11), both stored only within the quota (month $9,
/// default $10). The session counts its question from the start.
const ASK_NEW: &str = concat!(
    "WITH ",
    standing!(),
    ", created AS ( \
        INSERT INTO sessions (user_id, title, system_prompt, model, message_count, created_at, updated_at) \
        SELECT $2, $1, $8, $11, 1, $3, $3 FROM standing WHERE ",
    within_quota!(),
    " RETURNING id, ",
    session_columns!(),
    " ), ",
    store_message!("created"),
    ", exchange AS ( \
        SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored \
    ) ",
    asked_rows!("created")
);

struct Recalled {
    asked: bool,
    message: Message,
}

/// Where `asked_rows!` puts `e.asked`; the message's columns follow it.
const ASKED_COLUMN: usize = 11;

impl Recalled {
    /// Read by position: an exchange decodes some twenty of these rows, and
    /// finding each column by hashing its name, with the role and status
    /// copied into strings to be parsed, was 5% of the server's instructions
    /// per exchange (callgrind). Types are still checked.
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let at = ASKED_COLUMN;
        Ok(Self {
            asked: row.try_get(at)?,
            message: Message {
                id: row.try_get(at + 1)?,
                role: parsed(row, at + 2)?,
                content: row.try_get(at + 3)?,
                tokens: row.try_get(at + 4)?,
                status: parsed(row, at + 5)?,
                created_at: row.try_get(at + 6)?,
            },
        })
    }
}

/// A stored enum value, parsed from the row's text where it lies.
fn parsed<T>(row: &PgRow, index: usize) -> Result<T, sqlx::Error>
where
    T: for<'a> TryFrom<&'a str, Error = UnknownValue>,
{
    T::try_from(row.try_get::<&str, _>(index)?).map_err(|err| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(err),
    })
}

/// An ask's outcome from its rows (`asked_rows!`).
fn asked_from(rows: &[PgRow], history: i64) -> StoreResult<Option<(Standing, Option<Asked>)>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let standing = Standing::from_row(first)?;
    let Some(id) = first.try_get::<Option<i64>, _>("session_id")? else {
        return Ok(Some((standing, None)));
    };
    // The session's columns are named apart from the message's.
    let session = Session {
        id,
        title: first.try_get("title")?,
        system_prompt: first.try_get("system_prompt")?,
        model: first.try_get("model")?,
        message_count: first.try_get("message_count")?,
        created_at: first.try_get("session_created_at")?,
        updated_at: first.try_get("updated_at")?,
    };
    let rows = rows
        .iter()
        .map(Recalled::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let (asked, mut recent): (Vec<_>, Vec<_>) = rows.into_iter().partition(|row| row.asked);
    let question = asked
        .into_iter()
        .next()
        .ok_or(StoreError::SessionNotFound)?
        .message;
    recent.sort_by_key(|row| row.message.id);
    let mut recent: Vec<Message> = recent.into_iter().map(|row| row.message).collect();
    if history > 0 {
        recent.push(question.clone());
    }
    let asked = Asked {
        session,
        question,
        recent,
    };
    Ok(Some((standing, Some(asked))))
}

/// A commit waits for the disk only when its transaction wrote to the log
/// (a bare transaction id does not), and Postgres flushes the log in order:
/// the smallest such write, a transactional logical-decoding message, which
/// touches no table, flushes every commit before it. Written only while the
/// question ($1 in session $2, asked at $3) is there, which a crash before
/// its flush would have lost. With `wal_level=logical`, decoding clients
/// see a `chat-api` message per stream and per /chat provider failure,
/// which they may ignore.
const FLUSH_QUESTION: &str = "SELECT pg_logical_emit_message(true, 'chat-api', '') \
    FROM messages WHERE id = $1 AND session_id = $2 AND created_at = $3";

sql::impl_sql_store!(PostgresStore, {
    async fn make_durable(&self, session_id: i64, question: &Message) -> StoreResult<()> {
        let flushed = sqlx::query(FLUSH_QUESTION)
            .bind(question.id)
            .bind(session_id)
            .bind(DbTime(question.created_at))
            .fetch_optional(&self.pool)
            .await?;
        match flushed {
            Some(_) => Ok(()),
            None => Err(StoreError::Unavailable(anyhow::anyhow!(
                "question {} is no longer in session {session_id}",
                question.id
            ))),
        }
    }

    async fn append_answer(
        &self,
        user_id: i64,
        session_id: i64,
        question: &Message,
        answer: &NewMessage,
        usage: &UsageRecord,
    ) -> StoreResult<Message> {
        self.append_after(
            user_id,
            session_id,
            Some(question),
            answer,
            Some(usage),
            DbTime(now()),
        )
        .await
    }

    async fn ask(
        &self,
        user_id: i64,
        month: &str,
        conversation: &Conversation,
        question: &NewMessage,
        history: i64,
        default_quota: Option<i64>,
    ) -> StoreResult<Option<(Standing, Option<Asked>)>> {
        let query = match conversation {
            Conversation::Existing(id) => sqlx::query(ASK).bind(*id),
            Conversation::New(new) => sqlx::query(ASK_NEW).bind(&new.title),
        }
        .bind(user_id)
        .bind(DbTime(now()))
        .bind(question.role.as_str())
        .bind(&question.content)
        .bind(question.tokens)
        .bind(question.status.as_str());
        let query = match conversation {
            // The question itself is one of the `history` messages.
            Conversation::Existing(_) => query.bind((history - 1).max(0)),
            Conversation::New(new) => query.bind(new.system_prompt.as_deref()),
        }
        .bind(month)
        .bind(default_quota);
        let query = match conversation {
            Conversation::Existing(_) => query,
            Conversation::New(new) => query.bind(new.model.as_deref()),
        };
        let rows = query.fetch_all(&self.pool).await?;
        asked_from(&rows, history)
    }
});
