//! Our own wrappers around axum's extractors, so that every rejection becomes
//! a problem+json `ApiError` instead of axum's plain-text body.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{BytesRejection, FormRejection, JsonRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
};

use crate::error::{ApiError, FieldError};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct AppForm<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ),
            JsonRejection::JsonDataError(err) => {
                Self::Validation(vec![field_error(&err.body_text())])
            }
            JsonRejection::JsonSyntaxError(err) => Self::MalformedBody(err.body_text()),
            JsonRejection::BytesRejection(err) => from_bytes_rejection(&err),
            other => Self::MalformedBody(other.body_text()),
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        match rejection {
            FormRejection::InvalidFormContentType(_) => Self::UnsupportedMediaType(
                "expected a request body with Content-Type: application/x-www-form-urlencoded"
                    .into(),
            ),
            FormRejection::FailedToDeserializeFormBody(err) => {
                Self::Validation(vec![FieldError::new("body", err.body_text())])
            }
            FormRejection::BytesRejection(err) => from_bytes_rejection(&err),
            other => Self::MalformedBody(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(vec![FieldError::new("query", rejection.body_text())])
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(err) => {
                Self::Validation(vec![FieldError::new("id", err.body_text())])
            }
            other => Self::Internal(anyhow::anyhow!(
                "path extraction failed: {}",
                other.body_text()
            )),
        }
    }
}

fn from_bytes_rejection(err: &BytesRejection) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::MalformedBody(err.body_text())
    }
}

/// serde_path_to_error's text reads "<path>: <message>"; the path names the field.
fn field_error(body_text: &str) -> FieldError {
    let detail = body_text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(body_text);
    match detail.split_once(": ") {
        Some((path, message)) if !path.contains(' ') => FieldError::new(path, message),
        _ => FieldError::new("body", detail),
    }
}
