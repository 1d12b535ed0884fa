//! GET /health: is this instance able to serve? It answers only when its store does.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, PROBLEM_JSON, Problem},
    state::AppState,
};

/// A health check must answer quickly even when the database hangs.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// Only documented: the handler writes the same fields with `json!`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Healthy {
    #[schema(example = "ok")]
    status: String,
    /// This build's version.
    version: String,
    /// Each dependency checked, `ok`.
    #[schema(example = json!({"store": "ok"}))]
    checks: std::collections::BTreeMap<String, String>,
}

/// Whether this instance can serve: it answers 200 only when its store does.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses(
        (status = 200, description = "Serving.", body = Healthy),
        (status = 503, description = "`store_unavailable`, with `version` and `checks`.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
