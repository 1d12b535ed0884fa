//! The admin API's documents, built from what the store returns.

use serde::Serialize;
use time::{Date, Month};

use crate::{
    config::ModelPrice,
    store::{DailyUsage, UserOverview},
    usage::Totals,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsersPage {
    pub month: String,
    pub total_users: i64,
    pub users: Vec<UserRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// Promoted, or listed in `ADMIN_EMAILS`.
    pub is_admin: bool,
    pub sessions: i64,
    pub messages: i64,
    pub tokens_this_month: i64,
    pub requests_this_month: i64,
    /// The user's own quota, set by an administrator.
    pub token_quota: Option<i64>,
    /// What applies: the user's own, else `MONTHLY_TOKEN_QUOTA`; `null` is unlimited.
    pub effective_quota: Option<i64>,
}

/// `effective_quota`: what `chat::quota::effective` says applies to the user.
pub fn user_row(
    user: UserOverview,
    admin_emails: &[String],
    effective_quota: Option<i64>,
) -> UserRow {
    UserRow {
        is_admin: user.is_admin || admin_emails.contains(&user.user.email),
        id: user.user.id,
        email: user.user.email,
        created_at: user.user.created_at,
        sessions: user.sessions,
        messages: user.messages,
        tokens_this_month: user.prompt_tokens + user.completion_tokens,
        requests_this_month: user.requests,
        token_quota: user.token_quota,
        effective_quota,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageByDay {
    pub month: String,
    /// Every day of the month, in order, zeros included: what the chart draws.
    pub days: Vec<Day>,
    /// Each user who used anything, with the days they did.
    pub users: Vec<UserDays>,
    pub totals: MonthTotals,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Day {
    pub day: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDays {
    pub user_id: i64,
    pub days: Vec<Day>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MonthTotals {
    #[serde(flatten)]
    pub totals: Totals,
    pub active_users: usize,
}

/// `rows` as the store returns them: by day, then user, then model. `None`
/// when `month` is not a valid `YYYY-MM`.
pub fn usage_by_day(month: &str, rows: &[DailyUsage], prices: &[ModelPrice]) -> Option<UsageByDay> {
    let mut days: Vec<Day> = days_of(month)?
        .into_iter()
        .map(|day| Day {
            day,
            totals: Totals::zero(),
        })
        .collect();
    let mut users: Vec<UserDays> = Vec::new();
    let mut totals = Totals::zero();
    for row in rows {
        let figures = Totals::priced(
            &row.model,
            row.prompt_tokens,
            row.completion_tokens,
            row.requests,
            prices,
        );
        totals.add(&figures);
        if let Some(day) = days.iter_mut().find(|day| day.day == row.day) {
            day.totals.add(&figures);
        }
        let user = match users.iter().position(|user| user.user_id == row.user_id) {
            Some(index) => &mut users[index],
            None => {
                users.push(UserDays {
                    user_id: row.user_id,
                    days: Vec::new(),
                });
                users.last_mut()?
            }
        };
        match user.days.last_mut() {
            Some(day) if day.day == row.day => day.totals.add(&figures),
            _ => {
                let mut day_totals = Totals::zero();
                day_totals.add(&figures);
                user.days.push(Day {
                    day: row.day.clone(),
                    totals: day_totals,
                });
            }
        }
    }
    users.sort_by_key(|user| user.user_id);
    Some(UsageByDay {
        month: month.to_owned(),
        days,
        totals: MonthTotals {
            totals,
            active_users: users.len(),
        },
        users,
    })
}

/// `YYYY-MM-DD` for each day of a `YYYY-MM` month.
fn days_of(month: &str) -> Option<Vec<String>> {
    let (year, number) = month.split_once('-')?;
    if year.len() != 4 || number.len() != 2 {
        return None;
    }
    let month_of_year = Month::try_from(number.parse::<u8>().ok()?).ok()?;
    let first = Date::from_calendar_date(year.parse().ok()?, month_of_year, 1).ok()?;
    let length = first.month().length(first.year());
    Some(
        (1..=length)
            .map(|day| format!("{month}-{day:02}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, user_id: i64, model: &str, prompt: i64, completion: i64) -> DailyUsage {
        DailyUsage {
            day: day.into(),
            user_id,
            model: model.into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            requests: 1,
        }
    }

    #[test]
    fn a_month_has_every_day_and_per_user_days_add_up() {
        let rows = [
            row("2028-02-03", 2, "a", 10, 5),
            row("2028-02-03", 2, "b", 1, 1),
            row("2028-02-29", 1, "a", 100, 50),
        ];
        let prices = [ModelPrice {
            model: "a".into(),
            input_per_million: 1.0,
            output_per_million: 2.0,
        }];
        let report = usage_by_day("2028-02", &rows, &prices).unwrap();
        assert_eq!(report.days.len(), 29, "a leap February");
        assert_eq!(report.days[2].totals.total_tokens, 17);
        assert_eq!(report.days[28].totals.total_tokens, 150);
        assert_eq!(report.totals.totals.total_tokens, 167);
        assert_eq!(report.totals.active_users, 2);
        // Model b has no price, so neither has the month.
        assert_eq!(report.totals.totals.cost_usd, None);
        assert_eq!(report.users[0].user_id, 1);
        assert_eq!(report.users[1].days.len(), 1);
        assert_eq!(report.users[1].days[0].totals.requests, 2);
        for bad in ["2028-13", "2028-2", "28-02", "2028-02-01", "feb"] {
            assert!(usage_by_day(bad, &[], &[]).is_none(), "{bad}");
        }
    }
}
