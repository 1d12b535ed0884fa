//! /sessions: a user's chat sessions and their history. Another user's session
//! is a 404 exactly like a missing one, so ids reveal nothing.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    auth::CurrentUser,
    chat::allowed_model,
    domain::{SYSTEM_PROMPT_MAX_CHARS, TITLE_MAX_CHARS, bounded_text},
    error::{ApiError, FieldError, Result},
    export,
    extract::{AppJson, AppPath, AppQuery},
    state::AppState,
    store::{Message, NewSession, Session, SessionPatch},
};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;
const DEFAULT_TITLE: &str = "New chat";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list).post(create))
        .route("/sessions/{id}", get(show).patch(update).delete(remove))
        .route("/sessions/{id}/export", get(export))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    title: Option<String>,
    system_prompt: Option<String>,
    /// One of `LLM_MODELS`; chats in the session use it unless they name another.
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSession {
    title: Option<String>,
    /// Absent: unchanged; `null` or "": removed.
    #[serde(default, deserialize_with = "present")]
    system_prompt: Option<Option<String>>,
    /// Absent: unchanged; `null`: the provider's default again.
    #[serde(default, deserialize_with = "present")]
    model: Option<Option<String>>,
}

/// Tells a field sent as `null` (Some(None)) from one not sent at all (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    format: ExportFormat,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ExportFormat {
    #[default]
    Markdown,
    Json,
}

#[derive(Serialize)]
struct SessionWithMessages {
    #[serde(flatten)]
    session: Session,
    messages: Vec<Message>,
}

#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    AppQuery(page): AppQuery<Page>,
) -> Result<Json<Vec<Session>>> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    let offset = page.offset.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=MAX_PAGE).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    if offset < 0 {
        errors.push(FieldError::new("offset", "must not be negative"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(Json(
        state.store.list_sessions(user.id, limit, offset).await?,
    ))
}

#[tracing::instrument(skip_all, fields(user_id = user.id))]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    AppJson(body): AppJson<CreateSession>,
) -> Result<(StatusCode, Json<Session>)> {
    let mut invalid = Invalid::default();
    let title = match body.title {
        Some(title) => invalid.check(bounded_text("title", &title, TITLE_MAX_CHARS, false)),
        None => DEFAULT_TITLE.to_owned(),
    };
    let session = NewSession {
        title,
        system_prompt: body
            .system_prompt
            .and_then(|prompt| invalid.check(parse_system_prompt(&prompt))),
        model: body
            .model
            .map(|model| invalid.check(allowed_model(&state, &model))),
    };
    invalid.into_result()?;
    let session = state.store.create_session(user.id, &session).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[tracing::instrument(skip_all, fields(user_id = user.id, session_id = id))]
async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> Result<Json<SessionWithMessages>> {
    Ok(Json(with_messages(&state, user.id, id).await?))
}

/// The session as a file to download: Markdown by default, `?format=json`
/// for the same content as GET /sessions/{id}.
#[tracing::instrument(skip_all, fields(user_id = user.id, session_id = id))]
async fn export(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppQuery(query): AppQuery<ExportQuery>,
) -> Result<Response> {
    let found = with_messages(&state, user.id, id).await?;
    let (content_type, extension) = match query.format {
        ExportFormat::Markdown => ("text/markdown; charset=utf-8", "md"),
        ExportFormat::Json => ("application/json", "json"),
    };
    let headers = [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                export::filename(&found.session, extension)
            ),
        ),
    ];
    Ok(match query.format {
        ExportFormat::Markdown => {
            (headers, export::markdown(&found.session, &found.messages)).into_response()
        }
        ExportFormat::Json => (headers, Json(found)).into_response(),
    })
}

/// The user's session and its history; another user's is a 404.
async fn with_messages(state: &AppState, user_id: i64, id: i64) -> Result<SessionWithMessages> {
    let session = state
        .store
        .find_session(user_id, id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let messages = state.store.list_messages(session.id).await?;
    Ok(SessionWithMessages { session, messages })
}

#[tracing::instrument(skip_all, fields(user_id = user.id, session_id = id))]
async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<UpdateSession>,
) -> Result<Json<Session>> {
    let mut invalid = Invalid::default();
    let patch = SessionPatch {
        title: body
            .title
            .map(|title| invalid.check(bounded_text("title", &title, TITLE_MAX_CHARS, false))),
        system_prompt: body
            .system_prompt
            .map(|prompt| prompt.and_then(|prompt| invalid.check(parse_system_prompt(&prompt)))),
        model: body
            .model
            .map(|model| model.map(|model| invalid.check(allowed_model(&state, &model)))),
    };
    invalid.into_result()?;
    let session = state
        .store
        .update_session(user.id, id, &patch)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    Ok(Json(session))
}

#[tracing::instrument(skip_all, fields(user_id = user.id, session_id = id))]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    AppPath(id): AppPath<i64>,
) -> Result<StatusCode> {
    if state.store.delete_session(user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::SessionNotFound)
    }
}

/// An empty prompt means "none".
fn parse_system_prompt(raw: &str) -> std::result::Result<Option<String>, FieldError> {
    let prompt = bounded_text("system_prompt", raw, SYSTEM_PROMPT_MAX_CHARS, true)?;
    Ok((!prompt.is_empty()).then_some(prompt))
}

/// Collects every invalid field, so a client fixes them all in one round trip.
#[derive(Default)]
struct Invalid(Vec<FieldError>);

impl Invalid {
    fn check<T: Default>(&mut self, result: std::result::Result<T, FieldError>) -> T {
        result.unwrap_or_else(|err| {
            self.0.push(err);
            T::default()
        })
    }

    fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
