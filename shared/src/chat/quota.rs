//! The monthly token quota, checked before anything is stored or sent upstream.

use time::{Date, Month, OffsetDateTime};

use crate::{
    error::{ApiError, Result},
    state::AppState,
    store::Standing,
};

/// The quota that applies: the user's own, else the deployment's; `None` is unlimited.
pub fn effective(own: Option<i64>, state: &AppState) -> Option<i64> {
    own.or(state.settings.limits.monthly_token_quota)
}

/// Refuses the exchange once the month's prompt and completion tokens have
/// reached the quota. One answer may overshoot it: its length is not known
/// until it has been generated.
pub fn ensure_within(state: &AppState, standing: &Standing, now: OffsetDateTime) -> Result<()> {
    let default = state.settings.limits.monthly_token_quota;
    match standing.quota(default) {
        Some(quota) if !standing.within(default) => Err(ApiError::QuotaExceeded {
            quota,
            used: standing.used_tokens,
            renews_in: until_next_month(now),
        }),
        _ => Ok(()),
    }
}

fn until_next_month(now: OffsetDateTime) -> std::time::Duration {
    let (year, month) = match now.month() {
        Month::December => (now.year() + 1, Month::January),
        month => (now.year(), month.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .map(|first| first.midnight().assume_utc() - now)
        .ok()
        .and_then(|left| left.try_into().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_quota_renews_at_the_start_of_the_next_utc_month() {
        let left = until_next_month(datetime!(2026-12-31 23:59:30 UTC));
        assert_eq!(left.as_secs(), 30);
        let left = until_next_month(datetime!(2026-11-01 00:00:00 UTC));
        assert_eq!(left.as_secs(), 30 * 86_400);
    }
}
