//! POST /chat/stream: the same exchange as POST /chat, answered as
//! Server-Sent Events while it is generated; GET /chat/stream/{generation_id}
//! to reconnect to (or follow) a generation; POST .../stop to end it early.
//! On Lambda they are their own function, behind a function URL that streams
//! (API Gateway would buffer the whole answer).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
};
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    chat::{ChatBody, ChatProblems},
    stream_events::{StreamDone, StreamEvent, to_sse},
};
use crate::{
    auth::{CurrentUser, EventSourceUser},
    chat::{self, Found, Kind, live::Events},
    error::{ApiError, PROBLEM_JSON, Problem, Result},
    extract::{AppJson, AppPath, AppQuery},
    state::AppState,
};

/// Proxies close idle connections; a comment this often keeps a slow answer alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const NOT_FOUND: &str = "`generation_not_found`: no generation with this id is running, or \
    ended less than 5 minutes ago, for the caller (another user's is the same 404). \
    Without `REDIS_URL` only the instance running a generation knows it.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_stream))
        .routes(routes!(follow))
        .routes(routes!(stop))
}

/// Asks a question; the answer arrives as Server-Sent Events while it is
/// generated.
///
/// Each event's `data` is one JSON document, of the schema its name says
/// (`ChatStreamEvent`): `start` (with the `generation_id`), then `delta`s,
/// then `done` or `error`. Each event's `id` is `GENERATION:SEQUENCE`, so a
/// client that loses the connection reconnects with GET
/// /chat/stream/{generation_id} and `Last-Event-ID`. Comments (`: keep-alive`)
/// keep idle connections open. Errors found before the stream starts
/// (validation, unknown session, quota) are ordinary problem responses.
#[utoipa::path(
    post,
    path = "/chat/stream",
    tag = "chat",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = ChatBody,
    responses(
        (status = 200, description = "`text/event-stream`: `start`, `delta`..., then `done` or `error`.",
            content_type = "text/event-stream", body = StreamEvent),
        ChatProblems,
    ),
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn chat_stream(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<ChatBody>,
) -> Result<Response> {
    let input = body.parse(&state)?;
    let exchange = chat::begin(&state, user.id, input).await?;
    let generation = state.live.start(user.id, exchange.session_id).await;
    // Following before the generation starts, so it never runs unfollowed.
    let events = generation.follow(0).boxed();
    let started = chat::spawn_generation(state.clone(), exchange, generation.clone());
    match started.await {
        Ok(Ok(())) => Ok(sse(&generation.id, events)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::Internal(anyhow::anyhow!(
            "the generation ended before it started"
        ))),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FollowQuery {
    /// Replay only the events after this sequence number (the part after the
    /// `:` of an event's `id`). `Last-Event-ID`, when sent, wins.
    #[param(minimum = 0)]
    after: Option<usize>,
    /// The access token, for a browser's `EventSource`, which cannot send an
    /// `Authorization` header.
    #[allow(dead_code)] // Read by `EventSourceUser`; listed so the query accepts it.
    access_token: Option<String>,
}

/// Reconnects to a generation, or follows it from another client: replays
/// the events after `Last-Event-ID` (or `after`; all of them without either),
/// then follows live until `done` or `error`. A generation that has ended is
/// replayed and the stream ends; it can be replayed for 5 minutes.
///
/// A browser's `EventSource` reconnects by itself:
/// `new EventSource("/chat/stream/ID?access_token=TOKEN")`.
#[utoipa::path(
    get,
    path = "/chat/stream/{generation_id}",
    tag = "chat",
    security(("bearer" = []), ("oauth2" = [])),
    params(
        ("generation_id" = String, Path, description = "From the `start` event."),
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received (`GENERATION:SEQUENCE`)."),
        FollowQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: the events after the one named, then the live ones.",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
#[tracing::instrument(skip_all, fields(user_id = user.0.id))]
async fn follow(
    State(state): State<AppState>,
    user: EventSourceUser,
    AppPath(generation_id): AppPath<String>,
    AppQuery(query): AppQuery<FollowQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let generation = owned(&state, user.0, &generation_id).await?;
    let after = match headers.get("last-event-id") {
        Some(last) => sequence_of(last, generation.id())?,
        None => query.after.unwrap_or(0),
    };
    let events = generation
        .follow(after)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(sse(&generation_id, events))
}

/// Stops a generation: the provider call is cancelled, what was generated is
/// stored (status `stopped`) and counted, and every client following it gets
/// `done`. Answers that `done` event's data; stopping an ended generation
/// answers how it ended.
#[utoipa::path(
    post,
    path = "/chat/stream/{generation_id}/stop",
    tag = "chat",
    security(("bearer" = []), ("oauth2" = [])),
    params(("generation_id" = String, Path, description = "From the `start` event.")),
    responses(
        (status = 200, description = "The stored answer, as far as it got, and its tokens.", body = StreamDone),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
        (status = 502, description = "The generation had already failed: its `error` event's problem.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn stop(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(generation_id): AppPath<String>,
) -> Result<Response> {
    let generation = owned(&state, user, &generation_id).await?;
    let last = generation
        .stop()
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or(ApiError::GenerationNotFound)?;
    // The last event's data is already the body: `StreamDone`, or a problem.
    let (status, content_type) = match last.kind {
        Kind::Done => (StatusCode::OK, "application/json"),
        Kind::Error => (problem_status(&last.data), PROBLEM_JSON),
        other => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "a generation ended with {other:?}"
            )));
        }
    };
    Ok((
        status,
        [(header::CONTENT_TYPE, content_type)],
        last.data.to_string(),
    )
        .into_response())
}

/// The status a problem's JSON names.
fn problem_status(data: &str) -> StatusCode {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|problem| problem["status"].as_u64())
        .and_then(|status| StatusCode::from_u16(u16::try_from(status).ok()?).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The caller's generation; another user's is the same 404 as a missing one.
async fn owned(state: &AppState, user: CurrentUser, id: &str) -> Result<Found> {
    state
        .live
        .find(id)
        .await
        .map_err(ApiError::StoreUnavailable)?
        .filter(|generation| generation.user_id() == user.id)
        .ok_or(ApiError::GenerationNotFound)
}

/// The sequence number in a `Last-Event-ID` of `GENERATION:SEQUENCE`.
fn sequence_of(last_event_id: &HeaderValue, generation_id: &str) -> Result<usize> {
    last_event_id
        .to_str()
        .ok()
        .and_then(|value| value.split_once(':'))
        .filter(|(generation, _)| *generation == generation_id)
        .and_then(|(_, sequence)| sequence.parse().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "Last-Event-ID",
                "must be the id of an event of this generation (GENERATION:SEQUENCE)",
            )
        })
}

fn sse(generation_id: &str, events: Events) -> Response {
    let id = generation_id.to_owned();
    let events =
        events.map(move |(sequence, event)| Ok::<_, Infallible>(to_sse(&id, sequence, &event)));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive"))
        .into_response();
    // axum's Sse sets Cache-Control: no-cache; nginx and some proxies also
    // buffer responses unless told not to.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}
