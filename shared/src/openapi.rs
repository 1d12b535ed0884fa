//! The OpenAPI 3.1 document, generated from the handlers themselves: each
//! group's router registers its handlers through `utoipa_axum::routes!`, which
//! adds a route and its documented operation together, so the two cannot drift.
//!
//! The errors every operation can meet (bad bodies, rate limits, an absent
//! store) are added here once rather than repeated on each handler; each
//! handler documents only the problems that belong to it.

use std::sync::LazyLock;

use utoipa::{
    Modify, OpenApi,
    openapi::{
        Components, ContentBuilder, Ref, RefOr, ResponseBuilder,
        header::HeaderBuilder,
        path::Operation,
        schema::{ObjectBuilder, Type},
        security::{Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme},
    },
};

use crate::error::{FieldError, PROBLEM_JSON, Problem};

/// The security scheme names; handlers name them in `security((...))` (literals there).
const BEARER: &str = "bearer";
const OAUTH2: &str = "oauth2";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat-api",
        description = "A multi-user AI chat API: accounts, chat sessions with persistent \
            history, answers from a configured model (JSON or streamed as Server-Sent \
            Events), token usage and quotas, and an administration API.\n\n\
            Every error is `application/problem+json` (RFC 9457) with a stable `code`.\n\n\
            Authorize with the OAuth2 password form (your email as the username) or paste \
            an access token from POST /auth/login as the bearer token.",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "auth", description = "Accounts and tokens: register, log in, refresh, log out."),
        (name = "sessions", description = "A user's chat sessions and their history."),
        (name = "chat", description = "Ask a question in a session; the answer as JSON or as a stream."),
        (name = "usage", description = "The caller's tokens, requests and estimated cost."),
        (name = "admin", description = "For administrators: users, quotas, usage by day, the dashboard page."),
        (name = "service", description = "Health, this document and its docs page."),
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access_token` from POST /auth/login or /auth/refresh.",
                    ))
                    .build(),
            ),
        );
        // What a docs page's "Authorize" button uses: it posts the form to /auth/login.
        components.add_security_scheme(
            OAUTH2,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/auth/login", Scopes::new()))],
                "The OAuth2 password flow: `username` is the account's email.",
            )),
        );
    }
}

/// The document, built once per process.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let mut document = ApiDoc::openapi();
        document.merge(crate::routes::all().into_openapi());
        document.info.version = env!("CARGO_PKG_VERSION").to_owned();
        add_common_problems(&mut document);
        document
    });
    &DOCUMENT
}

/// The document as served at GET /openapi.json.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string(document()).expect("an OpenAPI document always serialises")
    });
    &JSON
}

/// Problems that are not the handler's own, by what the operation takes.
const COMMON: &[Common] = &[
    Common {
        status: "400",
        name: "MalformedBody",
        applies: |op| op.request_body.is_some(),
        description: "`malformed_body`: the body is not valid JSON (or form), or is truncated.",
    },
    Common {
        status: "401",
        name: "Unauthorized",
        applies: |op| op.security.is_some(),
        description: "`unauthorized`: the access token is missing, invalid, expired, or names \
            an account that no longer exists.",
    },
    Common {
        status: "413",
        name: "PayloadTooLarge",
        applies: |op| op.request_body.is_some(),
        description: "`payload_too_large`: the body is larger than `BODY_LIMIT_BYTES`.",
    },
    Common {
        status: "415",
        name: "UnsupportedMediaType",
        applies: |op| op.request_body.is_some(),
        description: "`unsupported_media_type`: the body is not sent as the media type documented.",
    },
    Common {
        status: "422",
        name: "ValidationFailed",
        applies: |op| op.request_body.is_some() || op.parameters.is_some(),
        description: "`validation_failed`: a field, query or path parameter is invalid; \
            `errors` names every one.",
    },
    Common {
        status: "503",
        name: "StoreUnavailable",
        applies: |_| true,
        description: "`store_unavailable` (the database) or `rate_limiter_unavailable` (Redis) is \
            not answering; try again shortly.",
    },
    Common {
        status: "504",
        name: "Timeout",
        applies: |_| true,
        description: "`timeout`: the request took longer than `REQUEST_TIMEOUT_SECS`.",
    },
    Common {
        status: "default",
        name: "Problem",
        applies: |_| true,
        description: "Any other error (`not_found`, `method_not_allowed`, `internal_error`...), \
            always as problem+json.",
    },
];

struct Common {
    status: &'static str,
    name: &'static str,
    applies: fn(&Operation) -> bool,
    description: &'static str,
}

fn add_common_problems(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Components::new);
    for common in COMMON {
        components
            .responses
            .insert(common.name.to_owned(), problem_response(common.description));
    }
    components
        .responses
        .insert("RateLimited".to_owned(), rate_limited());
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let applicable: Vec<&Common> = COMMON
                .iter()
                .filter(|common| (common.applies)(operation))
                .collect();
            let responses = &mut operation.responses.responses;
            for common in applicable {
                responses
                    .entry(common.status.to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(common.name)));
            }
            // Every route passes the rate limiter (a handler may document a
            // 429 of its own, such as a quota, instead).
            responses
                .entry("429".to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name("RateLimited")));
        }
    }
}

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, problem_content())
            .build(),
    )
}

pub fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

fn rate_limited() -> RefOr<utoipa::openapi::Response> {
    let seconds = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            ))
            .description(Some(description))
            .build()
    };
    RefOr::T(
        ResponseBuilder::new()
            .description(
                "`rate_limited`: too many requests from this user (or, on /auth, this address).",
            )
            .header(
                "Retry-After",
                seconds("Seconds until a request is allowed again."),
            )
            .content(PROBLEM_JSON, problem_content())
            .build(),
    )
}
