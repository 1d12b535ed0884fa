//! Language-model providers behind one trait.
//!
//! A provider turns a `ChatRequest` (system prompt, history, model) into either
//! a whole `Completion` or a `ProviderStream` of `Chunk`s. Both report usage when
//! the upstream does; when it does not, the chat service estimates it.
//!
//! `from_settings` assembles the configured provider: the real client, wrapped
//! in `Retrying` (backoff on 429/5xx before the first token) and, when a second
//! provider is configured, in `Fallback`.

mod anthropic;
mod fallback;
mod http;
mod mock;
mod o200k;
mod openai;
mod retry;
pub mod tokens;
mod vocabulary_layout;

use std::{borrow::Cow, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::http::StatusCode;
use futures::{StreamExt, stream, stream::BoxStream};
use serde::Serialize;

use crate::{
    config::{LlmSettings, ProviderKind},
    store::Role,
};

pub use anthropic::AnthropicProvider;
pub use fallback::Fallback;
pub use mock::{MOCK_MODEL, MockProvider};
pub use openai::OpenAiProvider;
pub use retry::Retrying;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    /// The session's system prompt, sent as the provider's system instruction.
    pub system: Option<String>,
    /// Oldest first; the last turn is the user's new message.
    pub turns: Vec<Turn>,
    /// When the caller stops waiting: retries that would end later are not made.
    pub deadline: Option<tokio::time::Instant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

impl Usage {
    pub fn new(prompt_tokens: i64, completion_tokens: i64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    /// What the provider reported; `None` when it reports nothing.
    pub usage: Option<Usage>,
    /// The model that answered (a fallback answers with its own).
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Delta(String),
    /// Reported usage; providers send it once, usually at the end.
    Usage(Usage),
}

pub type ChunkStream = BoxStream<'static, Result<Chunk, ProviderError>>;

/// A streaming answer whose first token has arrived (or that ended without one).
pub struct ProviderStream {
    pub model: String,
    pub chunks: ChunkStream,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Unreachable, or a server error (5xx): worth retrying.
    #[error("the language model provider is unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Rate limited (429) or overloaded (529): worth retrying later.
    #[error("the language model provider is overloaded")]
    Overloaded { retry_after: Option<Duration> },
    #[error("the language model provider did not answer in time")]
    Timeout,
    /// Our credentials or endpoint are wrong (401, 403, 404): the operator's problem.
    #[error("the language model provider rejected this server's configuration")]
    Misconfigured(String),
    /// The provider refused this request (another 4xx), e.g. a context too long.
    #[error("the language model provider refused the request: {0}")]
    Rejected(String),
    /// A stream broke off after its first token.
    #[error("the language model provider broke off mid-answer: {0}")]
    Interrupted(String),
}

impl ProviderError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable { .. }
            | Self::Misconfigured(_)
            | Self::Rejected(_)
            | Self::Interrupted(_) => StatusCode::BAD_GATEWAY,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "provider_unavailable",
            Self::Overloaded { .. } => "provider_overloaded",
            Self::Timeout => "provider_timeout",
            Self::Misconfigured(_) => "provider_misconfigured",
            Self::Rejected(_) => "provider_rejected",
            Self::Interrupted(_) => "provider_interrupted",
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Failures that a later attempt may not meet.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Overloaded { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::Overloaded { retry_after } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// What a failure becomes once tokens have reached the client: nothing can
    /// be retried any more, the answer was cut.
    fn after_first_token(self) -> Self {
        match self {
            Self::Timeout | Self::Interrupted(_) => self,
            other => Self::Interrupted(other.to_string()),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The model used when neither the request nor the session names one.
    fn default_model(&self) -> &str;

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError>;

    /// Resolves once the first token has arrived, so an `Err` always means that
    /// nothing reached the client: safe to retry or to fall back.
    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError>;
}

/// History as strict chat templates want it: roles alternate and the first turn
/// is the user's. Stored history need not be: a question whose answer failed is
/// followed by the next question, and an answer can be empty. Empty turns are
/// dropped, consecutive turns of one role joined, and anything before the first
/// user turn dropped.
pub fn alternating(turns: &[Turn]) -> Vec<SentTurn<'_>> {
    let mut result: Vec<SentTurn<'_>> = Vec::with_capacity(turns.len());
    let kept = turns
        .iter()
        .filter(|turn| !turn.content.trim().is_empty())
        .skip_while(|turn| turn.role != Role::User);
    for turn in kept {
        match result.last_mut() {
            Some(last) if last.role == turn.role.as_str() => {
                let joined = last.content.to_mut();
                joined.push_str("\n\n");
                joined.push_str(&turn.content);
            }
            _ => result.push(SentTurn {
                role: turn.role.as_str(),
                content: Cow::Borrowed(&turn.content),
            }),
        }
    }
    result
}

/// A turn as it is sent upstream, in the shape both OpenAI's and Anthropic's
/// messages take. It borrows the request's text (copied only where two turns
/// are joined), so a long history is not copied again for each body.
#[derive(Debug, Serialize)]
pub struct SentTurn<'a> {
    pub role: &'static str,
    pub content: Cow<'a, str>,
}

/// For functions that serve no chat route: nothing to build at a cold start.
pub struct NoProvider;

#[async_trait]
impl Provider for NoProvider {
    fn default_model(&self) -> &str {
        "none"
    }

    async fn complete(&self, _: &ChatRequest) -> Result<Completion, ProviderError> {
        Err(ProviderError::Misconfigured(
            "this function serves no chat routes".into(),
        ))
    }

    async fn stream(&self, _: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        Err(ProviderError::Misconfigured(
            "this function serves no chat routes".into(),
        ))
    }
}

/// Reads `chunks` up to its first text delta. A failure before it is returned
/// as the error; failures after it arrive in the stream as interruptions.
pub async fn until_first_token(mut chunks: ChunkStream) -> Result<ChunkStream, ProviderError> {
    let mut read = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let is_delta = matches!(chunk, Chunk::Delta(_));
        read.push(Ok(chunk));
        if is_delta {
            break;
        }
    }
    let rest = chunks.map(|chunk| chunk.map_err(ProviderError::after_first_token));
    Ok(stream::iter(read).chain(rest).boxed())
}

/// The provider `LLM_PROVIDER` names, with retries and the optional fallback.
pub fn from_settings(settings: &LlmSettings) -> anyhow::Result<Arc<dyn Provider>> {
    let primary = build(settings, settings.provider)?;
    Ok(match settings.fallback {
        None => primary,
        Some(kind) => Arc::new(Fallback::new(primary, build(settings, kind)?)),
    })
}

fn build(settings: &LlmSettings, kind: ProviderKind) -> anyhow::Result<Arc<dyn Provider>> {
    let client = || http::client(settings);
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Mock => return Ok(Arc::new(MockProvider::new(settings.mock.clone()))),
        ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(&settings.openai, client()?)?),
        ProviderKind::Anthropic => {
            Arc::new(AnthropicProvider::new(&settings.anthropic, client()?)?)
        }
    };
    Ok(Arc::new(Retrying::new(provider, settings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, content: &str) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn history_alternates_and_starts_with_the_user() {
        let turns = [
            turn(Role::Assistant, "orphaned answer"),
            turn(Role::User, "first question, whose answer failed"),
            turn(Role::User, "second question"),
            turn(Role::Assistant, "answer"),
            turn(Role::User, "third"),
            turn(Role::Assistant, "  "),
            turn(Role::User, "fourth, after an empty answer"),
        ];
        let result = alternating(&turns);
        let roles: Vec<&str> = result.iter().map(|turn| turn.role).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(
            result[0].content,
            "first question, whose answer failed\n\nsecond question"
        );
        assert_eq!(result[2].content, "third\n\nfourth, after an empty answer");
    }
}
