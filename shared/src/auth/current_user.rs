//! The `CurrentUser` extractor: a route that takes one requires a valid
//! bearer token for an account that exists.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: i64,
}

/// A token the rate limiter has already verified, so it is verified once.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken(pub i64);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = match parts.extensions.get::<VerifiedToken>() {
            Some(VerifiedToken(id)) => *id,
            None => {
                let token = bearer_token(&parts.headers).ok_or_else(|| {
                    tracing::debug!("missing or malformed Authorization header");
                    ApiError::Unauthorized
                })?;
                verify(state, token)?
            }
        };
        Self::existing(state, id).await
    }
}

impl CurrentUser {
    /// The account a verified token names, if it still exists.
    async fn existing(state: &AppState, id: i64) -> Result<Self, ApiError> {
        state
            .accounts
            .ensure_exists(id, state.store.as_ref())
            .await?;
        tracing::Span::current().record("user_id", id);
        Ok(Self { id })
    }
}

fn verify(state: &AppState, token: &str) -> Result<i64, ApiError> {
    state.jwt.verify(token).map_err(|reason| {
        tracing::debug!(%reason, "rejected access token");
        ApiError::Unauthorized
    })
}

/// The user of a route a browser's `EventSource` opens. It cannot send
/// headers, so the access token may come as `?access_token=` instead of
/// `Authorization: Bearer` (which wins when both are sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSourceUser(pub CurrentUser);

#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

impl FromRequestParts<AppState> for EventSourceUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let in_query = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|query| query.0.access_token);
        let has_header = parts.extensions.get::<VerifiedToken>().is_some()
            || parts.headers.contains_key(header::AUTHORIZATION);
        match in_query {
            Some(token) if !has_header => {
                let id = verify(state, &token)?;
                CurrentUser::existing(state, id).await.map(Self)
            }
            _ => CurrentUser::from_request_parts(parts, state)
                .await
                .map(Self),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
