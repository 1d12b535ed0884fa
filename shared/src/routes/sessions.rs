//! /sessions: a user's chat sessions and their history. Another user's session
//! is a 404 exactly like a missing one, so ids reveal nothing.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::CurrentUser,
    chat::allowed_model,
    domain::{SYSTEM_PROMPT_MAX_CHARS, TITLE_MAX_CHARS, bounded_text},
    error::{ApiError, FieldError, PROBLEM_JSON, Problem, Result},
    export,
    extract::{AppJson, AppPath, AppQuery},
    state::AppState,
    store::{Message, NewSession, Session, SessionPatch},
};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;
const DEFAULT_TITLE: &str = "New chat";
const NOT_FOUND: &str = "`session_not_found`: no session with this id is the caller's.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(export))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Page {
    /// How many sessions, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// How many to skip, newest first (default 0).
    #[param(minimum = 0)]
    offset: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    /// Up to 200 characters; "New chat" when absent.
    #[schema(example = "Trip to Lisbon", min_length = 1)]
    title: Option<String>,
    /// Up to 8,000 characters, sent before every question in the session.
    system_prompt: Option<String>,
    /// One of `LLM_MODELS`; chats in the session use it unless they name another.
    model: Option<String>,
}

/// Only the fields sent change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSession {
    /// Up to 200 characters.
    #[schema(nullable = false, min_length = 1)]
    title: Option<String>,
    /// Absent: unchanged; `null` or "": removed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    system_prompt: Option<Option<String>>,
    /// Absent: unchanged; `null`: the provider's default again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
}

/// Tells a field sent as `null` (Some(None)) from one not sent at all (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `markdown` (default) or `json`.
    #[serde(default)]
    #[param(inline)]
    format: ExportFormat,
}

#[derive(Deserialize, Default, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ExportFormat {
    #[default]
    Markdown,
    Json,
}

#[derive(Serialize, ToSchema)]
struct SessionWithMessages {
    #[serde(flatten)]
    session: Session,
    messages: Vec<Message>,
    /// A generation still answering in this session: follow it with GET
    /// /chat/stream/{generation_id}. Known to the instance running it.
    generation_in_progress: Option<String>,
}

/// The caller's sessions, most recently active first.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    operation_id = "list_sessions",
    security(("bearer" = []), ("oauth2" = [])),
    params(Page),
    responses((status = 200, description = "One page of sessions.", body = Vec<Session>)),
)]
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

/// Creates an empty session (POST /chat without `session_id` also makes one).
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    operation_id = "create_session",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = inline(CreateSession),
    responses((status = 201, description = "The new session.", body = Session)),
)]
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

/// A session with its whole history, oldest message first.
#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    operation_id = "get_session",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = i64, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The session and its messages.", body = SessionWithMessages),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
#[utoipa::path(
    get,
    path = "/sessions/{id}/export",
    tag = "sessions",
    operation_id = "export_session",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = i64, Path, description = "The session's id."), ExportQuery),
    responses(
        (status = 200, description = "An attachment (`Content-Disposition`).",
            headers(("Content-Disposition" = String, description = "attachment; filename=\"...\"")),
            content(
                (String = "text/markdown"),
                (SessionWithMessages = "application/json"),
            )),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
    let generation_in_progress = state.live.running_in(session.id).await;
    Ok(SessionWithMessages {
        session,
        messages,
        generation_in_progress,
    })
}

/// Renames a session, or changes its system prompt or model.
#[utoipa::path(
    patch,
    path = "/sessions/{id}",
    tag = "sessions",
    operation_id = "update_session",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = i64, Path, description = "The session's id.")),
    request_body = inline(UpdateSession),
    responses(
        (status = 200, description = "The session as it now is.", body = Session),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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

/// Deletes a session and its history.
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    operation_id = "delete_session",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = i64, Path, description = "The session's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = NOT_FOUND, body = Problem, content_type = PROBLEM_JSON),
    ),
)]
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
