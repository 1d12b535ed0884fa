//! The SQL both relational backends share.
//!
//! The queries are written once in the dialect Postgres and SQLite have in common
//! (`$n` parameters, `RETURNING`, `ON CONFLICT`), and `impl_sql_store!` expands
//! them for each concrete pool type. A macro rather than generics: sqlx's
//! `Database`-generic bounds would bury the SQL under trait clutter.

use sqlx::error::ErrorKind;

use super::{StoreError, User};

#[derive(sqlx::FromRow)]
pub(super) struct CredentialsRow {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct SpentToken {
    pub user_id: i64,
    pub family: String,
}

pub(super) fn map_unique(err: sqlx::Error, conflict: StoreError) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => conflict,
        _ => err.into(),
    }
}

/// Revokes the family of the token whose hash is $1: one row, so concurrent
/// revocations cannot deadlock on each other's token rows.
pub(super) const REVOKE_FAMILY: &str = "UPDATE refresh_families SET revoked_at = $2 \
     WHERE revoked_at IS NULL AND id = (SELECT family FROM refresh_tokens WHERE token_hash = $1)";

/// A new session of user $1: title $2, system prompt $3, model $4, at $5.
pub(super) const CREATE_SESSION: &str = "INSERT INTO sessions \
     (user_id, title, system_prompt, model, message_count, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 0, $5, $5) \
     RETURNING id, title, system_prompt, model, message_count, created_at, updated_at";

/// The newest $3 messages of session $1 with ids up to $2, newest first.
pub(super) const RECENT_MESSAGES: &str = "SELECT id, role, content, tokens, status, created_at \
     FROM messages WHERE session_id = $1 AND id <= $2 ORDER BY id DESC LIMIT $3";

/// User $1's standing in month $2 and, joined when it is theirs, session $3:
/// one row, or none when the user no longer exists. The user's columns and
/// the session's do not share a name, so each struct reads its own from it.
pub(super) const STANDING_AND_SESSION: &str = "SELECT u.email, u.is_admin, u.token_quota, \
     CAST(COALESCE((SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly \
     WHERE user_id = u.id AND month = $2), 0) AS BIGINT) AS used_tokens, \
     s.id, s.title, s.system_prompt, s.model, s.message_count, s.created_at, s.updated_at \
     FROM users u LEFT JOIN sessions s ON s.id = $3 AND s.user_id = u.id WHERE u.id = $1";

/// `STANDING_AND_SESSION`'s row as `(Standing, Option<Session>)`.
macro_rules! standing_and_session_from {
    ($row:expr) => {{
        use sqlx::{FromRow as _, Row as _};
        let row = $row;
        let session = match row.try_get::<Option<i64>, _>("id")? {
            Some(_) => Some($crate::store::Session::from_row(&row)?),
            None => None,
        };
        ($crate::store::Standing::from_row(&row)?, session)
    }};
}
pub(super) use standing_and_session_from;

/// Users with their counts and one month's usage ($1), then `$tail`.
macro_rules! user_overviews {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.email, u.created_at, u.is_admin, u.token_quota, \
             CAST((SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id) AS BIGINT) AS sessions, \
             CAST(COALESCE((SELECT SUM(s.message_count) FROM sessions s \
                            WHERE s.user_id = u.id), 0) AS BIGINT) AS messages, \
             CAST(COALESCE(m.prompt_tokens, 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(m.completion_tokens, 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(m.requests, 0) AS BIGINT) AS requests \
             FROM users u LEFT JOIN ( \
                 SELECT user_id, SUM(prompt_tokens) AS prompt_tokens, \
                        SUM(completion_tokens) AS completion_tokens, SUM(requests) AS requests \
                 FROM usage_monthly WHERE month = $1 GROUP BY user_id) m ON m.user_id = u.id ",
            $tail
        )
    };
}

pub(super) const USER_OVERVIEWS: &str = user_overviews!("ORDER BY u.id LIMIT $2 OFFSET $3");
pub(super) const USER_OVERVIEW: &str = user_overviews!("WHERE u.id = $2");

macro_rules! impl_sql_store {
    // A backend provides `pool` for reads, `writer()` for a connection to
    // write on and `begin_write(connection)` for a write transaction on it.
    // `$own`: methods a backend implements in its own dialect, beside the shared ones.
    ($store:ty $(, { $($own:tt)* })?) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            $($($own)*)?

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_user(&self, email: &str, password_hash: &str) -> StoreResult<User> {
                sqlx::query_as(
                    "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3) \
                     RETURNING id, email, created_at",
                )
                .bind(email)
                .bind(password_hash)
                .bind(DbTime(now()))
                .fetch_one(&mut *self.writer().await?)
                .await
                .map_err(|err| sql::map_unique(err, StoreError::EmailTaken))
            }

            async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
                let row: Option<sql::CredentialsRow> = sqlx::query_as(
                    "SELECT id, email, created_at, password_hash FROM users WHERE email = $1",
                )
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| UserCredentials {
                    user: row.user,
                    password_hash: row.password_hash,
                }))
            }

            async fn find_user(&self, user_id: i64) -> StoreResult<Option<User>> {
                Ok(sqlx::query_as("SELECT id, email, created_at FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()> {
                let now = DbTime(now());
                let mut writer = self.writer().await?;
                let mut tx = Self::begin_write(&mut writer).await?;
                sqlx::query(
                    "INSERT INTO refresh_families (id, user_id, created_at) VALUES ($1, $2, $3)",
                )
                .bind(&token.family)
                .bind(token.user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token.user_id)
                .bind(&token.family)
                .bind(&token.token_hash)
                .bind(DbTime(token.expires_at))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                presented_hash: &str,
                replacement_hash: &str,
                replacement_expires_at: OffsetDateTime,
            ) -> StoreResult<Rotation> {
                let now = DbTime(now());
                let mut writer = self.writer().await?;
                let mut tx = Self::begin_write(&mut writer).await?;
                // Spending is one conditional UPDATE, so of two concurrent rotations
                // of the same token exactly one finds it live.
                let spent: Option<sql::SpentToken> = sqlx::query_as(
                    "UPDATE refresh_tokens SET used_at = $2 \
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     AND EXISTS (SELECT 1 FROM refresh_families f \
                                 WHERE f.id = refresh_tokens.family AND f.revoked_at IS NULL) \
                     RETURNING user_id, family",
                )
                .bind(presented_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;

                if let Some(spent) = spent {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(spent.user_id)
                    .bind(&spent.family)
                    .bind(replacement_hash)
                    .bind(DbTime(replacement_expires_at))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(Rotation::Rotated { user_id: spent.user_id });
                }

                let was_spent: Option<bool> = sqlx::query_scalar(
                    "SELECT used_at IS NOT NULL FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(presented_hash)
                .fetch_optional(&mut *tx)
                .await?;
                if was_spent != Some(true) {
                    return Ok(Rotation::Invalid);
                }
                // A spent token came back: someone holds a copy. Revoke its whole family,
                // including the token that replaced it.
                sqlx::query(sql::REVOKE_FAMILY)
                    .bind(presented_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Rotation::Reused)
            }

            async fn revoke_refresh_family(&self, token_hash: &str) -> StoreResult<()> {
                sqlx::query(sql::REVOKE_FAMILY)
                .bind(token_hash)
                .bind(DbTime(now()))
                .execute(&mut *self.writer().await?)
                .await?;
                Ok(())
            }

            async fn list_sessions(
                &self,
                user_id: i64,
                limit: i64,
                offset: i64,
            ) -> StoreResult<Vec<Session>> {
                Ok(sqlx::query_as(
                    "SELECT id, title, system_prompt, model, message_count, created_at, updated_at \
                     FROM sessions WHERE user_id = $1 \
                     ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3",
                )
                .bind(user_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn create_session(&self, user_id: i64, session: &NewSession) -> StoreResult<Session> {
                let now = DbTime(now());
                sqlx::query_as(sql::CREATE_SESSION)
                .bind(user_id)
                .bind(&session.title)
                .bind(&session.system_prompt)
                .bind(&session.model)
                .bind(now)
                .fetch_one(&mut *self.writer().await?)
                .await
                .map_err(Into::into)
            }

            async fn find_session(&self, user_id: i64, session_id: i64) -> StoreResult<Option<Session>> {
                Ok(sqlx::query_as(
                    "SELECT id, title, system_prompt, model, message_count, created_at, updated_at \
                     FROM sessions WHERE id = $1 AND user_id = $2",
                )
                .bind(session_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn update_session(
                &self,
                user_id: i64,
                session_id: i64,
                patch: &SessionPatch,
            ) -> StoreResult<Option<Session>> {
                Ok(sqlx::query_as(
                    "UPDATE sessions SET title = COALESCE($3, title), \
                     system_prompt = CASE WHEN $4 THEN $5 ELSE system_prompt END, \
                     model = CASE WHEN $6 THEN $7 ELSE model END, updated_at = $8 \
                     WHERE id = $1 AND user_id = $2 \
                     RETURNING id, title, system_prompt, model, message_count, created_at, updated_at",
                )
                .bind(session_id)
                .bind(user_id)
                .bind(&patch.title)
                .bind(patch.system_prompt.is_some())
                .bind(patch.system_prompt.clone().flatten())
                .bind(patch.model.is_some())
                .bind(patch.model.clone().flatten())
                .bind(DbTime(now()))
                .fetch_optional(&mut *self.writer().await?)
                .await?)
            }

            async fn delete_session(&self, user_id: i64, session_id: i64) -> StoreResult<bool> {
                // Messages go with it through ON DELETE CASCADE.
                let deleted = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
                    .bind(session_id)
                    .bind(user_id)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn list_messages(&self, session_id: i64) -> StoreResult<Vec<Message>> {
                Ok(sqlx::query_as(
                    "SELECT id, role, content, tokens, status, created_at \
                     FROM messages WHERE session_id = $1 ORDER BY id",
                )
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn recent_messages(
                &self,
                session_id: i64,
                up_to: i64,
                limit: i64,
            ) -> StoreResult<Vec<Message>> {
                let mut newest_first: Vec<Message> = sqlx::query_as(sql::RECENT_MESSAGES)
                .bind(session_id)
                .bind(up_to)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                newest_first.reverse();
                Ok(newest_first)
            }

            async fn append_message(
                &self,
                user_id: i64,
                session_id: i64,
                message: &NewMessage,
                usage: Option<&UsageRecord>,
            ) -> StoreResult<Message> {
                self.append(user_id, session_id, message, usage, DbTime(now()))
                    .await
            }

            async fn monthly_usage(&self, user_id: i64) -> StoreResult<Vec<MonthlyUsage>> {
                Ok(sqlx::query_as(
                    "SELECT month, model, prompt_tokens, completion_tokens, requests \
                     FROM usage_monthly WHERE user_id = $1 ORDER BY month DESC, model",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn standing(&self, user_id: i64, month: &str) -> StoreResult<Option<Standing>> {
                Ok(sqlx::query_as(
                    "SELECT email, is_admin, token_quota, CAST(COALESCE(( \
                         SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly \
                         WHERE user_id = users.id AND month = $2), 0) AS BIGINT) AS used_tokens \
                     FROM users WHERE id = $1",
                )
                .bind(user_id)
                .bind(month)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn standing_and_session(
                &self,
                user_id: i64,
                month: &str,
                session_id: Option<i64>,
            ) -> StoreResult<Option<(Standing, Option<Session>)>> {
                let row = sqlx::query(sql::STANDING_AND_SESSION)
                    .bind(user_id)
                    .bind(month)
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(sql::standing_and_session_from!(row)),
                    None => None,
                })
            }

            async fn set_admin(&self, email: &str, is_admin: bool) -> StoreResult<bool> {
                let updated = sqlx::query("UPDATE users SET is_admin = $2 WHERE email = $1")
                    .bind(email)
                    .bind(is_admin)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn set_token_quota(&self, user_id: i64, quota: Option<i64>) -> StoreResult<bool> {
                let updated = sqlx::query("UPDATE users SET token_quota = $2 WHERE id = $1")
                    .bind(user_id)
                    .bind(quota)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(updated.rows_affected() > 0)
            }

            async fn user_overviews(
                &self,
                month: &str,
                limit: i64,
                offset: i64,
            ) -> StoreResult<Vec<UserOverview>> {
                Ok(sqlx::query_as(sql::USER_OVERVIEWS)
                    .bind(month)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn user_overview(&self, user_id: i64, month: &str) -> StoreResult<Option<UserOverview>> {
                Ok(sqlx::query_as(sql::USER_OVERVIEW)
                    .bind(month)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn count_users(&self) -> StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn daily_usage(&self, month: &str) -> StoreResult<Vec<DailyUsage>> {
                // Day keys are `YYYY-MM-DD` text: the month is a key range.
                Ok(sqlx::query_as(
                    "SELECT day, user_id, model, prompt_tokens, completion_tokens, requests \
                     FROM usage_daily WHERE day BETWEEN $1 AND $2 ORDER BY day, user_id, model",
                )
                .bind(format!("{month}-00"))
                .bind(format!("{month}-99"))
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

pub(super) use impl_sql_store;
