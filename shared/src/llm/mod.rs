//! Language-model providers behind one trait.
//!
//! A provider turns a `ChatRequest` (system prompt, history, model) into either
//! a whole `Completion` or a stream of `Chunk`s. Both report usage when the
//! upstream does; when it does not, the chat service estimates it with `tokens`.

mod mock;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::http::StatusCode;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::{
    config::{LlmSettings, ProviderKind},
    store::Role,
};

pub use mock::{MOCK_MODEL, MockProvider};

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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Delta(String),
    /// Reported usage; providers send it once, usually at the end.
    Usage(Usage),
}

pub type ChunkStream = BoxStream<'static, Result<Chunk, ProviderError>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered with a server error.
    #[error("the language model provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider is rate limiting or overloaded; worth retrying later.
    #[error("the language model provider is overloaded")]
    Overloaded { retry_after: Option<Duration> },
    #[error("the language model provider did not answer in time")]
    Timeout,
    /// The provider rejected our credentials: the operator's problem, not the user's.
    #[error("the language model provider rejected this server's credentials")]
    Misconfigured(String),
    /// A stream that had started broke off.
    #[error("the language model provider broke off mid-answer: {0}")]
    Interrupted(String),
}

impl ProviderError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) | Self::Misconfigured(_) | Self::Interrupted(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "provider_unavailable",
            Self::Overloaded { .. } => "provider_overloaded",
            Self::Timeout => "provider_timeout",
            Self::Misconfigured(_) => "provider_misconfigured",
            Self::Interrupted(_) => "provider_interrupted",
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The model used when neither the request nor the session names one.
    fn default_model(&self) -> &str;

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError>;

    /// Errors before the first chunk come back as `Err`; later ones inside the stream.
    async fn stream(&self, request: &ChatRequest) -> Result<ChunkStream, ProviderError>;
}

/// The provider `LLM_PROVIDER` names.
pub fn from_settings(settings: &LlmSettings) -> Arc<dyn Provider> {
    match settings.provider {
        ProviderKind::Mock => Arc::new(MockProvider::new(settings.mock.clone())),
    }
}
