//! One chat exchange, shared by POST /chat and POST /chat/stream: store the
//! user's message, build the context, ask the provider, store the answer.

mod context;
mod generation;
pub mod live;
pub mod quota;
mod relay;
pub mod wire;

use time::OffsetDateTime;

use crate::{
    domain::{MESSAGE_MAX_CHARS, bounded_text, title_from_message},
    error::{ApiError, FieldError, Result},
    llm::{ChatRequest, ProviderError, Usage, tokens},
    state::AppState,
    store::{
        Asked, Conversation, Message, MessageStatus, NewMessage, NewSession, Role, UsageRecord,
    },
};

pub use generation::{GenerationEvent, spawn_generation};
pub use live::{Found, Generation, LiveGenerations};
pub use relay::Relay;
pub use wire::{Kind, WireEvent};

/// A validated chat request.
#[derive(Debug, Clone)]
pub struct ChatInput {
    pub session_id: Option<i64>,
    pub message: String,
    /// `None`: the session's model, else the provider's default.
    pub model: Option<String>,
}

impl ChatInput {
    pub fn parse(
        state: &AppState,
        session_id: Option<i64>,
        message: &str,
        model: Option<&str>,
    ) -> Result<Self> {
        let message = bounded_text("message", message, MESSAGE_MAX_CHARS, false);
        let model = model.map(|model| allowed_model(state, model)).transpose();
        match (message, model) {
            (Ok(message), Ok(model)) => Ok(Self {
                session_id,
                message,
                model,
            }),
            (message, model) => Err(ApiError::Validation(
                [message.err(), model.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

/// A model from `LLM_MODELS`: users cannot pick arbitrarily expensive ones.
pub fn allowed_model(state: &AppState, model: &str) -> Result<String, FieldError> {
    let allowed = &state.settings.llm.models;
    if allowed.iter().any(|name| name == model) {
        Ok(model.to_owned())
    } else {
        Err(FieldError::new(
            "model",
            format!(
                "{model:?} is not an allowed model; allowed: {}",
                allowed.join(", ")
            ),
        ))
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

/// Checks the user's quota, then stores the user's message before anything is
/// sent upstream, so a provider failure never loses it, and builds the
/// provider request from the history. The message may not be on disk yet
/// (`Store::ask`): the answer's commit puts it there, or `make_durable`
/// before a client is told of it otherwise.
#[tracing::instrument(skip_all, fields(user_id, session_id))]
pub async fn begin(state: &AppState, user_id: i64, input: ChatInput) -> Result<Exchange> {
    let now = OffsetDateTime::now_utc();
    let question = NewMessage {
        role: Role::User,
        tokens: tokens::count(&input.message),
        content: input.message,
        status: MessageStatus::Complete,
    };
    let conversation = match input.session_id {
        Some(id) => Conversation::Existing(id),
        None => Conversation::New(NewSession {
            title: title_from_message(&question.content),
            ..NewSession::default()
        }),
    };
    let (standing, asked) = state
        .store
        .ask(
            user_id,
            &month_of(now),
            &conversation,
            &question,
            i64::from(state.settings.llm.history_max_messages),
            state.settings.limits.monthly_token_quota,
        )
        .await?
        // A valid token for an account that no longer exists.
        .ok_or(ApiError::Unauthorized)?;
    quota::ensure_within(state, &standing, now)?;
    // Within the quota, nothing stored: the session is not the user's.
    let Asked {
        session,
        question: user_message,
        recent,
    } = asked.ok_or(ApiError::SessionNotFound)?;
    tracing::Span::current().record("session_id", session.id);

    let llm = &state.settings.llm;
    let turns = context::fit(
        session.system_prompt.as_deref(),
        recent,
        i64::from(llm.history_max_tokens),
    );
    let model = input
        .model
        .or(session.model)
        .unwrap_or_else(|| state.provider.default_model().to_owned());
    Ok(Exchange {
        user_id,
        session_id: session.id,
        user_message,
        request: ChatRequest {
            model,
            system: session.system_prompt,
            turns,
            deadline: Some(tokio::time::Instant::now() + llm.timeout),
        },
    })
}

/// The provider's answer, as it reached us.
pub struct Answer {
    pub content: String,
    /// What the provider reported; estimated when `None`.
    pub usage: Option<Usage>,
    /// The model that answered (a fallback's, if it answered).
    pub model: String,
    pub status: MessageStatus,
}

/// Stores the assistant's answer and adds its usage to the month, in one
/// transaction, only while the question is there (`Store::append_answer`).
pub async fn finish(
    state: &AppState,
    exchange: &Exchange,
    answer: Answer,
) -> Result<(Message, Usage)> {
    let usage = counted_usage(exchange, &answer);
    let record = UsageRecord {
        day: day_of(OffsetDateTime::now_utc()),
        model: answer.model,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
    };
    let message = NewMessage {
        role: Role::Assistant,
        content: answer.content,
        tokens: usage.completion_tokens,
        status: answer.status,
    };
    let stored = state
        .store
        .append_answer(
            exchange.user_id,
            exchange.session_id,
            &exchange.user_message,
            &message,
            &record,
        )
        .await?;
    Ok((stored, usage))
}

/// The provider's reported usage is the truth; what it did not report is estimated.
/// An answer cut short may carry only the prompt's count (Anthropic reports it
/// first), so its output is at least what the stored text amounts to.
fn counted_usage(exchange: &Exchange, answer: &Answer) -> Usage {
    let reported = answer.usage.unwrap_or_default();
    let prompt = match reported.prompt_tokens {
        0 => tokens::estimate_prompt(&exchange.request),
        reported => reported,
    };
    let completion = match (answer.status, reported.completion_tokens) {
        (MessageStatus::Complete, reported) if answer.usage.is_some() => reported,
        (_, reported) => reported.max(tokens::count(&answer.content)),
    };
    Usage::new(prompt, completion)
}

/// A whole exchange without streaming: POST /chat. A provider failure names
/// the session, which holds the question (a new one, if none was given).
pub async fn complete(state: &AppState, exchange: &Exchange) -> Result<(Message, Usage)> {
    let deadline = exchange
        .request
        .deadline
        .unwrap_or_else(tokio::time::Instant::now);
    let completion =
        match tokio::time::timeout_at(deadline, state.provider.complete(&exchange.request))
            .await
            .unwrap_or(Err(ProviderError::Timeout))
        {
            Ok(completion) => completion,
            Err(source) => {
                // The problem says the session holds the question; with no
                // answer stored to flush it, make sure it does.
                state
                    .store
                    .make_durable(exchange.session_id, &exchange.user_message)
                    .await?;
                return Err(ApiError::Provider {
                    source,
                    session_id: Some(exchange.session_id),
                });
            }
        };
    let answer = Answer {
        content: completion.content,
        usage: completion.usage,
        model: completion.model,
        status: MessageStatus::Complete,
    };
    finish(state, exchange, answer).await
}

/// `YYYY-MM` in UTC, the key of monthly usage.
pub fn month_of(at: OffsetDateTime) -> String {
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

/// `YYYY-MM-DD`, UTC.
pub fn day_of(at: OffsetDateTime) -> String {
    format!("{}-{:02}", month_of(at), at.day())
}
