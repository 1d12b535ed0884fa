//! GET /openapi.json and GET /docs: the document and Swagger UI over it, the
//! UI's files embedded in the binary (no CDN: the page works offline).
//!
//! The all-in-one server serves them beside every route; on Lambda, the admin
//! function does (its other pages are HTML too, and it is rarely called, so the
//! 1.9 MB of Swagger UI weighs on no hot function).

use axum::{http::header, response::IntoResponse, response::Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{openapi, routes::pages, state::AppState};

/// Swagger UI 5 (swagger-ui-dist, Apache-2.0): its bundle, its stylesheet.
const BUNDLE: &[u8] = include_bytes!("../docs/swagger-ui/swagger-ui-bundle.js");
const STYLESHEET: &[u8] = include_bytes!("../docs/swagger-ui/swagger-ui.css");

/// The page loads only its own files and talks only to this origin. Swagger
/// UI's stylesheet draws its icons from `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(document))
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(bundle))
        .routes(routes!(stylesheet))
}

/// This document: OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", body = Object)),
)]
async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
        .into_response()
}

/// Interactive docs (Swagger UI) for this document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "service",
    operation_id = "docs",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
)]
async fn page() -> Response {
    pages::asset(
        "text/html; charset=utf-8",
        include_bytes!("../docs/index.html"),
        CONTENT_SECURITY_POLICY,
    )
}

/// The docs page's own script: starts Swagger UI on /openapi.json.
#[utoipa::path(
    get,
    path = "/docs/docs.js",
    tag = "service",
    operation_id = "docs_script",
    responses((status = 200, description = "The script.", content_type = "text/javascript", body = String)),
)]
async fn script() -> Response {
    pages::asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../docs/docs.js"),
        CONTENT_SECURITY_POLICY,
    )
}

/// Swagger UI's script.
#[utoipa::path(
    get,
    path = "/docs/swagger-ui-bundle.js",
    tag = "service",
    operation_id = "docs_swagger_ui_script",
    responses((status = 200, description = "The script.", content_type = "text/javascript", body = String)),
)]
async fn bundle() -> Response {
    pages::asset(
        "text/javascript; charset=utf-8",
        BUNDLE,
        CONTENT_SECURITY_POLICY,
    )
}

/// Swagger UI's stylesheet.
#[utoipa::path(
    get,
    path = "/docs/swagger-ui.css",
    tag = "service",
    operation_id = "docs_swagger_ui_stylesheet",
    responses((status = 200, description = "The stylesheet.", content_type = "text/css", body = String)),
)]
async fn stylesheet() -> Response {
    pages::asset(
        "text/css; charset=utf-8",
        STYLESHEET,
        CONTENT_SECURITY_POLICY,
    )
}
