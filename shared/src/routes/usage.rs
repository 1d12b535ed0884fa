//! GET /usage: the caller's tokens, requests and estimated cost per month.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::CurrentUser,
    chat::{month_of, quota},
    error::{ApiError, Result},
    state::AppState,
    usage::{self, Quota, UsageReport},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show))
}

/// The caller's tokens, requests and estimated cost per month and model, with
/// this month's quota.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "usage",
    operation_id = "usage",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "Newest month first.", body = UsageReport)),
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn show(State(state): State<AppState>, user: CurrentUser) -> Result<Json<UsageReport>> {
    let rows = state.store.monthly_usage(user.id).await?;
    let current = month_of(time::OffsetDateTime::now_utc());
    let standing = state
        .store
        .standing(user.id, &current)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let quota = Quota::new(
        quota::effective(standing.token_quota, &state),
        standing.used_tokens,
    );
    Ok(Json(usage::report(
        &rows,
        &state.settings.llm.prices,
        &current,
        quota,
    )))
}
