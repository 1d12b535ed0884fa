//! A generation's events as clients receive them: a kind (the SSE event name)
//! and one JSON document. Each event is serialized once, when published, and
//! the same text goes to every follower, here or (through Redis) elsewhere.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::GenerationEvent;
use crate::{llm::Usage, store::Message};

/// `event: start`, first: the question is stored and the generation has an id
/// to reconnect to.
#[derive(Serialize, ToSchema)]
pub struct StreamStart {
    generation_id: String,
    session_id: i64,
    user_message: Message,
}

/// `event: delta`, any number: the next piece of the answer.
#[derive(Serialize, ToSchema)]
pub struct StreamDelta {
    content: String,
}

/// `event: done`, last on success: the stored answer and its tokens.
#[derive(Serialize, ToSchema)]
pub struct StreamDone {
    message: Message,
    usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Delta,
    Done,
    Error,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Delta => "delta",
            Self::Done => "done",
            Self::Error => "error",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Start, Self::Delta, Self::Done, Self::Error]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

#[derive(Debug, Clone)]
pub struct WireEvent {
    pub kind: Kind,
    /// JSON of the kind's schema (`Problem` for `error`).
    pub data: Arc<str>,
}

impl WireEvent {
    /// Whether nothing can follow this event.
    pub fn is_last(&self) -> bool {
        matches!(self.kind, Kind::Done | Kind::Error)
    }
}

impl From<GenerationEvent> for WireEvent {
    fn from(event: GenerationEvent) -> Self {
        let (kind, data) = match event {
            GenerationEvent::Start {
                generation_id,
                session_id,
                user_message,
            } => (
                Kind::Start,
                serde_json::to_string(&StreamStart {
                    generation_id,
                    session_id,
                    user_message,
                }),
            ),
            GenerationEvent::Delta(content) => {
                (Kind::Delta, serde_json::to_string(&StreamDelta { content }))
            }
            GenerationEvent::Done { message, usage } => (
                Kind::Done,
                serde_json::to_string(&StreamDone { message, usage }),
            ),
            GenerationEvent::Error(problem) => (Kind::Error, serde_json::to_string(&problem)),
        };
        // These types serialize infallibly (no maps with non-string keys).
        let data = data.unwrap_or_else(|_| "{}".to_owned());
        Self {
            kind,
            data: data.into(),
        }
    }
}
