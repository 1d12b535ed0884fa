//! One router per endpoint group. The server merges them all; each Lambda
//! function serves one or two, so both run exactly the same handlers.
//!
//! Each group is an `OpenApiRouter` whose routes are added only through
//! `routes!`, which registers the handler and its documented operation
//! together: a route cannot be served without being in /openapi.json.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod chat_stream;
pub mod docs;
pub mod health;
mod pages;
pub mod sessions;
mod stream_events;
pub mod usage;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every route, as the all-in-one server serves them.
pub fn all() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(sessions::router())
        .merge(chat::router())
        .merge(chat_stream::router())
        .merge(usage::router())
        .merge(health::router())
        .merge(admin::router())
        .merge(docs::router())
}
