//! Administration: who is an administrator, and the figures the dashboard shows.

mod report;

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{auth::CurrentUser, chat::month_of, error::ApiError, state::AppState};

pub use report::{UsageByDay, UserRow, UsersPage, usage_by_day, user_row};

/// A route that takes an `Admin` answers 401 without a valid token and 403
/// unless the account is listed in `ADMIN_EMAILS` or was promoted by the CLI.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub id: i64,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        let month = month_of(time::OffsetDateTime::now_utc());
        let standing = state
            .store
            .standing(user.id, &month)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if standing.is_admin || state.settings.auth.admin_emails.contains(&standing.email) {
            Ok(Self { id: user.id })
        } else {
            tracing::info!(user_id = user.id, "refused a non-administrator");
            Err(ApiError::Forbidden)
        }
    }
}
