//! POST /chat/stream: the same exchange as POST /chat, answered as
//! Server-Sent Events. On Lambda it is its own function, behind a function URL
//! that streams (API Gateway would buffer the whole answer).

use std::{convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderName, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::post,
};
use futures::{StreamExt, stream};
use serde::Serialize;
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use super::chat::ChatBody;
use crate::{
    auth::CurrentUser,
    chat::{self, GenerationEvent},
    error::Result,
    extract::AppJson,
    state::AppState,
};

/// Proxies close idle connections; a comment this often keeps a slow answer alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new().route("/chat/stream", post(chat_stream))
}

/// Errors found before the stream starts (validation, unknown session) are
/// ordinary problem responses; after `start`, failures arrive as an `error` event.
#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn chat_stream(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<ChatBody>,
) -> Result<Response> {
    let input = body.parse(&state)?;
    let exchange = chat::begin(&state, user.id, input).await?;
    let start = event(
        "start",
        &json!({ "session_id": exchange.session_id, "user_message": exchange.user_message }),
    );
    let generation = chat::spawn_generation(state.clone(), exchange);
    let events =
        stream::once(async move { start }).chain(ReceiverStream::new(generation).map(to_event));
    let mut response = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive"))
        .into_response();
    // axum's Sse sets Cache-Control: no-cache; nginx and some proxies also
    // buffer responses unless told not to.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn to_event(generation: GenerationEvent) -> Event {
    match generation {
        GenerationEvent::Delta(content) => event("delta", &json!({ "content": content })),
        GenerationEvent::Done { message, usage } => {
            event("done", &json!({ "message": message, "usage": usage }))
        }
        GenerationEvent::Error(problem) => event("error", &problem),
    }
}

/// Every event carries JSON, so content with newlines survives the SSE framing.
fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error").data("{}"))
}
