//! One chat exchange, shared by POST /chat and POST /chat/stream: store the
//! user's message, build the context, ask the provider, store the answer.

mod context;
mod generation;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    domain::{MESSAGE_MAX_CHARS, bounded_text, title_from_message},
    error::{ApiError, FieldError, Result},
    llm::{ChatRequest, Usage, tokens},
    state::AppState,
    store::{Message, MessageStatus, NewMessage, NewSession, Role, UsageRecord},
};

pub use generation::{GenerationEvent, spawn_generation};

/// A validated chat request.
#[derive(Debug, Clone)]
pub struct ChatInput {
    pub session_id: Option<i64>,
    pub message: String,
    pub model: String,
}

impl ChatInput {
    pub fn parse(
        state: &AppState,
        session_id: Option<i64>,
        message: &str,
        model: Option<&str>,
    ) -> Result<Self> {
        let mut errors = Vec::new();
        let message = bounded_text("message", message, MESSAGE_MAX_CHARS, false)
            .map_err(|err| errors.push(err))
            .unwrap_or_default();
        let model = match model {
            None => state.provider.default_model().to_owned(),
            Some(model)
                if state
                    .settings
                    .llm
                    .models
                    .iter()
                    .any(|allowed| allowed == model) =>
            {
                model.to_owned()
            }
            Some(model) => {
                errors.push(FieldError::new(
                    "model",
                    format!(
                        "{model:?} is not an allowed model; allowed: {}",
                        state.settings.llm.models.join(", ")
                    ),
                ));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            session_id,
            message,
            model,
        })
    }
}

/// The user's side of an exchange, stored, with the request for the provider.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub user_id: i64,
    pub session_id: i64,
    pub user_message: Message,
    pub request: ChatRequest,
}

/// Stores the user's message before anything is sent upstream, so a provider
/// failure never loses it, and builds the provider request from the history.
#[tracing::instrument(skip_all, fields(user_id, session_id))]
pub async fn begin(state: &AppState, user_id: i64, input: ChatInput) -> Result<Exchange> {
    let session = match input.session_id {
        Some(id) => state
            .store
            .find_session(user_id, id)
            .await?
            .ok_or(ApiError::SessionNotFound)?,
        None => {
            let new = NewSession {
                title: title_from_message(&input.message),
                system_prompt: None,
            };
            state.store.create_session(user_id, &new).await?
        }
    };
    tracing::Span::current().record("session_id", session.id);

    let user_message = NewMessage {
        role: Role::User,
        tokens: tokens::count(&input.message),
        content: input.message,
        status: MessageStatus::Complete,
    };
    let user_message = state
        .store
        .append_message(user_id, session.id, &user_message, None)
        .await?;

    let llm = &state.settings.llm;
    let recent = state
        .store
        .recent_messages(session.id, i64::from(llm.history_max_messages))
        .await?;
    let turns = context::fit(
        session.system_prompt.as_deref(),
        &recent,
        i64::from(llm.history_max_tokens),
    );
    Ok(Exchange {
        user_id,
        session_id: session.id,
        user_message,
        request: ChatRequest {
            model: input.model,
            system: session.system_prompt,
            turns,
        },
    })
}

/// Stores the assistant's answer and adds its usage to the month, in one transaction.
/// `reported` is the provider's usage when it gave one; otherwise it is estimated.
pub async fn finish(
    state: &AppState,
    exchange: &Exchange,
    content: String,
    reported: Option<Usage>,
    status: MessageStatus,
) -> Result<(Message, Usage)> {
    let usage = reported.unwrap_or_else(|| {
        Usage::new(
            tokens::estimate_prompt(&exchange.request),
            tokens::count(&content),
        )
    });
    let record = UsageRecord {
        month: month_of(OffsetDateTime::now_utc()),
        model: exchange.request.model.clone(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
    };
    let message = NewMessage {
        role: Role::Assistant,
        content,
        tokens: usage.completion_tokens,
        status,
    };
    let stored = state
        .store
        .append_message(
            exchange.user_id,
            exchange.session_id,
            &message,
            Some(&record),
        )
        .await?;
    Ok((stored, usage))
}

/// A whole exchange without streaming: POST /chat.
pub async fn complete(state: &AppState, exchange: &Exchange) -> Result<(Message, Usage)> {
    let timeout = state.settings.llm.timeout;
    let completion = tokio::time::timeout(timeout, state.provider.complete(&exchange.request))
        .await
        .map_err(|_| crate::llm::ProviderError::Timeout)??;
    finish(
        state,
        exchange,
        completion.content,
        completion.usage,
        MessageStatus::Complete,
    )
    .await
}

/// `YYYY-MM` in UTC, the key of monthly usage.
pub fn month_of(at: OffsetDateTime) -> String {
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

/// RFC 3339, for logs and exports.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
