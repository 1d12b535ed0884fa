//! /admin: the dashboard page (embedded, offline) and the admin API behind it.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde::Deserialize;

use crate::{
    admin::{self, Admin, UsageByDay, UserRow, UsersPage},
    chat::month_of,
    error::{ApiError, Result},
    extract::{AppJson, AppPath, AppQuery},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/dashboard.js", get(script))
        .route("/admin/dashboard.css", get(stylesheet))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}/quota", put(set_quota))
        .route("/admin/usage", get(usage))
}

const MAX_PAGE: i64 = 1_000;

/// The page loads only its own script and stylesheet and talks only to this
/// origin; nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../admin/dashboard.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../admin/dashboard.js"),
    )
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../admin/dashboard.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // A new release's page never runs against an old script.
        (header::CACHE_CONTROL, "no-cache"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let mut response = body.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    #[serde(default = "default_page")]
    limit: i64,
    #[serde(default)]
    offset: i64,
    month: Option<String>,
}

fn default_page() -> i64 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonthQuery {
    month: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// Tokens per month; `null` returns the user to `MONTHLY_TOKEN_QUOTA`.
    monthly_tokens: Option<i64>,
}

/// `YYYY-MM`, the current month by default.
fn month(requested: Option<String>) -> Result<String> {
    let month = requested.unwrap_or_else(|| month_of(time::OffsetDateTime::now_utc()));
    let valid = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4].bytes().all(|b| b.is_ascii_digit())
        && matches!(month[5..].parse::<u8>(), Ok(1..=12));
    if valid {
        Ok(month)
    } else {
        Err(ApiError::invalid("month", "must be a month as YYYY-MM"))
    }
}

#[tracing::instrument(skip_all, fields(admin = admin.id))]
async fn users(
    State(state): State<AppState>,
    admin: Admin,
    AppQuery(query): AppQuery<UsersQuery>,
) -> Result<Json<UsersPage>> {
    let month = month(query.month)?;
    if !(1..=MAX_PAGE).contains(&query.limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    if query.offset < 0 {
        return Err(ApiError::invalid("offset", "must not be negative"));
    }
    let (listed, total_users) = tokio::try_join!(
        state
            .store
            .user_overviews(&month, query.limit, query.offset),
        state.store.count_users(),
    )?;
    let users = listed.into_iter().map(|user| row(&state, user)).collect();
    Ok(Json(UsersPage {
        month,
        total_users,
        users,
    }))
}

fn row(state: &AppState, user: crate::store::UserOverview) -> UserRow {
    admin::user_row(
        user,
        &state.settings.auth.admin_emails,
        state.settings.limits.monthly_token_quota,
    )
}

#[tracing::instrument(skip_all, fields(admin = admin.id, user_id = id))]
async fn set_quota(
    State(state): State<AppState>,
    admin: Admin,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<QuotaBody>,
) -> Result<Json<UserRow>> {
    if body.monthly_tokens.is_some_and(|tokens| tokens < 0) {
        return Err(ApiError::invalid(
            "monthly_tokens",
            "must be 0 or more tokens, or null for the default",
        ));
    }
    if !state.store.set_token_quota(id, body.monthly_tokens).await? {
        return Err(ApiError::UserNotFound);
    }
    tracing::info!(quota = ?body.monthly_tokens, "quota set");
    let month = month_of(time::OffsetDateTime::now_utc());
    let user = state
        .store
        .user_overview(id, &month)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    Ok(Json(row(&state, user)))
}

#[tracing::instrument(skip_all, fields(admin = admin.id))]
async fn usage(
    State(state): State<AppState>,
    admin: Admin,
    AppQuery(query): AppQuery<MonthQuery>,
) -> Result<Json<UsageByDay>> {
    let month = month(query.month)?;
    let rows = state.store.daily_usage(&month).await?;
    admin::usage_by_day(&month, &rows, &state.settings.llm.prices)
        .map(Json)
        .ok_or_else(|| ApiError::invalid("month", "must be a month as YYYY-MM"))
}
