//! The administrative reads and writes: admin flags and quotas on the user's
//! profile, the user directory, and a month's daily usage.

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use futures::{StreamExt as _, TryStreamExt as _};

use super::{
    DynamoStore, EMAIL_SK, attributes,
    errors::{classify, is_condition_failed},
    item::{self, Item, Read, key, s},
};
use crate::store::{DailyUsage, Standing, StoreResult, UserOverview};

/// How many users' partitions the dashboard's user list reads at once.
const OVERVIEWS_IN_FLIGHT: usize = 8;

impl DynamoStore {
    pub(super) async fn standing_of(
        &self,
        user_id: i64,
        month: &str,
    ) -> StoreResult<Option<Standing>> {
        let Some(profile) = self.get(key(item::user_pk(user_id), item::PROFILE)).await? else {
            return Ok(None);
        };
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :month)")
            .expression_attribute_values(":pk", s(item::user_pk(user_id)))
            .expression_attribute_values(":month", s(item::usage_sk(month, "")));
        let mut used_tokens = 0;
        for usage in self.query_all(query, None).await? {
            let usage = Read(&usage);
            used_tokens += usage.int("prompt_tokens")? + usage.int("completion_tokens")?;
        }
        let profile = Read(&profile);
        Ok(Some(Standing {
            email: profile.str("email")?,
            is_admin: profile.flag("is_admin")?,
            token_quota: profile.opt_int("token_quota")?,
            used_tokens,
        }))
    }

    pub(super) async fn set_admin_flag(&self, email: &str, is_admin: bool) -> StoreResult<bool> {
        let Some(guard) = self.get(key(item::email_pk(email), EMAIL_SK)).await? else {
            return Ok(false);
        };
        let user_id = Read(&guard).int("user_id")?;
        let values = attributes([(":admin", AttributeValue::Bool(is_admin))]);
        self.update_profile(user_id, "SET is_admin = :admin", Some(values))
            .await
    }

    pub(super) async fn set_quota(&self, user_id: i64, quota: Option<i64>) -> StoreResult<bool> {
        match quota {
            Some(quota) => {
                let values = attributes([(":quota", item::n(quota))]);
                self.update_profile(user_id, "SET token_quota = :quota", Some(values))
                    .await
            }
            None => {
                self.update_profile(user_id, "REMOVE token_quota", None)
                    .await
            }
        }
    }

    /// Changes an existing profile; false when there is none.
    async fn update_profile(
        &self,
        user_id: i64,
        expression: &str,
        values: Option<Item>,
    ) -> StoreResult<bool> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(item::user_pk(user_id), item::PROFILE)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(values)
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(classify(err)),
        }
    }

    /// A page of the directory, then each listed user's own partition.
    pub(super) async fn overviews(
        &self,
        month: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<UserOverview>> {
        let offset = usize::try_from(offset).unwrap_or(0);
        let limit = usize::try_from(limit).unwrap_or(0);
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(item::DIRECTORY_PK));
        let listed = self.query_all(query, Some(offset + limit)).await?;
        let ids = listed
            .iter()
            .skip(offset)
            .map(|entry| Read(entry).int("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let found: Vec<Option<UserOverview>> = futures::stream::iter(ids)
            .map(|user_id| self.overview(user_id, month))
            .buffered(OVERVIEWS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// One query over the user's partition: the profile, every session's
    /// `message_count` (not their bodies) and the usage items.
    pub(super) async fn overview(
        &self,
        user_id: i64,
        month: &str,
    ) -> StoreResult<Option<UserOverview>> {
        const PROJECTED: [&str; 10] = [
            "sk",
            "id",
            "email",
            "created_at",
            "is_admin",
            "token_quota",
            "message_count",
            "prompt_tokens",
            "completion_tokens",
            "requests",
        ];
        // Every name through a placeholder: some are DynamoDB reserved words.
        let mut query = self
            .client
            .query()
            .key_condition_expression("#a0 = :pk")
            .expression_attribute_names("#a0", "pk")
            .expression_attribute_values(":pk", s(item::user_pk(user_id)));
        let mut projection = Vec::new();
        for (index, name) in PROJECTED.iter().enumerate() {
            let placeholder = format!("#p{index}");
            query = query.expression_attribute_names(&placeholder, *name);
            projection.push(placeholder);
        }
        let items = self
            .query_all(query.projection_expression(projection.join(", ")), None)
            .await?;
        let month_usage = item::usage_sk(month, "");
        let mut profile = None;
        let (mut sessions, mut messages) = (0, 0);
        let (mut prompt_tokens, mut completion_tokens, mut requests) = (0, 0, 0);
        for entry in &items {
            let entry = Read(entry);
            let sk = entry.str("sk")?;
            if sk == item::PROFILE {
                profile = Some((
                    entry.user()?,
                    entry.flag("is_admin")?,
                    entry.opt_int("token_quota")?,
                ));
            } else if sk.starts_with(item::SESSION_SK_PREFIX) {
                sessions += 1;
                messages += entry.int("message_count")?;
            } else if sk.starts_with(&month_usage) {
                prompt_tokens += entry.int("prompt_tokens")?;
                completion_tokens += entry.int("completion_tokens")?;
                requests += entry.int("requests")?;
            }
        }
        let Some((user, is_admin, token_quota)) = profile else {
            return Ok(None);
        };
        Ok(Some(UserOverview {
            user,
            is_admin,
            token_quota,
            sessions,
            messages,
            prompt_tokens,
            completion_tokens,
            requests,
        }))
    }

    pub(super) async fn directory_size(&self) -> StoreResult<i64> {
        let mut count = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(item::DIRECTORY_PK))
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            count += i64::from(page.count);
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(count),
            }
        }
    }

    pub(super) async fn month_of_days(&self, month: &str) -> StoreResult<Vec<DailyUsage>> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(item::daily_pk(month)));
        // The sort key orders them by day, then user, then model.
        self.query_all(query, None)
            .await?
            .iter()
            .map(|entry| Read(entry).daily())
            .collect()
    }
}
