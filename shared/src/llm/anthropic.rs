//! Anthropic's Messages API.

use async_trait::async_trait;
use eventsource_stream::Event;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ChatRequest, Chunk, Completion, Provider, ProviderError, ProviderStream, SentTurn, Usage,
    alternating, http, until_first_token,
};
use crate::config::AnthropicSettings;

/// The API version this client speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    client: reqwest::Client,
    /// Parsed once: reqwest would parse a string on every request.
    url: reqwest::Url,
    api_key: Option<SecretString>,
    model: String,
    max_tokens: u32,
}

/// A Messages API request, borrowing the chat request's text.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<SentTurn<'a>>,
    stream: bool,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
}

impl WireUsage {
    /// Cached prompt tokens are still prompt tokens.
    fn prompt_tokens(&self) -> i64 {
        self.input_tokens
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct WireMessage {
    content: Vec<WireBlock>,
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

impl AnthropicProvider {
    pub fn new(settings: &AnthropicSettings, client: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            url: http::endpoint(&settings.base_url, "/v1/messages")?,
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            max_tokens: settings.max_tokens,
        })
    }

    fn body<'a>(&self, request: &'a ChatRequest, stream: bool) -> WireRequest<'a> {
        WireRequest {
            model: &request.model,
            max_tokens: self.max_tokens,
            system: request.system.as_deref(),
            messages: alternating(&request.turns),
            stream,
        }
    }

    async fn send(&self, body: &WireRequest<'_>) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(body);
        if let Some(key) = &self.api_key {
            let value = http::secret_header(key.expose_secret(), "ANTHROPIC_API_KEY")?;
            request = request.header("x-api-key", value);
        }
        http::send("Anthropic", request, self.api_key.as_ref()).await
    }
}

/// The parser of one stream: `message_start` brings the prompt's usage,
/// `message_delta` the output's, `message_stop` ends it.
fn event_parser() -> impl FnMut(Event) -> http::Step + Send + 'static {
    let mut usage = WireUsage::default();
    move |event| {
        let mut step = http::Step::default();
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match event.event.as_str() {
            "message_start" => {
                if let Ok(start) =
                    serde_json::from_value::<WireUsage>(data["message"]["usage"].clone())
                {
                    usage = start;
                }
            }
            "content_block_delta" => {
                if data["delta"]["type"] == "text_delta"
                    && let Some(text) = data["delta"]["text"]
                        .as_str()
                        .filter(|text| !text.is_empty())
                {
                    step.chunks.push(Chunk::Delta(text.to_owned()));
                }
            }
            "message_delta" => {
                if let Some(output) = data["usage"]["output_tokens"].as_i64() {
                    usage.output_tokens = output;
                    step.chunks.push(Chunk::Usage(Usage::new(
                        usage.prompt_tokens(),
                        usage.output_tokens,
                    )));
                }
            }
            "message_stop" => {
                step.chunks.push(Chunk::Usage(Usage::new(
                    usage.prompt_tokens(),
                    usage.output_tokens,
                )));
                step.finished = true;
            }
            "error" => step.error = Some(stream_error(&data["error"])),
            // ping, content_block_start, content_block_stop, and event types added later.
            _ => {}
        }
        step
    }
}

fn stream_error(error: &Value) -> ProviderError {
    let message = error["message"]
        .as_str()
        .unwrap_or("unknown error")
        .to_owned();
    match error["type"].as_str() {
        Some("overloaded_error" | "rate_limit_error") => {
            ProviderError::Overloaded { retry_after: None }
        }
        Some("api_error") | None => {
            ProviderError::unavailable(format!("Anthropic stream error: {message}"))
        }
        Some(kind) => {
            ProviderError::Rejected(format!("Anthropic stream error ({kind}): {message}"))
        }
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn default_model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let response = self.send(&self.body(request, false)).await?;
        let message: WireMessage = response.json().await.map_err(|err| {
            ProviderError::unavailable(format!("an unreadable Anthropic answer: {err}"))
        })?;
        let content = message
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .map(|block| block.text.as_str())
            .collect();
        Ok(Completion {
            content,
            usage: Some(Usage::new(
                message.usage.prompt_tokens(),
                message.usage.output_tokens,
            )),
            model: request.model.clone(),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        let response = self.send(&self.body(request, true)).await?;
        let chunks = http::sse_chunks("Anthropic", response, event_parser());
        Ok(ProviderStream {
            model: request.model.clone(),
            chunks: until_first_token(chunks).await?,
        })
    }
}
