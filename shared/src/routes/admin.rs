//! /admin: the dashboard page (embedded, offline) and the admin API behind it.

use axum::{Json, extract::State, response::Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    admin::{self, Admin, UsageByDay, UserRow, UsersPage},
    chat::{month_of, quota},
    error::{ApiError, PROBLEM_JSON, Problem, Result},
    extract::{AppJson, AppPath, AppQuery},
    routes::pages,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(stylesheet))
        .routes(routes!(users))
        .routes(routes!(set_quota))
        .routes(routes!(usage))
}

const FORBIDDEN: &str = "`forbidden`: the caller is not an administrator.";

const MAX_PAGE: i64 = 1_000;

/// The page loads only its own script and stylesheet and talks only to this
/// origin; nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// The dashboard page. It signs in with the admin API's own tokens, so it
/// needs no credentials to load.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    operation_id = "admin_dashboard",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
)]
async fn page() -> Response {
    pages::asset(
        "text/html; charset=utf-8",
        include_bytes!("../admin/dashboard.html"),
        CONTENT_SECURITY_POLICY,
    )
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/admin/dashboard.js",
    tag = "admin",
    operation_id = "admin_dashboard_script",
    responses((status = 200, description = "The script.", content_type = "text/javascript", body = String)),
)]
async fn script() -> Response {
    pages::asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../admin/dashboard.js"),
        CONTENT_SECURITY_POLICY,
    )
}

/// The dashboard's stylesheet.
#[utoipa::path(
    get,
    path = "/admin/dashboard.css",
    tag = "admin",
    operation_id = "admin_dashboard_stylesheet",
    responses((status = 200, description = "The stylesheet.", content_type = "text/css", body = String)),
)]
async fn stylesheet() -> Response {
    pages::asset(
        "text/css; charset=utf-8",
        include_bytes!("../admin/dashboard.css"),
        CONTENT_SECURITY_POLICY,
    )
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsersQuery {
    /// 1 to 1,000 (default 100).
    #[serde(default = "default_page")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
    /// How many users to skip, by id (default 0).
    #[serde(default)]
    #[param(minimum = 0)]
    offset: i64,
    /// `YYYY-MM`, the current month by default.
    #[param(pattern = r"^\d{4}-(0[1-9]|1[0-2])$", example = "2026-11")]
    month: Option<String>,
}

fn default_page() -> i64 {
    100
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MonthQuery {
    /// `YYYY-MM`, the current month by default.
    #[param(pattern = r"^\d{4}-(0[1-9]|1[0-2])$", example = "2026-11")]
    month: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// Tokens per month, 0 or more; `null` returns the user to `MONTHLY_TOKEN_QUOTA`.
    #[schema(minimum = 0, example = 1000000)]
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

/// Every user with this month's usage and quota, by id.
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    operation_id = "admin_users",
    security(("bearer" = []), ("oauth2" = [])),
    params(UsersQuery),
    responses(
        (status = 200, description = "One page of users.", body = UsersPage),
        (status = 403, description = FORBIDDEN, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
    let effective_quota = quota::effective(user.token_quota, state);
    admin::user_row(user, &state.settings.auth.admin_emails, effective_quota)
}

/// Sets a user's monthly token quota, or returns them to the default.
#[utoipa::path(
    put,
    path = "/admin/users/{id}/quota",
    tag = "admin",
    operation_id = "admin_set_quota",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = i64, Path, description = "The user's id.")),
    request_body = inline(QuotaBody),
    responses(
        (status = 200, description = "The user as the dashboard lists them.", body = UserRow),
        (status = 403, description = FORBIDDEN, body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "`user_not_found`: no user with this id.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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

/// Tokens, requests and cost for each day of a month, in total and per user.
#[utoipa::path(
    get,
    path = "/admin/usage",
    tag = "admin",
    operation_id = "admin_usage",
    security(("bearer" = []), ("oauth2" = [])),
    params(MonthQuery),
    responses(
        (status = 200, description = "The month, day by day.", body = UsageByDay),
        (status = 403, description = FORBIDDEN, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
