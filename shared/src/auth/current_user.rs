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
                state.jwt.verify(token).map_err(|reason| {
                    tracing::debug!(%reason, "rejected access token");
                    ApiError::Unauthorized
                })?
            }
        };
        state
            .accounts
            .ensure_exists(id, state.store.as_ref())
            .await?;
        tracing::Span::current().record("user_id", id);
        Ok(Self { id })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
