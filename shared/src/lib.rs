//! chat-core: everything the chat-api binaries share. The server and each
//! Lambda function are a few lines around `state::AppState`, `routes` and `app`.

pub mod admin;
pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod extract;
pub mod function;
pub mod llm;
pub mod openapi;
pub mod rate_limit;
mod redis_connection;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;
