//! The `CurrentUser` extractor: a route that takes one requires a valid bearer token.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
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
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
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
