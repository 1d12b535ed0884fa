//! The `CurrentUser` extractor: a route that takes one requires a valid bearer token.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use std::sync::Arc;

use super::JwtKeys;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: i64,
}

impl<S> FromRequestParts<S> for CurrentUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The rate limiter has already verified this request's token.
        if let Some(user) = parts.extensions.get::<Self>() {
            tracing::Span::current().record("user_id", user.id);
            return Ok(*user);
        }
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            tracing::debug!("missing or malformed Authorization header");
            ApiError::Unauthorized
        })?;
        let id = keys.verify(token).map_err(|reason| {
            tracing::debug!(%reason, "rejected access token");
            ApiError::Unauthorized
        })?;
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
