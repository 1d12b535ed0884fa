//! GET /usage: the caller's tokens, requests and estimated cost per month.

use axum::{Json, Router, extract::State, routing::get};

use crate::{
    auth::CurrentUser,
    chat::{month_of, quota},
    error::{ApiError, Result},
    state::AppState,
    usage::{self, Quota, UsageReport},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/usage", get(show))
}

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
