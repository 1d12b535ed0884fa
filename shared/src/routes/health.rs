//! GET /health: is this instance able to serve? It answers only when its store does.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::{
    error::{ApiError, Problem},
    state::AppState,
};

/// A health check must answer quickly even when the database hangs.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<AppState>) -> axum::response::Response {
    let checked = tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.ping()).await;
    let failure = match checked {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(ApiError::from(err).to_string()),
        Err(_) => Some("the store did not answer within 3 s".to_owned()),
    };
    let version = env!("CARGO_PKG_VERSION");
    match failure {
        None => Json(json!({
            "status": "ok",
            "version": version,
            "checks": { "store": "ok" },
        }))
        .into_response(),
        Some(reason) => {
            tracing::error!(%reason, "health check failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is not answering",
            )
            .with("version", version)
            .with("checks", json!({ "store": "unavailable" }))
            .into_response()
        }
    }
}
