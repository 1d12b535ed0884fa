//! POST /chat/stream: the same exchange as POST /chat, answered as
//! Server-Sent Events. On Lambda it is its own function, behind a function URL
//! that streams (API Gateway would buffer the whole answer).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderName, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{
    PartialSchema as _, ToSchema,
    openapi::{
        OneOfBuilder, Ref, RefOr, Schema,
        schema::{ObjectBuilder, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::chat::{ChatBody, ChatProblems};
use crate::{
    auth::CurrentUser,
    chat::{self, GenerationEvent},
    error::Result,
    extract::AppJson,
    llm::Usage,
    state::AppState,
    store::Message,
};

/// Proxies close idle connections; a comment this often keeps a slow answer alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_stream))
}

/// `event: start`, first: the question is stored.
#[derive(Serialize, ToSchema)]
struct StreamStart {
    session_id: i64,
    user_message: Message,
}

/// `event: delta`, any number: the next piece of the answer.
#[derive(Serialize, ToSchema)]
struct StreamDelta {
    content: String,
}

/// `event: done`, last on success: the stored answer and its tokens.
#[derive(Serialize, ToSchema)]
struct StreamDone {
    message: Message,
    usage: Usage,
}

/// The stream's events as OpenAPI 3.1 describes an event stream: each event
/// an object whose `data` is a string, here JSON of the schema named.
struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let events = [
            ("start", "StreamStart"),
            ("delta", "StreamDelta"),
            ("done", "StreamDone"),
            // Last on failure: a problem, as a failed POST /chat would answer
            // it; what arrived so far is stored as an incomplete answer.
            ("error", "Problem"),
        ];
        let one_of = events.into_iter().map(|(name, data)| {
            ObjectBuilder::new()
                .title(Some(name))
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/json")
                        .content_schema(Some(Ref::from_schema_name(data))),
                )
                .required("event")
                .required("data")
        });
        let one_of = one_of.fold(OneOfBuilder::new(), OneOfBuilder::item);
        RefOr::T(Schema::OneOf(
            one_of
                .description(Some(
                    "One Server-Sent Event: `event` names it, `data` is JSON of its schema.",
                ))
                .build(),
        ))
    }
}

impl ToSchema for StreamEvent {
    fn name() -> std::borrow::Cow<'static, str> {
        "ChatStreamEvent".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.extend([
            (StreamStart::name().into(), StreamStart::schema()),
            (StreamDelta::name().into(), StreamDelta::schema()),
            (StreamDone::name().into(), StreamDone::schema()),
        ]);
        StreamStart::schemas(schemas);
        StreamDone::schemas(schemas);
    }
}

/// Asks a question; the answer arrives as Server-Sent Events while it is
/// generated.
///
/// Each event's `data` is one JSON document, of the schema its name says
/// (`ChatStreamEvent`): `start`, then `delta`s, then `done` or `error`. Comments
/// (`: keep-alive`) keep idle connections open. Errors found before the stream
/// starts (validation, unknown session, quota) are ordinary problem responses.
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
    let start = event(
        "start",
        &StreamStart {
            session_id: exchange.session_id,
            user_message: exchange.user_message.clone(),
        },
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
        GenerationEvent::Delta(content) => event("delta", &StreamDelta { content }),
        GenerationEvent::Done { message, usage } => event("done", &StreamDone { message, usage }),
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
