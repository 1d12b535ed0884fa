//! OpenAI's Chat Completions API, which most compatible servers (Ollama, vLLM,
//! llama.cpp's server, LiteLLM) also speak.

use async_trait::async_trait;
use eventsource_stream::Event;
use reqwest::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ChatRequest, Chunk, Completion, Provider, ProviderError, ProviderStream, SentTurn, Usage,
    alternating, http, until_first_token,
};
use crate::config::OpenAiSettings;

pub struct OpenAiProvider {
    client: reqwest::Client,
    /// Parsed once: reqwest would parse a string on every request.
    url: reqwest::Url,
    api_key: Option<SecretString>,
    model: String,
}

/// A Chat Completions request, borrowing the chat request's text.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<SentTurn<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage::new(usage.prompt_tokens, usage.completion_tokens)
    }
}

#[derive(Deserialize)]
struct WireCompletion {
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    /// Absent on some proxies' content-filter chunks.
    #[serde(default)]
    delta: WireDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    content: Option<String>,
}

impl OpenAiProvider {
    pub fn new(settings: &OpenAiSettings, client: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            url: http::endpoint(&settings.base_url, "/chat/completions")?,
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
        })
    }

    /// The request body: the system prompt is the first message.
    fn body(request: &ChatRequest, stream: bool) -> WireRequest<'_> {
        let system = request.system.as_deref().map(|system| SentTurn {
            role: "system",
            content: system.into(),
        });
        WireRequest {
            model: &request.model,
            messages: system
                .into_iter()
                .chain(alternating(&request.turns))
                .collect(),
            stream,
            // Without this, OpenAI sends no usage on streams.
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }

    async fn send(&self, body: &WireRequest<'_>) -> Result<reqwest::Response, ProviderError> {
        let mut request = self.client.post(self.url.clone()).json(body);
        if let Some(key) = &self.api_key {
            let bearer = format!("Bearer {}", key.expose_secret());
            request = request.header(
                AUTHORIZATION,
                http::secret_header(&bearer, "OPENAI_API_KEY")?,
            );
        }
        http::send("OpenAI", request, self.api_key.as_ref()).await
    }
}

/// One `data:` line of a Chat Completions stream.
fn parse_event(event: Event) -> http::Step {
    let mut step = http::Step::default();
    if event.data.trim() == "[DONE]" {
        step.finished = true;
        return step;
    }
    let chunk: WireChunk = match serde_json::from_str(&event.data) {
        Ok(chunk) => chunk,
        Err(err) => {
            step.error = Some(ProviderError::unavailable(format!(
                "an unreadable OpenAI stream chunk: {err}"
            )));
            return step;
        }
    };
    if let Some(error) = chunk.error {
        step.error = Some(ProviderError::unavailable(format!(
            "OpenAI stream error: {error}"
        )));
        return step;
    }
    for choice in chunk.choices {
        if let Some(content) = choice.delta.content.filter(|content| !content.is_empty()) {
            step.chunks.push(Chunk::Delta(content));
        }
        // Some servers (older llama.cpp) close the stream after this without [DONE].
        step.may_end |= choice.finish_reason.is_some();
    }
    if let Some(usage) = chunk.usage {
        step.chunks.push(Chunk::Usage(usage.into()));
    }
    step
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn default_model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let response = self.send(&Self::body(request, false)).await?;
        let completion: WireCompletion = response.json().await.map_err(|err| {
            ProviderError::unavailable(format!("an unreadable OpenAI answer: {err}"))
        })?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .unwrap_or_default();
        Ok(Completion {
            content,
            usage: completion.usage.map(Usage::from),
            model: request.model.clone(),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        let response = self.send(&Self::body(request, true)).await?;
        let chunks = http::sse_chunks("OpenAI", response, parse_event);
        Ok(ProviderStream {
            model: request.model.clone(),
            chunks: until_first_token(chunks).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{llm::Turn, store::Role};

    #[test]
    fn the_system_prompt_leads_the_messages() {
        let request = ChatRequest {
            model: "gpt-4o-mini".into(),
            system: Some("Be brief.".into()),
            turns: vec![
                Turn {
                    role: Role::User,
                    content: "Hi".into(),
                },
                Turn {
                    role: Role::Assistant,
                    content: "Hello".into(),
                },
                Turn {
                    role: Role::User,
                    content: "Bye".into(),
                },
            ],
            deadline: None,
        };
        let body = serde_json::to_value(OpenAiProvider::body(&request, true)).unwrap();
        assert_eq!(
            body["messages"][0],
            json!({ "role": "system", "content": "Be brief." })
        );
        assert_eq!(body["messages"].as_array().unwrap().len(), 4);
        assert_eq!(body["stream_options"]["include_usage"], true);
        let body = serde_json::to_value(OpenAiProvider::body(&request, false)).unwrap();
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none());
    }
}
