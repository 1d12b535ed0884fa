//! DynamoDB, one table for everything (the key layout is in `item.rs`).
//!
//! Integer ids come from atomic counters: users and sessions from one counter
//! item each, messages from their session's own `next_seq`, so a busy table has
//! no global hot item. Every multi-item guarantee of the SQL stores is a
//! transaction here: an email and its user are written together under a
//! uniqueness condition; a message, its session's count and activity, and the
//! month's usage commit together or not at all.

mod admin;
mod errors;
mod item;
mod table;

use std::collections::HashMap;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_config::{retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::query::builders::QueryFluentBuilder,
    types::{
        AttributeValue, DeleteRequest, Put, ReturnValue, TransactWriteItem, Update, WriteRequest,
    },
};
use time::OffsetDateTime;

use self::{
    errors::{
        Backoff, Cancelled, cancellation, classify, is_condition_failed, other, still_conflicting,
    },
    item::{Item, Read, key, n, s, time},
};
use super::{
    DailyUsage, Message, MonthlyUsage, NewMessage, NewRefreshToken, NewSession, Rotation, Session,
    SessionPatch, Standing, Store, StoreError, StoreResult, UsageRecord, User, UserCredentials,
    UserOverview, now,
};
use crate::config::DbSettings;

/// Message content, in bytes, that leaves room under DynamoDB's 400 KB item
/// limit for the message's other attributes.
pub const MAX_CONTENT_BYTES: usize = 384 * 1024;

const TOKEN_SK: &str = "TOKEN";
const FAMILY_SK: &str = "FAMILY";
const EMAIL_SK: &str = "EMAIL";

pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Region and credentials come from the standard AWS environment, and so
    /// does the endpoint unless the URL names one.
    pub async fn connect(url: &str, settings: &DbSettings) -> anyhow::Result<Self> {
        let item::Location { table, endpoint } = item::location(url)?;
        let mut config = aws_config::from_env();
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        let config = config
            // Throttling is retried with backoff by the SDK; when these attempts
            // are spent the request gets a 503.
            .retry_config(RetryConfig::standard().with_max_attempts(settings.dynamodb_max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .operation_attempt_timeout(std::time::Duration::from_secs(10))
                    .build(),
            )
            .load()
            .await;
        let client = Client::new(&config);
        if settings.dynamodb_create_table {
            table::create_if_absent(&client, &table).await?;
        }
        Ok(Self { client, table })
    }

    async fn next_id(&self, counter: &str) -> StoreResult<i64> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("COUNTER#{counter}"), "COUNTER")))
            .update_expression("ADD #value :one")
            .expression_attribute_names("#value", "value")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify)?;
        Read(&updated.attributes.unwrap_or_default()).int("value")
    }

    /// Takes the next message number of the user's session; `SessionNotFound`
    /// when the session is not there or not theirs (its key names the owner).
    async fn reserve_message_seq(&self, user_id: i64, session_id: i64) -> StoreResult<i64> {
        let updated = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(session_key(user_id, session_id)))
                .update_expression("ADD next_seq :one")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":one", n(1))
                .return_values(ReturnValue::UpdatedNew)
                .send()
        })
        .await;
        match updated {
            Ok(updated) => Read(&updated.attributes.unwrap_or_default()).int("next_seq"),
            Err(err) if is_condition_failed(&err) => Err(StoreError::SessionNotFound),
            Err(err) => Err(classify(err)),
        }
    }

    /// Commits the items together, retrying conflicts with other transactions.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxFailure> {
        let mut backoff = Backoff::new();
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let Err(err) = sent else { return Ok(()) };
            match cancellation(&err) {
                Some(Cancelled::Condition(position)) => return Err(TxFailure::Condition(position)),
                Some(Cancelled::Conflict) if backoff.wait().await => {}
                Some(Cancelled::Conflict) => return Err(TxFailure::Store(still_conflicting())),
                None => return Err(TxFailure::Store(classify(err))),
            }
        }
    }

    async fn get(&self, key: Item) -> StoreResult<Option<Item>> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(got.item)
    }

    /// Every item of a query, page after page (a page stops at 1 MB), or the
    /// first `want` of them.
    async fn query_all(
        &self,
        query: QueryFluentBuilder,
        want: Option<usize>,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = query
                .clone()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            items.extend(page.items.unwrap_or_default());
            if let Some(want) = want.filter(|want| items.len() >= *want) {
                items.truncate(want);
                return Ok(items);
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(items),
            }
        }
    }

    fn put(&self, item: Item, condition: &str) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(other)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn update(
        &self,
        key: Item,
        expression: &str,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: Item,
    ) -> StoreResult<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names((!names.is_empty()).then(|| {
                names
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(other)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn token(&self, token_hash: &str) -> StoreResult<Option<Item>> {
        self.get(key(item::token_pk(token_hash), TOKEN_SK)).await
    }

    async fn revoke_family(&self, family: &str) -> StoreResult<()> {
        let now = time(now())?;
        let revoked = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(item::family_pk(family), FAMILY_SK)))
                .update_expression("SET revoked_at = :now")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(revoked_at)")
                .expression_attribute_values(":now", now.clone())
                .send()
        })
        .await;
        match revoked {
            Ok(_) => Ok(()),
            // Already revoked, or expired away: either way no token of it is live.
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(classify(err)),
        }
    }

    async fn delete_messages(&self, session_id: i64) -> StoreResult<()> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(item::messages_pk(session_id)))
            .projection_expression("pk, sk");
        let keys = self.query_all(query, None).await?;
        for chunk in keys.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|key| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map_err(other)?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let mut backoff = Backoff::new();
            while !requests.is_empty() {
                let written = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(classify)?;
                requests = written
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.table))
                    .unwrap_or_default();
                if !requests.is_empty() && !backoff.wait().await {
                    return Err(still_conflicting());
                }
            }
        }
        Ok(())
    }
}

enum TxFailure {
    /// The condition on the item at this position failed.
    Condition(usize),
    Store(StoreError),
}

impl TxFailure {
    /// For transactions whose conditions cannot fail unless the data is corrupt.
    fn unexpected(self) -> StoreError {
        match self {
            Self::Condition(position) => StoreError::Other(anyhow!(
                "DynamoDB: condition {position} of a transaction failed unexpectedly"
            )),
            Self::Store(err) => err,
        }
    }
}

/// Sends a single-item write again when the item was held by a transaction.
async fn retry_conflicts<T, E, R, F, Fut>(mut send: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut backoff = Backoff::new();
    loop {
        match send().await {
            Err(err)
                if err.code() == Some("TransactionConflictException") && backoff.wait().await => {}
            sent => return sent,
        }
    }
}

fn session_key(user_id: i64, session_id: i64) -> Item {
    key(item::user_pk(user_id), item::session_sk(session_id))
}

fn attributes<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Expiry as DynamoDB's TTL wants it: epoch seconds.
fn ttl(at: OffsetDateTime) -> AttributeValue {
    n(at.unix_timestamp())
}

#[async_trait]
impl Store for DynamoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn create_user(&self, email: &str, password_hash: &str) -> StoreResult<User> {
        let id = self.next_id("users").await?;
        let created_at = now();
        let guard = attributes([
            ("pk", s(item::email_pk(email))),
            ("sk", s(EMAIL_SK)),
            ("user_id", n(id)),
            ("password_hash", s(password_hash)),
            ("created_at", time(created_at)?),
        ]);
        let profile = attributes([
            ("pk", s(item::user_pk(id))),
            ("sk", s(item::PROFILE)),
            ("id", n(id)),
            ("email", s(email)),
            ("created_at", time(created_at)?),
        ]);
        let listed = attributes([
            ("pk", s(item::DIRECTORY_PK)),
            ("sk", s(item::directory_sk(id))),
            ("id", n(id)),
        ]);
        let written = self
            .transact(vec![
                self.put(guard, "attribute_not_exists(pk)")?,
                self.put(profile, "attribute_not_exists(pk)")?,
                self.put(listed, "attribute_not_exists(pk)")?,
            ])
            .await;
        match written {
            Ok(()) => Ok(User {
                id,
                email: email.to_owned(),
                created_at,
            }),
            Err(TxFailure::Condition(0)) => Err(StoreError::EmailTaken),
            Err(failure) => Err(failure.unexpected()),
        }
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
        let Some(guard) = self.get(key(item::email_pk(email), EMAIL_SK)).await? else {
            return Ok(None);
        };
        let guard = Read(&guard);
        Ok(Some(UserCredentials {
            user: User {
                id: guard.int("user_id")?,
                email: email.to_owned(),
                created_at: guard.time("created_at")?,
            },
            password_hash: guard.str("password_hash")?,
        }))
    }

    async fn find_user(&self, user_id: i64) -> StoreResult<Option<User>> {
        let profile = self.get(key(item::user_pk(user_id), item::PROFILE)).await?;
        profile
            .as_ref()
            .map(|profile| Read(profile).user())
            .transpose()
    }

    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()> {
        let created_at = time(now())?;
        let family = attributes([
            ("pk", s(item::family_pk(&token.family))),
            ("sk", s(FAMILY_SK)),
            ("user_id", n(token.user_id)),
            ("created_at", created_at.clone()),
            (table::TTL_ATTRIBUTE, ttl(token.expires_at)),
        ]);
        let stored = attributes([
            ("pk", s(item::token_pk(&token.token_hash))),
            ("sk", s(TOKEN_SK)),
            ("user_id", n(token.user_id)),
            ("family", s(&token.family)),
            ("expires_at", time(token.expires_at)?),
            ("created_at", created_at),
            (table::TTL_ATTRIBUTE, ttl(token.expires_at)),
        ]);
        self.transact(vec![
            self.put(family, "attribute_not_exists(pk)")?,
            self.put(stored, "attribute_not_exists(pk)")?,
        ])
        .await
        .map_err(TxFailure::unexpected)
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        replacement_hash: &str,
        replacement_expires_at: OffsetDateTime,
    ) -> StoreResult<Rotation> {
        loop {
            let Some(token) = self.token(presented_hash).await? else {
                return Ok(Rotation::Invalid);
            };
            let token = Read(&token);
            let (user_id, family) = (token.int("user_id")?, token.str("family")?);
            let now = now();
            if token.has("used_at") {
                // A spent token came back: someone holds a copy. Revoke its
                // whole family, including the token that replaced it.
                self.revoke_family(&family).await?;
                return Ok(Rotation::Reused);
            }
            if token.time("expires_at")? <= now {
                return Ok(Rotation::Invalid);
            }
            let spend = self.update(
                key(item::token_pk(presented_hash), TOKEN_SK),
                "SET used_at = :now",
                Some("attribute_exists(pk) AND attribute_not_exists(used_at)"),
                &[],
                attributes([(":now", time(now)?)]),
            )?;
            // The family lives as long as its newest token.
            let extend_family = self.update(
                key(item::family_pk(&family), FAMILY_SK),
                "SET #ttl = :ttl",
                Some("attribute_exists(pk) AND attribute_not_exists(revoked_at)"),
                &[("#ttl", table::TTL_ATTRIBUTE)],
                attributes([(":ttl", ttl(replacement_expires_at))]),
            )?;
            let replacement = attributes([
                ("pk", s(item::token_pk(replacement_hash))),
                ("sk", s(TOKEN_SK)),
                ("user_id", n(user_id)),
                ("family", s(&family)),
                ("expires_at", time(replacement_expires_at)?),
                ("created_at", time(now)?),
                (table::TTL_ATTRIBUTE, ttl(replacement_expires_at)),
            ]);
            let rotated = self
                .transact(vec![
                    spend,
                    extend_family,
                    self.put(replacement, "attribute_not_exists(pk)")?,
                ])
                .await;
            match rotated {
                Ok(()) => return Ok(Rotation::Rotated { user_id }),
                // Spent by a concurrent rotation since we read it: read it again,
                // and it is reuse.
                Err(TxFailure::Condition(0)) => continue,
                Err(TxFailure::Condition(1)) => return Ok(Rotation::Invalid),
                Err(failure) => return Err(failure.unexpected()),
            }
        }
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> StoreResult<()> {
        match self.token(token_hash).await? {
            Some(token) => self.revoke_family(&Read(&token).str("family")?).await,
            None => Ok(()),
        }
    }

    async fn list_sessions(
        &self,
        user_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Session>> {
        let (Ok(limit), Ok(offset)) = (usize::try_from(limit), usize::try_from(offset)) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let want = offset.saturating_add(limit);
        let query = self
            .client
            .query()
            .index_name(table::BY_ACTIVITY)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(item::user_pk(user_id)))
            .scan_index_forward(false)
            .limit(i32::try_from(want).unwrap_or(i32::MAX).min(1_000));
        let items = self.query_all(query, Some(want)).await?;
        items
            .iter()
            .skip(offset)
            .map(|i| Read(i).session())
            .collect()
    }

    async fn create_session(&self, user_id: i64, session: &NewSession) -> StoreResult<Session> {
        let id = self.next_id("sessions").await?;
        let created_at = now();
        let mut stored = attributes([
            ("pk", s(item::user_pk(user_id))),
            ("sk", s(item::session_sk(id))),
            ("id", n(id)),
            ("title", s(&session.title)),
            ("message_count", n(0)),
            ("next_seq", n(0)),
            ("created_at", time(created_at)?),
            ("updated_at", time(created_at)?),
            ("activity", s(item::activity(created_at, id)?)),
        ]);
        if let Some(prompt) = &session.system_prompt {
            stored.insert("system_prompt".into(), s(prompt));
        }
        if let Some(model) = &session.model {
            stored.insert("model".into(), s(model));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(stored))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify)?;
        Ok(Session {
            id,
            title: session.title.clone(),
            system_prompt: session.system_prompt.clone(),
            model: session.model.clone(),
            message_count: 0,
            created_at,
            updated_at: created_at,
        })
    }

    async fn find_session(&self, user_id: i64, session_id: i64) -> StoreResult<Option<Session>> {
        let found = self.get(session_key(user_id, session_id)).await?;
        found.as_ref().map(|item| Read(item).session()).transpose()
    }

    async fn update_session(
        &self,
        user_id: i64,
        session_id: i64,
        patch: &SessionPatch,
    ) -> StoreResult<Option<Session>> {
        let now = now();
        let mut set = vec!["updated_at = :now", "activity = :activity"];
        let mut remove = Vec::new();
        let mut values = attributes([
            (":now", time(now)?),
            (":activity", s(item::activity(now, session_id)?)),
        ]);
        if let Some(title) = &patch.title {
            set.push("title = :title");
            values.insert(":title".into(), s(title));
        }
        match &patch.system_prompt {
            Some(Some(prompt)) => {
                set.push("system_prompt = :prompt");
                values.insert(":prompt".into(), s(prompt));
            }
            Some(None) => remove.push("system_prompt"),
            None => {}
        }
        match &patch.model {
            Some(Some(model)) => {
                set.push("#model = :model");
                values.insert(":model".into(), s(model));
            }
            Some(None) => remove.push("#model"),
            None => {}
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let uses_model = patch.model.is_some();
        let updated = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(session_key(user_id, session_id)))
                .update_expression(&expression)
                .condition_expression("attribute_exists(pk)")
                .set_expression_attribute_names(
                    uses_model.then(|| HashMap::from([("#model".to_owned(), "model".to_owned())])),
                )
                .set_expression_attribute_values(Some(values.clone()))
                .return_values(ReturnValue::AllNew)
                .send()
        })
        .await;
        match updated {
            Ok(updated) => Read(&updated.attributes.unwrap_or_default())
                .session()
                .map(Some),
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(classify(err)),
        }
    }

    async fn delete_session(&self, user_id: i64, session_id: i64) -> StoreResult<bool> {
        let deleted = retry_conflicts(|| {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(session_key(user_id, session_id)))
                .condition_expression("attribute_exists(pk)")
                .send()
        })
        .await;
        match deleted {
            Ok(_) => {}
            Err(err) if is_condition_failed(&err) => return Ok(false),
            Err(err) => return Err(classify(err)),
        }
        // The session is gone first, so no append can commit into it while its
        // messages are deleted (an append's transaction requires the session).
        self.delete_messages(session_id).await?;
        Ok(true)
    }

    async fn list_messages(&self, session_id: i64) -> StoreResult<Vec<Message>> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :msg)")
            .expression_attribute_values(":pk", s(item::messages_pk(session_id)))
            .expression_attribute_values(":msg", s("MSG#"));
        let items = self.query_all(query, None).await?;
        items.iter().map(|i| Read(i).message()).collect()
    }

    async fn recent_messages(
        &self,
        session_id: i64,
        up_to: i64,
        limit: i64,
    ) -> StoreResult<Vec<Message>> {
        let Ok(limit) = usize::try_from(limit) else {
            return Ok(Vec::new());
        };
        if limit == 0 || up_to < 0 {
            return Ok(Vec::new());
        }
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
            .expression_attribute_values(":pk", s(item::messages_pk(session_id)))
            .expression_attribute_values(":first", s(item::message_sk(0)))
            .expression_attribute_values(":last", s(item::message_sk(up_to)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        let newest_first = self.query_all(query, Some(limit)).await?;
        newest_first
            .iter()
            .rev()
            .map(|i| Read(i).message())
            .collect()
    }

    async fn append_message(
        &self,
        user_id: i64,
        session_id: i64,
        message: &NewMessage,
        usage: Option<&UsageRecord>,
    ) -> StoreResult<Message> {
        if message.content.len() > MAX_CONTENT_BYTES {
            return Err(StoreError::TooLarge {
                field: "content",
                limit_bytes: MAX_CONTENT_BYTES,
            });
        }
        let seq = self.reserve_message_seq(user_id, session_id).await?;
        let created_at = now();
        let stored = attributes([
            ("pk", s(item::messages_pk(session_id))),
            ("sk", s(item::message_sk(seq))),
            ("id", n(seq)),
            ("role", s(message.role.as_str())),
            ("content", s(&message.content)),
            ("tokens", n(message.tokens)),
            ("status", s(message.status.as_str())),
            ("created_at", time(created_at)?),
        ]);
        let mut items = vec![
            self.put(stored, "attribute_not_exists(pk)")?,
            self.update(
                session_key(user_id, session_id),
                "ADD message_count :one SET updated_at = :now, activity = :activity",
                Some("attribute_exists(pk)"),
                &[],
                attributes([
                    (":one", n(1)),
                    (":now", time(created_at)?),
                    (":activity", s(item::activity(created_at, session_id)?)),
                ]),
            )?,
        ];
        if let Some(usage) = usage {
            items.push(self.update(
                key(
                    item::user_pk(user_id),
                    item::usage_sk(usage.month(), &usage.model),
                ),
                "ADD prompt_tokens :prompt, completion_tokens :completion, requests :one \
                 SET #month = :month, #model = :model",
                None,
                &[("#month", "month"), ("#model", "model")],
                attributes([
                    (":prompt", n(usage.prompt_tokens)),
                    (":completion", n(usage.completion_tokens)),
                    (":one", n(1)),
                    (":month", s(usage.month())),
                    (":model", s(&usage.model)),
                ]),
            )?);
            items.push(self.update(
                key(
                    item::daily_pk(usage.month()),
                    item::daily_sk(&usage.day, user_id, &usage.model),
                ),
                "ADD prompt_tokens :prompt, completion_tokens :completion, requests :one \
                 SET #day = :day, user_id = :user, #model = :model",
                None,
                &[("#day", "day"), ("#model", "model")],
                attributes([
                    (":prompt", n(usage.prompt_tokens)),
                    (":completion", n(usage.completion_tokens)),
                    (":one", n(1)),
                    (":day", s(&usage.day)),
                    (":user", n(user_id)),
                    (":model", s(&usage.model)),
                ]),
            )?);
        }
        match self.transact(items).await {
            Ok(()) => Ok(Message {
                id: seq,
                role: message.role,
                content: message.content.clone(),
                tokens: message.tokens,
                status: message.status,
                created_at,
            }),
            // Deleted since the number was reserved.
            Err(TxFailure::Condition(1)) => Err(StoreError::SessionNotFound),
            Err(failure) => Err(failure.unexpected()),
        }
    }

    async fn monthly_usage(&self, user_id: i64) -> StoreResult<Vec<MonthlyUsage>> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :usage)")
            .expression_attribute_values(":pk", s(item::user_pk(user_id)))
            .expression_attribute_values(":usage", s("USAGE#"));
        let items = self.query_all(query, None).await?;
        let mut months = items
            .iter()
            .map(|i| Read(i).usage())
            .collect::<StoreResult<Vec<_>>>()?;
        months.sort_by(|a, b| b.month.cmp(&a.month).then_with(|| a.model.cmp(&b.model)));
        Ok(months)
    }

    async fn standing(&self, user_id: i64, month: &str) -> StoreResult<Option<Standing>> {
        self.standing_of(user_id, month).await
    }

    async fn set_admin(&self, email: &str, is_admin: bool) -> StoreResult<bool> {
        self.set_admin_flag(email, is_admin).await
    }

    async fn set_token_quota(&self, user_id: i64, quota: Option<i64>) -> StoreResult<bool> {
        self.set_quota(user_id, quota).await
    }

    async fn user_overviews(
        &self,
        month: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<UserOverview>> {
        self.overviews(month, limit, offset).await
    }

    async fn user_overview(&self, user_id: i64, month: &str) -> StoreResult<Option<UserOverview>> {
        self.overview(user_id, month).await
    }

    async fn count_users(&self) -> StoreResult<i64> {
        self.directory_size().await
    }

    async fn daily_usage(&self, month: &str) -> StoreResult<Vec<DailyUsage>> {
        self.month_of_days(month).await
    }
}
