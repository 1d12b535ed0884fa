//! One error type for the whole API, rendered as RFC 9457 problem+json.
//!
//! Handlers return `Result<T>`; every failure, from a bad token to a lost
//! database, leaves through `IntoResponse` below, so no response is ever a bare
//! status or a leaked internal message.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{llm::ProviderError, store::StoreError};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing, invalid or expired access token")]
    Unauthorized,
    #[error("incorrect email or password")]
    InvalidCredentials,
    #[error("the refresh token is invalid, expired or already used")]
    InvalidRefreshToken,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than this server accepts")]
    PayloadTooLarge,
    #[error("session not found")]
    SessionNotFound,
    #[error("no generation with this id is running or recently ended for this user")]
    GenerationNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("this account is not an administrator")]
    Forbidden,
    #[error(
        "this month's token quota of {quota} is used up ({used} used); it renews on the 1st (UTC)"
    )]
    QuotaExceeded {
        quota: i64,
        used: i64,
        /// Until the month ends.
        renews_in: std::time::Duration,
    },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    #[error("{source}")]
    Provider {
        source: ProviderError,
        /// The session holding the question that failed, when the client may not know it.
        session_id: Option<i64>,
    },
    #[error("the database is not answering")]
    StoreUnavailable(#[source] anyhow::Error),
    #[error("an internal error occurred")]
    Internal(#[from] anyhow::Error),
}

/// The problem+json body (RFC 9457). `code` is the stable, machine-readable
/// part; a problem may carry extension members beside these (`session_id`,
/// `quota`, `used`, `checks`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` says which problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// The HTTP status's reason phrase.
    #[schema(example = "Not Found")]
    pub title: &'static str,
    #[schema(example = 404)]
    pub status: u16,
    /// For people; may change between releases.
    #[schema(example = "session not found")]
    pub detail: String,
    /// For programs: stable across releases (the README lists every code).
    #[schema(example = "session_not_found")]
    pub code: &'static str,
    /// Every invalid field, present when `code` is `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
    /// RFC 9457 extension members (`session_id`, a health check's `checks`...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.extensions.insert(name.to_owned(), value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::InvalidCredentials | Self::InvalidRefreshToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SessionNotFound
            | Self::GenerationNotFound
            | Self::UserNotFound
            | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Provider { source, .. } => source.status(),
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::EmailTaken => "email_taken",
            Self::Validation(_) => "validation_failed",
            Self::MalformedBody(_) => "malformed_body",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::SessionNotFound => "session_not_found",
            Self::GenerationNotFound => "generation_not_found",
            Self::UserNotFound => "user_not_found",
            Self::Forbidden => "forbidden",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RouteNotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Provider { source, .. } => source.code(),
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// A single invalid field, for validation done by hand.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(self.status(), self.code(), self.to_string());
        match self {
            Self::Validation(errors) => problem.errors = Some(errors.clone()),
            Self::Provider {
                session_id: Some(id),
                ..
            } => problem = problem.with("session_id", id),
            Self::QuotaExceeded { quota, used, .. } => {
                problem = problem.with("quota", quota).with("used", used);
            }
            _ => {}
        }
        problem
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Internal causes are logged here, once, inside the request's span;
        // the client only ever sees the opaque message.
        match &self {
            Self::Internal(err) => tracing::error!(error = ?err, "request failed"),
            Self::StoreUnavailable(err) => tracing::error!(error = ?err, "store unavailable"),
            Self::Provider { source, .. } => tracing::warn!(error = %source, "provider failed"),
            _ => {}
        }
        let mut response = self.to_problem().into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Tell the client when the provider (or the calendar) says it may try again.
        let retry_after = match &self {
            Self::Provider { source, .. } => source.retry_after(),
            Self::QuotaExceeded { renews_in, .. } => Some(*renews_in),
            _ => None,
        };
        if let Some(wait) = retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<ProviderError> for ApiError {
    fn from(source: ProviderError) -> Self {
        Self::Provider {
            source,
            session_id: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::SessionNotFound => Self::SessionNotFound,
            err @ StoreError::TooLarge { field, .. } => Self::invalid(field, err.to_string()),
            StoreError::Unavailable(err) => Self::StoreUnavailable(err),
            StoreError::Other(err) => Self::Internal(err),
        }
    }
}
