//! POST /chat: one exchange, answered as JSON.

use axum::{Json, Router, extract::State, routing::post};
use serde::{Deserialize, Serialize};

use crate::{
    auth::CurrentUser,
    chat::{self, ChatInput},
    error::Result,
    extract::AppJson,
    llm::Usage,
    state::AppState,
    store::Message,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/chat", post(chat_once))
}

/// The body of POST /chat and POST /chat/stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChatBody {
    session_id: Option<i64>,
    message: String,
    model: Option<String>,
}

#[derive(Serialize)]
struct ChatReply {
    session_id: i64,
    message: Message,
    usage: Usage,
}

impl ChatBody {
    pub(super) fn parse(&self, state: &AppState) -> Result<ChatInput> {
        ChatInput::parse(state, self.session_id, &self.message, self.model.as_deref())
    }
}

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
