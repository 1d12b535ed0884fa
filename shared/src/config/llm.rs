//! Settings for the language-model providers.

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Vars};

pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub provider: ProviderKind,
    /// Tried when `provider` fails before producing a token.
    pub fallback: Option<ProviderKind>,
    /// The models a request or session may name.
    pub models: Vec<String>,
    /// A whole provider call, retries included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// From sending a streaming request to its first token, per attempt.
    pub first_token_timeout: Duration,
    pub max_retries: u32,
    /// The first retry's backoff; each later one doubles it (with jitter).
    pub retry_base_delay: Duration,
    pub mock: MockSettings,
    pub openai: OpenAiSettings,
    pub anthropic: AnthropicSettings,
    pub history_max_messages: u32,
    pub history_max_tokens: u32,
    pub stream_on_disconnect: OnDisconnect,
    /// `LLM_PRICES`: what each model costs, for the cost estimates of GET /usage.
    pub prices: Vec<ModelPrice>,
}

/// USD per million tokens, as providers publish them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Mock,
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone)]
pub struct MockSettings {
    pub token_delay: Duration,
    pub fail: MockFailure,
}

/// What the mock provider does, so that failure paths can be exercised end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockFailure {
    /// Always answers.
    Never,
    /// Fails before the first token, like an upstream 5xx.
    Always,
    /// Streams half of its answer, then breaks off.
    MidStream,
}

/// OpenAI, or any server that speaks its Chat Completions API.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Optional: local OpenAI-compatible servers usually need none.
    pub api_key: Option<SecretString>,
    /// Includes the version prefix, as the OpenAI SDKs' base URL does (`.../v1`).
    pub base_url: String,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct AnthropicSettings {
    pub api_key: Option<SecretString>,
    /// Without the version prefix, as the Anthropic SDKs' base URL is.
    pub base_url: String,
    pub model: String,
    pub max_tokens: u32,
}

/// What a client's disconnect does to a streaming generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    Finish,
    Cancel,
}

impl LlmSettings {
    /// The model a provider answers with when none is named.
    pub fn default_model(&self, kind: ProviderKind) -> &str {
        match kind {
            ProviderKind::Mock => crate::llm::MOCK_MODEL,
            ProviderKind::OpenAi => &self.openai.model,
            ProviderKind::Anthropic => &self.anthropic.model,
        }
    }
}

const PROVIDERS: [(&str, ProviderKind); 3] = [
    ("mock", ProviderKind::Mock),
    ("openai", ProviderKind::OpenAi),
    ("anthropic", ProviderKind::Anthropic),
];

pub(super) fn parse(vars: &Vars) -> Result<LlmSettings, ConfigError> {
    let provider = vars.choice("LLM_PROVIDER", ProviderKind::Mock, &PROVIDERS)?;
    let fallback = match vars.get("LLM_FALLBACK_PROVIDER") {
        None => None,
        Some(_) => Some(vars.choice("LLM_FALLBACK_PROVIDER", provider, &PROVIDERS)?),
    };
    if fallback == Some(provider) {
        return Err(ConfigError::new(
            "LLM_FALLBACK_PROVIDER",
            "must differ from LLM_PROVIDER",
        ));
    }
    let uses = |kind| provider == kind || fallback == Some(kind);

    let openai = OpenAiSettings {
        api_key: vars.get("OPENAI_API_KEY").map(SecretString::from),
        base_url: http_url(vars, "OPENAI_BASE_URL", OPENAI_DEFAULT_BASE_URL)?,
        model: vars
            .get("OPENAI_MODEL")
            .unwrap_or_else(|| "gpt-4o-mini".to_owned()),
    };
    // The public API needs a key; a local compatible server usually does not.
    if uses(ProviderKind::OpenAi)
        && openai.api_key.is_none()
        && openai.base_url == OPENAI_DEFAULT_BASE_URL
    {
        return Err(ConfigError::new(
            "OPENAI_API_KEY",
            "is required to use the OpenAI API (set OPENAI_BASE_URL for a local server)",
        ));
    }
    let anthropic = AnthropicSettings {
        api_key: vars.get("ANTHROPIC_API_KEY").map(SecretString::from),
        base_url: http_url(vars, "ANTHROPIC_BASE_URL", ANTHROPIC_DEFAULT_BASE_URL)?,
        model: vars
            .get("ANTHROPIC_MODEL")
            .unwrap_or_else(|| "claude-sonnet-4-5".to_owned()),
        max_tokens: vars.positive("ANTHROPIC_MAX_TOKENS", 1024)?,
    };
    if uses(ProviderKind::Anthropic) && anthropic.api_key.is_none() {
        return Err(ConfigError::new(
            "ANTHROPIC_API_KEY",
            "is required when LLM_PROVIDER or LLM_FALLBACK_PROVIDER is anthropic",
        ));
    }

    let mut settings = LlmSettings {
        provider,
        fallback,
        models: Vec::new(),
        timeout: Duration::from_secs(vars.positive("LLM_TIMEOUT_SECS", 120)?),
        connect_timeout: Duration::from_secs(vars.positive("LLM_CONNECT_TIMEOUT_SECS", 10)?),
        first_token_timeout: Duration::from_secs(
            vars.positive("LLM_FIRST_TOKEN_TIMEOUT_SECS", 60)?,
        ),
        max_retries: vars.parsed("LLM_MAX_RETRIES", 2)?,
        retry_base_delay: Duration::from_millis(vars.positive("LLM_RETRY_BASE_DELAY_MS", 500)?),
        mock: MockSettings {
            token_delay: Duration::from_millis(vars.parsed("MOCK_TOKEN_DELAY_MS", 20)?),
            fail: vars.choice(
                "MOCK_FAIL",
                MockFailure::Never,
                &[
                    ("never", MockFailure::Never),
                    ("always", MockFailure::Always),
                    ("midstream", MockFailure::MidStream),
                ],
            )?,
        },
        openai,
        anthropic,
        history_max_messages: vars.positive("HISTORY_MAX_MESSAGES", 20)?,
        history_max_tokens: vars.positive("HISTORY_MAX_TOKENS", 8000)?,
        prices: prices(vars)?,
        stream_on_disconnect: vars.choice(
            "STREAM_ON_DISCONNECT",
            OnDisconnect::Finish,
            &[
                ("finish", OnDisconnect::Finish),
                ("cancel", OnDisconnect::Cancel),
            ],
        )?,
    };
    let default_model = settings.default_model(provider).to_owned();
    settings.models = vars
        .list("LLM_MODELS")
        .unwrap_or_else(|| vec![default_model.clone()]);
    Ok(settings)
}

/// `model=INPUT/OUTPUT,...`, in USD per million tokens: `gpt-4o-mini=0.15/0.60`.
fn prices(vars: &Vars) -> Result<Vec<ModelPrice>, ConfigError> {
    const NAME: &str = "LLM_PRICES";
    let Some(entries) = vars.list(NAME) else {
        return Ok(Vec::new());
    };
    entries
        .iter()
        .map(|entry| {
            let invalid = || {
                ConfigError::new(
                    NAME,
                    format!("{entry:?} is not MODEL=INPUT/OUTPUT in USD per million tokens"),
                )
            };
            let (model, rates) = entry.split_once('=').ok_or_else(invalid)?;
            let (input, output) = rates.split_once('/').ok_or_else(invalid)?;
            let rate = |text: &str| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|rate| rate.is_finite() && *rate >= 0.0)
                    .ok_or_else(invalid)
            };
            let model = model.trim();
            if model.is_empty() {
                return Err(invalid());
            }
            Ok(ModelPrice {
                model: model.to_owned(),
                input_per_million: rate(input)?,
                output_per_million: rate(output)?,
            })
        })
        .collect()
}

fn http_url(vars: &Vars, name: &'static str, default: &str) -> Result<String, ConfigError> {
    let url = vars.get(name).unwrap_or_else(|| default.to_owned());
    let url = url.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::new(
            name,
            format!("{url:?} is not an http(s) URL"),
        ));
    }
    Ok(url)
}
