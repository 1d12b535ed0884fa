//! POST /chat: one exchange, answered as JSON.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::CurrentUser,
    chat::{self, ChatInput},
    error::{PROBLEM_JSON, Problem, Result},
    extract::AppJson,
    llm::Usage,
    state::AppState,
    store::Message,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_once))
}

/// The body of POST /chat and POST /chat/stream.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChatBody {
    /// The session to continue; absent, a new session is created.
    session_id: Option<i64>,
    /// The question: 1 to 32,000 characters.
    #[schema(example = "What is the capital of France?", min_length = 1)]
    message: String,
    /// One of `LLM_MODELS`; absent, the session's model or the default.
    model: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ChatReply {
    session_id: i64,
    message: Message,
    usage: Usage,
}

/// Problems a chat meets after validation; the stream answers them the same
/// way while it has not started.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described, never built: the errors come from ApiError.
pub(super) enum ChatProblems {
    /// `session_not_found`: no such session of the caller's.
    #[response(status = 404, content_type = PROBLEM_JSON)]
    SessionNotFound(Problem),
    /// `quota_exceeded`: this month's token quota is used up (`quota`, `used`;
    /// `Retry-After` says when it renews), or `rate_limited`.
    #[response(status = 429, content_type = PROBLEM_JSON, headers(("Retry-After" = u64, description = "Seconds to wait.")))]
    QuotaExceeded(Problem),
    /// `provider_unavailable`, `provider_rejected`, `provider_misconfigured` or
    /// `provider_interrupted`: the model provider failed. The question stays
    /// stored; `session_id` names its session.
    #[response(status = 502, content_type = PROBLEM_JSON)]
    ProviderFailed(Problem),
    /// `provider_overloaded` (with `Retry-After` when the provider gave one) or
    /// `store_unavailable`.
    #[response(status = 503, content_type = PROBLEM_JSON)]
    Unavailable(Problem),
    /// `provider_timeout`: no answer within `LLM_TIMEOUT_SECS`, or `timeout`.
    #[response(status = 504, content_type = PROBLEM_JSON)]
    TimedOut(Problem),
}

impl ChatBody {
    pub(super) fn parse(&self, state: &AppState) -> Result<ChatInput> {
        ChatInput::parse(state, self.session_id, &self.message, self.model.as_deref())
    }
}

/// Asks a question and waits for the whole answer. Both messages are stored.
#[utoipa::path(
    post,
    path = "/chat",
    tag = "chat",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = ChatBody,
    responses(
        (status = 200, description = "The stored answer and its tokens.", body = ChatReply),
        ChatProblems,
    ),
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn chat_once(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<ChatBody>,
) -> Result<Json<ChatReply>> {
    let input = body.parse(&state)?;
    let exchange = chat::begin(&state, user.id, input).await?;
    let (message, usage) = chat::complete(&state, &exchange).await?;
    Ok(Json(ChatReply {
        session_id: exchange.session_id,
        message,
        usage,
    }))
}
