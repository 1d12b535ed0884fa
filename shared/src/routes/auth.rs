//! /auth: register, log in (OAuth2 password form or JSON), refresh, log out, me.

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    http::{StatusCode, header},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{CurrentUser, RefreshToken, hash_refresh_token, new_family},
    domain::{Email, Password},
    error::{ApiError, PROBLEM_JSON, Problem, Result},
    extract::{AppForm, AppJson},
    state::AppState,
    store::{NewRefreshToken, Rotation, User},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Credentials {
    #[schema(example = "ada@example.com")]
    email: String,
    /// 8 to 72 bytes (bcrypt reads no further).
    #[schema(example = "correct horse battery staple", max_length = 72)]
    password: String,
}

#[derive(Serialize, ToSchema)]
struct TokenPair {
    /// A JWT for the `Authorization: Bearer` header.
    access_token: String,
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds until `access_token` expires.
    expires_in: u64,
    /// Opaque, single use: trade it at POST /auth/refresh for a new pair.
    refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "The new account.", body = User),
        (status = 409, description = "`email_taken`: an account with this email exists.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    AppJson(body): AppJson<Credentials>,
) -> Result<(StatusCode, Json<User>)> {
    let (email, password) = match (Email::parse(&body.email), Password::parse(&body.password)) {
        (Ok(email), Ok(password)) => (email, password),
        (email, password) => {
            let errors = [email.err(), password.err()]
                .into_iter()
                .flatten()
                .collect();
            return Err(ApiError::Validation(errors));
        }
    };
    let hash = state.passwords.hash(password.as_ref()).await?;
    let user = state.store.create_user(email.as_ref(), &hash).await?;
    tracing::info!(user_id = user.id, "registered");
    Ok((StatusCode::CREATED, Json(user)))
}

/// Logs in: a new access token and refresh token.
///
/// Takes the OAuth2 password form (`username` is the email; `grant_type`,
/// `scope` and `client_id` are accepted and ignored) or JSON.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body(content(
        (PasswordForm = "application/x-www-form-urlencoded"),
        (Credentials = "application/json"),
    )),
    responses(
        (status = 200, description = "Tokens for the account.", body = TokenPair),
        (status = 401, description = "`invalid_credentials`: no account with this email and password.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
#[tracing::instrument(skip_all, fields(user_id))]
async fn login(
    State(state): State<AppState>,
    credentials: LoginCredentials,
) -> Result<Json<TokenPair>> {
    // An address that cannot be valid cannot have an account: the same 401.
    let email = Email::parse(&credentials.email).map_err(|_| ApiError::InvalidCredentials)?;
    let found = state.store.find_user_by_email(email.as_ref()).await?;
    let hash = found.as_ref().map(|found| found.password_hash.as_str());
    if !state.passwords.verify(&credentials.password, hash).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let user = found.ok_or(ApiError::InvalidCredentials)?.user;
    tracing::Span::current().record("user_id", user.id);
    let refresh = RefreshToken::generate();
    state
        .store
        .insert_refresh_token(&NewRefreshToken {
            user_id: user.id,
            family: new_family(),
            token_hash: refresh.hash,
            expires_at: refresh_expiry(&state),
        })
        .await?;
    Ok(Json(token_pair(&state, user.id, refresh.token)?))
}

/// Trades a refresh token for a new pair. Each refresh token works once:
/// presenting a spent one again revokes every token descended from the same login.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new pair; the old refresh token is spent.", body = TokenPair),
        (status = 401, description = "`invalid_refresh_token`: unknown, expired, revoked or already used.",
            body = Problem, content_type = PROBLEM_JSON),
    ),
)]
#[tracing::instrument(skip_all, fields(user_id))]
async fn refresh(
    State(state): State<AppState>,
    AppJson(body): AppJson<RefreshBody>,
) -> Result<Json<TokenPair>> {
    let replacement = RefreshToken::generate();
    let rotation = state
        .store
        .rotate_refresh_token(
            &hash_refresh_token(&body.refresh_token),
            &replacement.hash,
            refresh_expiry(&state),
        )
        .await?;
    match rotation {
        Rotation::Rotated { user_id } => {
            tracing::Span::current().record("user_id", user_id);
            Ok(Json(token_pair(&state, user_id, replacement.token)?))
        }
        Rotation::Reused => {
            tracing::warn!("a spent refresh token was presented again; its family is revoked");
            Err(ApiError::InvalidRefreshToken)
        }
        Rotation::Invalid => Err(ApiError::InvalidRefreshToken),
    }
}

/// Logs out: revokes the refresh token and every token from the same login.
///
/// Idempotent: an unknown token is also a 204, so the answer says nothing
/// about which tokens exist.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    request_body = RefreshBody,
    responses((status = 204, description = "Revoked (or never valid).")),
)]
async fn logout(
    State(state): State<AppState>,
    AppJson(body): AppJson<RefreshBody>,
) -> Result<StatusCode> {
    state
        .store
        .revoke_refresh_family(&hash_refresh_token(&body.refresh_token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account the access token belongs to.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses((status = 200, description = "The caller's account.", body = User)),
)]
async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<User>> {
    // A valid token for a deleted account is no longer a credential.
    let user = state
        .store
        .find_user(user.id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(user))
}

fn refresh_expiry(state: &AppState) -> OffsetDateTime {
    OffsetDateTime::now_utc() + state.settings.auth.refresh_token_ttl
}

fn token_pair(state: &AppState, user_id: i64, refresh_token: String) -> Result<TokenPair> {
    Ok(TokenPair {
        access_token: state.jwt.issue(user_id)?,
        token_type: "bearer",
        expires_in: state.jwt.ttl().as_secs(),
        refresh_token,
    })
}

/// Login credentials from an OAuth2 password form (`username`, `password`, as
/// OAuth2 clients and docs pages send them) or from JSON (`email`, `password`).
struct LoginCredentials {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
struct PasswordForm {
    /// The account's email.
    #[schema(example = "ada@example.com")]
    username: String,
    password: String,
    // OAuth2 clients may send grant_type, scope, client_id: accepted and ignored.
}

impl FromRequest<AppState> for LoginCredentials {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let AppJson(body) = AppJson::<Credentials>::from_request(request, state).await?;
            return Ok(Self {
                email: body.email,
                password: body.password,
            });
        }
        let AppForm(form) = AppForm::<PasswordForm>::from_request(request, state)
            .await
            .map_err(|err| match err {
                ApiError::UnsupportedMediaType(_) => ApiError::UnsupportedMediaType(
                    "send application/x-www-form-urlencoded (username, password) or application/json (email, password)".into(),
                ),
                other => other,
            })?;
        Ok(Self {
            email: form.username,
            password: form.password,
        })
    }
}
