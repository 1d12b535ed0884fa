//! Persistence behind one trait, so routes never know which database serves them.
//!
//! `connect` picks the backend from the `DATABASE_URL` scheme. Every backend
//! passes the same conformance suite (tests/it/store.rs).

mod dynamodb;
mod postgres;
mod sql;
mod sqlite;
mod timestamp;
mod warm_pool;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::DbSettings;

pub use dynamodb::{DynamoStore, MAX_CONTENT_BYTES as DYNAMODB_MAX_CONTENT_BYTES};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    /// The session does not exist or belongs to someone else: callers cannot tell which.
    #[error("session not found")]
    SessionNotFound,
    /// More than the backend can hold in one record (DynamoDB's 400 KB item).
    #[error("{field} is larger than the {limit_bytes} bytes the store can hold")]
    TooLarge {
        field: &'static str,
        limit_bytes: usize,
    },
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Self::Unavailable(err.into()),
            sqlx::Error::Database(ref db) if db.code().is_some_and(|code| is_outage(&code)) => {
                Self::Unavailable(err.into())
            }
            other => Self::Other(other.into()),
        }
    }
}

/// Postgres SQLSTATEs that mean "the database is not there right now", not "the
/// query is wrong": connection exceptions (08), shutdowns and restarts (57P),
/// a database that does not exist (3D000).
fn is_outage(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "3D000"
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A user with the password hash, for login only; never serialised.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    pub id: i64,
    pub title: String,
    pub system_prompt: Option<String>,
    /// The model this session's chats use when a request names none.
    pub model: Option<String>,
    pub message_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// How a stored assistant message ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    /// The provider broke off, or the client left and `STREAM_ON_DISCONNECT=cancel`.
    Incomplete,
    /// Stopped by the user.
    Stopped,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct Message {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub content: String,
    pub tokens: i64,
    #[sqlx(try_from = "String")]
    pub status: MessageStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub tokens: i64,
    pub status: MessageStatus,
}

#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub title: String,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    pub title: Option<String>,
    pub system_prompt: Option<Option<String>>,
    pub model: Option<Option<String>>,
}

/// Tokens to add to a user's daily and monthly totals, in the same
/// transaction as the message.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl UsageRecord {
    /// `YYYY-MM`.
    pub fn month(&self) -> &str {
        self.day.get(..7).unwrap_or(&self.day)
    }
}

/// One user's tokens for one model on one day, as the admin dashboard reads them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DailyUsage {
    pub day: String,
    pub user_id: i64,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub requests: i64,
}

/// What a request needs to know about its user beyond the token: whether
/// they are an administrator, and how much of their quota is used.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Standing {
    pub email: String,
    /// Promoted by the CLI (`ADMIN_EMAILS` is checked by the caller).
    pub is_admin: bool,
    /// Set by an administrator; `None` means the deployment's default.
    pub token_quota: Option<i64>,
    /// Prompt and completion tokens in the month asked about.
    pub used_tokens: i64,
}

impl Standing {
    /// The quota that applies: the user's own, else `default`; `None` is unlimited.
    pub fn quota(&self, default: Option<i64>) -> Option<i64> {
        self.token_quota.or(default)
    }

    /// Whether another exchange may begin: the month's tokens are below the quota.
    pub fn within(&self, default: Option<i64>) -> bool {
        self.quota(default)
            .is_none_or(|quota| self.used_tokens < quota)
    }
}

/// Where a question goes: a session of the user's, or a new one.
#[derive(Debug, Clone)]
pub enum Conversation {
    Existing(i64),
    New(NewSession),
}

impl Conversation {
    /// The session's id, when it exists already.
    pub fn existing(&self) -> Option<i64> {
        match self {
            Self::Existing(id) => Some(*id),
            Self::New(_) => None,
        }
    }
}

/// A question stored in its session, with what the provider is to be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The session's settings (its system prompt and model) as the question found them.
    pub session: Session,
    pub question: Message,
    /// As `Store::append_question` returns them: oldest first, the question last.
    pub recent: Vec<Message>,
}

/// A user as the admin dashboard lists them, with one month's figures.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserOverview {
    #[sqlx(flatten)]
    pub user: User,
    pub is_admin: bool,
    pub token_quota: Option<i64>,
    pub sessions: i64,
    pub messages: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub requests: i64,
}

/// One user's tokens for one model in one month.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MonthlyUsage {
    pub month: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub requests: i64,
}

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub user_id: i64,
    /// Every token descended from one login shares a family, so reuse can revoke them all.
    pub family: String,
    pub token_hash: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was live; it is now spent and the replacement is stored.
    Rotated { user_id: i64 },
    /// The presented token had already been spent: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;

    async fn create_user(&self, email: &str, password_hash: &str) -> StoreResult<User>;
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>>;
    async fn find_user(&self, user_id: i64) -> StoreResult<Option<User>>;

    /// Stores the first token of a new family (a login).
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()>;
    /// Spends the token whose hash is `presented_hash` and stores `replacement_hash`
    /// in its family, atomically: of two concurrent rotations only one succeeds.
    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        replacement_hash: &str,
        replacement_expires_at: OffsetDateTime,
    ) -> StoreResult<Rotation>;
    /// Revokes the family of the token with this hash; unknown hashes are ignored.
    async fn revoke_refresh_family(&self, token_hash: &str) -> StoreResult<()>;

    /// The user's sessions, most recently active first.
    async fn list_sessions(
        &self,
        user_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Session>>;
    async fn create_session(&self, user_id: i64, session: &NewSession) -> StoreResult<Session>;
    async fn find_session(&self, user_id: i64, session_id: i64) -> StoreResult<Option<Session>>;
    async fn update_session(
        &self,
        user_id: i64,
        session_id: i64,
        patch: &SessionPatch,
    ) -> StoreResult<Option<Session>>;
    /// Deletes the session and its messages; false when it is not the user's.
    async fn delete_session(&self, user_id: i64, session_id: i64) -> StoreResult<bool>;

    /// All messages of a session the caller has already checked belongs to the user.
    async fn list_messages(&self, session_id: i64) -> StoreResult<Vec<Message>>;
    /// The newest `limit` messages with ids up to `up_to`, returned oldest first.
    async fn recent_messages(
        &self,
        session_id: i64,
        up_to: i64,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;
    /// Appends a message to the user's session, bumps its `message_count` and
    /// activity time, and adds `usage` to the monthly total, all in one transaction.
    async fn append_message(
        &self,
        user_id: i64,
        session_id: i64,
        message: &NewMessage,
        usage: Option<&UsageRecord>,
    ) -> StoreResult<Message>;

    /// Stores the user's question as `append_message` does (no usage yet) and
    /// returns it with the session's newest `history` messages up to it,
    /// oldest first, the question last: what the provider is to be asked.
    /// `ask` does this within the quota; this is its default's second step.
    async fn append_question(
        &self,
        user_id: i64,
        session_id: i64,
        question: &NewMessage,
        history: i64,
    ) -> StoreResult<(Message, Vec<Message>)> {
        let stored = self
            .append_message(user_id, session_id, question, None)
            .await?;
        let recent = self.recent_messages(session_id, stored.id, history).await?;
        Ok((stored, recent))
    }

    /// An exchange's first step: the user's standing in `month` and, only
    /// when the month's tokens are below the quota (the user's own, else
    /// `default_quota`) and the session is the user's (or is to be new), the
    /// question stored as `append_question` stores it. `None` when the user
    /// no longer exists; no `Asked` means nothing was written. One statement
    /// on Postgres, so the provider is asked after one round trip; the
    /// default asks for each.
    ///
    /// The question is committed, and seen by every later read, when this
    /// returns, but on Postgres not yet on disk: its commit does not wait for
    /// the flush, which the provider's request need not wait for either.
    /// `append_answer` and `make_durable` commit only while the question is
    /// there, and wait for the flush, which carries the question to disk
    /// too, the log being written in order. Until then a crash of the
    /// database can lose it (other requests may have read it meanwhile), and
    /// the request that asked it then ends in an error, never in an answer or
    /// a `start` event.
    async fn ask(
        &self,
        user_id: i64,
        month: &str,
        conversation: &Conversation,
        question: &NewMessage,
        history: i64,
        default_quota: Option<i64>,
    ) -> StoreResult<Option<(Standing, Option<Asked>)>> {
        let Some((standing, found)) = self
            .standing_and_session(user_id, month, conversation.existing())
            .await?
        else {
            return Ok(None);
        };
        if !standing.within(default_quota) {
            return Ok(Some((standing, None)));
        }
        let session = match (conversation, found) {
            (Conversation::Existing(_), Some(session)) => session,
            (Conversation::Existing(_), None) => return Ok(Some((standing, None))),
            (Conversation::New(new), _) => self.create_session(user_id, new).await?,
        };
        let (question, recent) = self
            .append_question(user_id, session.id, question, history)
            .await?;
        let asked = Asked {
            session,
            question,
            recent,
        };
        Ok(Some((standing, Some(asked))))
    }

    /// Returns once `question`, asked in `session_id`, is as durable as any
    /// other write: what a caller waits for before it tells a client that
    /// the question is stored, with no answer stored since. Only `ask`
    /// acknowledges a write before that, on Postgres; elsewhere nothing
    /// waits. `Unavailable` when the question is no longer there (a crash of
    /// the database lost it, or its session was deleted meanwhile).
    async fn make_durable(&self, session_id: i64, question: &Message) -> StoreResult<()> {
        let _ = (session_id, question);
        Ok(())
    }

    /// Stores an answer as `append_message` does, with its usage, only while
    /// its `question` is still there: on Postgres a crash can lose a question
    /// (`ask`), and an answer must not outlive it. `SessionNotFound` when it
    /// is not. Elsewhere a question, once acknowledged, outlives the server
    /// that asked it, so nothing more is checked.
    async fn append_answer(
        &self,
        user_id: i64,
        session_id: i64,
        question: &Message,
        answer: &NewMessage,
        usage: &UsageRecord,
    ) -> StoreResult<Message> {
        let _ = question;
        self.append_message(user_id, session_id, answer, Some(usage))
            .await
    }

    /// The user's usage per month and model, newest month first.
    async fn monthly_usage(&self, user_id: i64) -> StoreResult<Vec<MonthlyUsage>>;

    /// The user's admin flag, quota and tokens used in `month` (`YYYY-MM`);
    /// `None` when the user no longer exists.
    async fn standing(&self, user_id: i64, month: &str) -> StoreResult<Option<Standing>>;
    /// What `ask`'s default reads before it writes anything: the user's standing
    /// in `month` and, when `session_id` is given, that session if it is the
    /// user's. `None` when the user no longer exists. One query on the SQL
    /// stores; the default asks for each.
    async fn standing_and_session(
        &self,
        user_id: i64,
        month: &str,
        session_id: Option<i64>,
    ) -> StoreResult<Option<(Standing, Option<Session>)>> {
        let Some(standing) = self.standing(user_id, month).await? else {
            return Ok(None);
        };
        let session = match session_id {
            Some(session_id) => self.find_session(user_id, session_id).await?,
            None => None,
        };
        Ok(Some((standing, session)))
    }
    /// Makes the account with this email an administrator, or not; false when
    /// there is no such account.
    async fn set_admin(&self, email: &str, is_admin: bool) -> StoreResult<bool>;
    /// Sets the user's monthly token quota (`None`: back to the default);
    /// false when there is no such user.
    async fn set_token_quota(&self, user_id: i64, quota: Option<i64>) -> StoreResult<bool>;
    /// Users in id order, with their session and message counts and their
    /// usage in `month`.
    async fn user_overviews(
        &self,
        month: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<UserOverview>>;
    /// One user as `user_overviews` lists them; `None` when there is no such user.
    async fn user_overview(&self, user_id: i64, month: &str) -> StoreResult<Option<UserOverview>>;
    async fn count_users(&self) -> StoreResult<i64>;
    /// Every user's usage per day and model in `month`, by day, then user, then model.
    async fn daily_usage(&self, month: &str) -> StoreResult<Vec<DailyUsage>>;
}

/// Opens the store named by `DATABASE_URL` and, unless disabled, migrates it.
pub async fn connect(settings: &DbSettings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.url.expose_secret();
    let scheme = url.split(':').next().unwrap_or_default();
    let store: Arc<dyn Store> = match scheme {
        "sqlite" => Arc::new(SqliteStore::connect(url, settings).await?),
        "postgres" | "postgresql" => Arc::new(PostgresStore::connect(url, settings).await?),
        "dynamodb" => Arc::new(DynamoStore::connect(url, settings).await?),
        other => anyhow::bail!(
            "DATABASE_URL: unsupported scheme {other:?}; \
             use sqlite://FILE, postgres://... or dynamodb://TABLE"
        ),
    };
    Ok(store)
}

/// Now, at the precision every backend stores, so a value read back equals the one written.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Incomplete => "incomplete",
            Self::Stopped => "stopped",
        }
    }
}

impl TryFrom<&str> for Role {
    type Error = UnknownValue;
    fn try_from(value: &str) -> Result<Self, UnknownValue> {
        match value {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            _ => Err(UnknownValue(value.to_owned())),
        }
    }
}

impl TryFrom<String> for Role {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, UnknownValue> {
        Self::try_from(value.as_str())
    }
}

impl TryFrom<&str> for MessageStatus {
    type Error = UnknownValue;
    fn try_from(value: &str) -> Result<Self, UnknownValue> {
        match value {
            "complete" => Ok(Self::Complete),
            "incomplete" => Ok(Self::Incomplete),
            "stopped" => Ok(Self::Stopped),
            _ => Err(UnknownValue(value.to_owned())),
        }
    }
}

impl TryFrom<String> for MessageStatus {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, UnknownValue> {
        Self::try_from(value.as_str())
    }
}

/// A stored enum value this build does not know (a newer schema, a manual edit).
#[derive(Debug)]
pub struct UnknownValue(String);

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown stored value {:?}", self.0)
    }
}

impl std::error::Error for UnknownValue {}
