//! One Router per endpoint group. The server merges them all; each Lambda
//! function serves one, so both run exactly the same handlers.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod chat_stream;
pub mod health;
pub mod sessions;
pub mod usage;

use axum::Router;

use crate::state::AppState;

/// Every route, as the all-in-one server serves them.
pub fn all() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(sessions::router())
        .merge(chat::router())
        .merge(chat_stream::router())
        .merge(usage::router())
        .merge(health::router())
        .merge(admin::router())
}
