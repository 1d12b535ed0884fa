//! The events of a chat stream: what each carries, how it is framed as SSE,
//! and how the OpenAPI document describes them.

use axum::response::sse::Event;
use utoipa::{
    PartialSchema as _, ToSchema,
    openapi::{
        OneOfBuilder, Ref, RefOr, Schema,
        schema::{ObjectBuilder, Type},
    },
};

use crate::chat::WireEvent;
pub(super) use crate::chat::wire::{StreamDelta, StreamDone, StreamStart};

/// One event as SSE: its name, its JSON, and an `id` of `GENERATION:SEQUENCE`
/// that `Last-Event-ID` hands back on a reconnect. The JSON is one line, so
/// content with newlines survives the SSE framing.
pub(super) fn to_sse(generation_id: &str, sequence: usize, event: &WireEvent) -> Event {
    Event::default()
        .event(event.kind.as_str())
        .data(&*event.data)
        .id(format!("{generation_id}:{sequence}"))
}

/// The stream's events as OpenAPI 3.1 describes an event stream: each event
/// an object whose `data` is a string, here JSON of the schema named.
pub(super) struct StreamEvent;

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
                    "id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("`GENERATION:SEQUENCE`, for `Last-Event-ID`.")),
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
