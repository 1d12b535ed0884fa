//! The middleware every deployment shares, in one place.

use std::time::Duration;

use axum::{
    BoxError, Router,
    body::{Body, Bytes, HttpBody},
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    error::{ApiError, PROBLEM_JSON, Problem},
    rate_limit,
    state::AppState,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps a group's routes (or all of them) with fallbacks, state and middleware.
pub fn build(routes: OpenApiRouter<AppState>, state: AppState) -> Router {
    let routes = Router::from(routes);
    let http = &state.settings.http;
    // Never `allow_credentials`: tokens travel in the Authorization header,
    // so no cookie-bearing request ever needs to cross origins (and `*` with
    // credentials is what browsers refuse and attackers want).
    let cors = (!http.cors_origins.is_empty()).then(|| {
        let origins = match http.cors_origins.as_slice() {
            [any] if any == "*" => AllowOrigin::any(),
            listed => AllowOrigin::list(listed.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([REQUEST_ID])
            .max_age(Duration::from_secs(3600))
    });
    let body_limit = http.body_limit_bytes;
    let timeout = http.request_timeout;

    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or(request.uri().path(), MatchedPath::as_str);
            tracing::info_span!(
                "request",
                method = %request.method(),
                route,
                request_id,
                user_id = tracing::field::Empty,
            )
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));

    routes
        .fallback(|request: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", request.method(), request.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| buffer_body(body_limit, request, next),
        ))
        .with_state(state)
        // Layers wrap what is above them: a request passes through the last one first.
        .layer(
            ServiceBuilder::new()
                // 1. Give every request an id (or keep the caller's), before it is logged.
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                // 2. One span per request, carrying that id.
                .layer(trace)
                // 3. Echo the id in the response, errors included.
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .option_layer(cors)
                // 4. Anything below that answers without a problem body gets one.
                .layer(axum::middleware::map_response(problem_for_bare_errors))
                // 5. A panic becomes an opaque 500, never a dropped connection.
                .layer(CatchPanicLayer::custom(panic_response))
                // 6. No handler may hold a connection forever (streams are exempt once started).
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    timeout,
                )),
        )
}

/// How much of an over-limit body is read and discarded before answering 413.
const DRAIN_FACTOR: usize = 8;

/// Reads the whole body before the handler runs, refusing it past `limit`.
///
/// An over-limit body is drained (up to `DRAIN_FACTOR` times the limit) before
/// the 413 goes out: closing a socket with unread data makes the kernel send a
/// reset, and the client would then lose the 413 and see a broken connection.
async fn buffer_body(limit: usize, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut buffered = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::MalformedBody("the request body could not be read".into())
                .into_response();
        };
        seen += chunk.len();
        if seen > limit.saturating_mul(DRAIN_FACTOR) {
            break;
        }
        if seen <= limit {
            buffered.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(buffered)))
        .await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a handler panicked");
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// Errors produced by middleware (a timeout) come without a body; give them
/// the same problem+json shape as every other error.
async fn problem_for_bare_errors<B>(response: Response<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response.map(Body::new);
    }
    let code = match status {
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        _ => "error",
    };
    let detail = status.canonical_reason().unwrap_or("error").to_owned();
    let (mut parts, _) = response.into_parts();
    let problem = Problem::new(status, code, detail).into_response();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(PROBLEM_JSON),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, problem.into_body())
}
