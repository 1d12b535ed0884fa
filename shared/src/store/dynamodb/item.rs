//! Items as DynamoDB stores them: the key layout of the single table, and
//! typed reads of attribute maps.
//!
//! | item            | pk              | sk                       |
//! |-----------------|-----------------|--------------------------|
//! | id counter      | `COUNTER#users` | `COUNTER`                |
//! | user            | `USER#<id>`     | `PROFILE`                |
//! | email guard     | `EMAIL#<email>` | `EMAIL`                  |
//! | session         | `USER#<id>`     | `SESSION#<id>`           |
//! | monthly usage   | `USER#<id>`     | `USAGE#<month>#<model>`  |
//! | user directory  | `USERS`         | `USER#<id, 20 digits>`   |
//! | daily usage     | `DAILY#<month>` | `<day>#<user id, 20 digits>#<model>` |
//! | message         | `SESSION#<id>`  | `MSG#<seq, 20 digits>`   |
//! | refresh family  | `FAMILY#<id>`   | `FAMILY`                 |
//! | refresh token   | `TOKEN#<hash>`  | `TOKEN`                  |
//!
//! Sessions also carry `activity` (`<updated_at>#<id, 20 digits>`), the sort
//! key of the local index `by_activity`, so a user's sessions list newest first
//! with strongly consistent reads. A user's profile carries `is_admin` and
//! `token_quota` when set. The directory (written with the user) is how the
//! admin dashboard pages through users; a month's daily usage of every user is
//! one partition, so the dashboard reads it with one query.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow};
use aws_sdk_dynamodb::types::AttributeValue;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::errors::other;
use crate::store::{
    DailyUsage, Message, MonthlyUsage, Session, StoreError, StoreResult, User, timestamp::DbTime,
};

pub type Item = HashMap<String, AttributeValue>;

pub const PROFILE: &str = "PROFILE";

pub fn user_pk(user_id: i64) -> String {
    format!("USER#{user_id}")
}

pub fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}

pub const SESSION_SK_PREFIX: &str = "SESSION#";

pub fn session_sk(session_id: i64) -> String {
    format!("{SESSION_SK_PREFIX}{session_id}")
}

pub fn messages_pk(session_id: i64) -> String {
    format!("SESSION#{session_id}")
}

/// Zero-padded, so key order is number order.
pub fn message_sk(seq: i64) -> String {
    format!("MSG#{seq:020}")
}

pub fn usage_sk(month: &str, model: &str) -> String {
    format!("USAGE#{month}#{model}")
}

pub const DIRECTORY_PK: &str = "USERS";

pub fn directory_sk(user_id: i64) -> String {
    format!("USER#{user_id:020}")
}

pub fn daily_pk(month: &str) -> String {
    format!("DAILY#{month}")
}

pub fn daily_sk(day: &str, user_id: i64, model: &str) -> String {
    format!("{day}#{user_id:020}#{model}")
}

pub fn family_pk(family: &str) -> String {
    format!("FAMILY#{family}")
}

pub fn token_pk(token_hash: &str) -> String {
    format!("TOKEN#{token_hash}")
}

/// The `by_activity` sort key: most recent activity, then the higher id, first
/// when read backwards, as the SQL stores order sessions.
pub fn activity(updated_at: OffsetDateTime, session_id: i64) -> StoreResult<String> {
    Ok(format!("{}#{session_id:020}", time_text(updated_at)?))
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Fixed-width UTC text, so string comparison (`expires_at > :now`, the
/// activity key) is time order.
pub fn time_text(at: OffsetDateTime) -> StoreResult<String> {
    DbTime(at)
        .sortable_text()
        .map_err(|err| StoreError::Other(err.into()))
}

pub fn time(at: OffsetDateTime) -> StoreResult<AttributeValue> {
    time_text(at).map(AttributeValue::S)
}

/// The item's key, for the requests that take one.
pub fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// Typed reads of an item's attributes; a missing or mistyped one is an error
/// naming the item, never a panic.
pub struct Read<'a>(pub &'a Item);

impl Read<'_> {
    fn fail(&self, name: &str, what: &str) -> StoreError {
        let pk = self.0.get("pk").and_then(|v| v.as_s().ok());
        let sk = self.0.get("sk").and_then(|v| v.as_s().ok());
        StoreError::Other(anyhow!("item {pk:?}/{sk:?}: attribute {name} {what}"))
    }

    pub fn opt_str(&self, name: &str) -> StoreResult<Option<String>> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
            Some(_) => Err(self.fail(name, "is not a string")),
        }
    }

    pub fn str(&self, name: &str) -> StoreResult<String> {
        self.opt_str(name)?
            .ok_or_else(|| self.fail(name, "is missing"))
    }

    pub fn int(&self, name: &str) -> StoreResult<i64> {
        match self.0.get(name) {
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| self.fail(name, "is not an integer")),
            Some(_) => Err(self.fail(name, "is not a number")),
            None => Err(self.fail(name, "is missing")),
        }
    }

    pub fn time(&self, name: &str) -> StoreResult<OffsetDateTime> {
        let text = self.str(name)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| self.fail(name, "is not a timestamp"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|value| !matches!(value, AttributeValue::Null(_)))
    }

    pub fn user(&self) -> StoreResult<User> {
        Ok(User {
            id: self.int("id")?,
            email: self.str("email")?,
            created_at: self.time("created_at")?,
        })
    }

    pub fn session(&self) -> StoreResult<Session> {
        Ok(Session {
            id: self.int("id")?,
            title: self.str("title")?,
            system_prompt: self.opt_str("system_prompt")?,
            model: self.opt_str("model")?,
            message_count: self.int("message_count")?,
            created_at: self.time("created_at")?,
            updated_at: self.time("updated_at")?,
        })
    }

    pub fn message(&self) -> StoreResult<Message> {
        Ok(Message {
            id: self.int("id")?,
            role: self.str("role")?.try_into().map_err(other)?,
            content: self.str("content")?,
            tokens: self.int("tokens")?,
            status: self.str("status")?.try_into().map_err(other)?,
            created_at: self.time("created_at")?,
        })
    }

    pub fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        if self.has(name) {
            self.int(name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn flag(&self, name: &str) -> StoreResult<bool> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(false),
            Some(AttributeValue::Bool(value)) => Ok(*value),
            Some(_) => Err(self.fail(name, "is not a boolean")),
        }
    }

    pub fn daily(&self) -> StoreResult<DailyUsage> {
        Ok(DailyUsage {
            day: self.str("day")?,
            user_id: self.int("user_id")?,
            model: self.str("model")?,
            prompt_tokens: self.int("prompt_tokens")?,
            completion_tokens: self.int("completion_tokens")?,
            requests: self.int("requests")?,
        })
    }

    pub fn usage(&self) -> StoreResult<MonthlyUsage> {
        Ok(MonthlyUsage {
            month: self.str("month")?,
            model: self.str("model")?,
            prompt_tokens: self.int("prompt_tokens")?,
            completion_tokens: self.int("completion_tokens")?,
            requests: self.int("requests")?,
        })
    }
}

/// Where the store lives: `dynamodb://TABLE`, or `dynamodb://TABLE?endpoint=URL`
/// for DynamoDB Local or an emulator (otherwise the standard AWS environment,
/// `AWS_ENDPOINT_URL` included, decides).
#[derive(Debug, PartialEq, Eq)]
pub struct Location {
    pub table: String,
    pub endpoint: Option<String>,
}

pub fn location(url: &str) -> anyhow::Result<Location> {
    let rest = url
        .strip_prefix("dynamodb://")
        .context("DATABASE_URL: expected dynamodb://TABLE")?;
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let name = name.trim_end_matches('/');
    let valid = (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    anyhow::ensure!(
        valid,
        "DATABASE_URL: {name:?} is not a DynamoDB table name (3-255 of a-z, A-Z, 0-9, _ - .)"
    );
    let mut endpoint = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("endpoint", value)) if value.starts_with("http") => {
                endpoint = Some(value.to_owned());
            }
            _ => anyhow::bail!(
                "DATABASE_URL: unknown DynamoDB option {pair:?}; the one option is endpoint=http(s)://..."
            ),
        }
    }
    Ok(Location {
        table: name.to_owned(),
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn keys_sort_as_their_numbers_and_times() {
        assert!(message_sk(9) < message_sk(10));
        let early = activity(datetime!(2026-11-27 12:00:05 UTC), 99).unwrap();
        let late = activity(datetime!(2026-11-27 12:00:05.5 UTC), 1).unwrap();
        assert!(early < late);
        assert_eq!(late, "2026-11-27T12:00:05.500000Z#00000000000000000001");
    }

    #[test]
    fn urls_name_a_valid_table_and_maybe_an_endpoint() {
        assert_eq!(
            location("dynamodb://chat-prod").unwrap(),
            Location {
                table: "chat-prod".into(),
                endpoint: None
            }
        );
        assert_eq!(
            location("dynamodb://chat.dev?endpoint=http://localhost:8000").unwrap(),
            Location {
                table: "chat.dev".into(),
                endpoint: Some("http://localhost:8000".into())
            }
        );
        assert!(location("dynamodb://ab").is_err());
        assert!(location("dynamodb://has space").is_err());
        assert!(location("dynamodb://chat?region=x").is_err());
        assert!(location("postgres://x").is_err());
    }

    #[test]
    fn a_malformed_item_is_an_error_not_a_panic() {
        let item = key("USER#1".into(), PROFILE);
        let err = Read(&item).user().unwrap_err();
        assert!(
            matches!(&err, StoreError::Other(e) if e.to_string().contains("attribute id is missing")),
            "{err:?}"
        );
    }
}
