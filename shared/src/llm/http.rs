//! What the HTTP providers share: the client, turning upstream failures into
//! `ProviderError`s, and decoding a Server-Sent-Events response into chunks.

use std::{collections::VecDeque, time::Duration};

use anyhow::Context as _;
use eventsource_stream::{Event, Eventsource as _};
use futures::{StreamExt, stream};
use reqwest::{
    RequestBuilder, Response,
    header::{HeaderMap, HeaderValue},
};
use secrecy::{ExposeSecret, SecretString};
use time::{OffsetDateTime, format_description::well_known::Rfc2822};

use super::{Chunk, ChunkStream, ProviderError};
use crate::config::LlmSettings;

/// Longest upstream error text kept in a message (logs, problem details).
const MAX_ERROR_TEXT: usize = 300;

pub fn client(settings: &LlmSettings) -> anyhow::Result<reqwest::Client> {
    // No overall timeout here: the chat service bounds each call with LLM_TIMEOUT_SECS,
    // and a streaming body must be allowed to outlive any per-request limit.
    Ok(reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .user_agent(concat!("chat-api/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A provider's endpoint, parsed once at start-up rather than by reqwest on
/// every request.
pub fn endpoint(base_url: &str, path: &str) -> anyhow::Result<reqwest::Url> {
    let url = format!("{base_url}{path}");
    url.parse().with_context(|| format!("{url} is not a URL"))
}

/// A header that carries a key: marked sensitive, so Debug output never shows it.
pub fn secret_header(value: &str, variable: &str) -> Result<HeaderValue, ProviderError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        ProviderError::Misconfigured(format!("{variable} is not a valid header value"))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Sends a request: a transport failure or a non-2xx answer becomes the error.
/// `key` is blanked out of any upstream text kept (some providers quote it).
pub async fn send(
    provider: &str,
    request: RequestBuilder,
    key: Option<&SecretString>,
) -> Result<Response, ProviderError> {
    let response = request.send().await.map_err(|err| transport_error(&err))?;
    if !response.status().is_success() {
        return Err(status_error(provider, response, key).await);
    }
    Ok(response)
}

/// A failure to send or read: connection refused, reset, DNS, connect timeout.
pub fn transport_error(err: &reqwest::Error) -> ProviderError {
    if err.is_timeout() {
        return ProviderError::Timeout;
    }
    // The error's Display can include the URL, never a key (keys travel in headers).
    ProviderError::unavailable(format!("cannot reach the provider: {err}"))
}

/// Classifies a non-2xx response. 401/403/404 mean our key, account or URL is
/// wrong: logged loudly, since no user can fix it.
pub async fn status_error(
    provider: &str,
    response: Response,
    key: Option<&SecretString>,
) -> ProviderError {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut body = response.text().await.unwrap_or_default();
    if let Some(key) = key
        .map(ExposeSecret::expose_secret)
        .filter(|key| !key.is_empty())
    {
        body = body.replace(key, "[redacted]");
    }
    let text: String = body.chars().take(MAX_ERROR_TEXT).collect();
    let message = format!("{provider} answered {status}: {text}");
    match status.as_u16() {
        401 | 403 | 404 => {
            tracing::error!(%status, body = %text, "{provider} rejected this server's credentials or URL: check the API key, base URL and model");
            ProviderError::Misconfigured(message)
        }
        408 => ProviderError::Unavailable {
            message,
            retry_after,
        },
        // OpenAI answers 429 when the account is out of credit: no retry will help.
        429 if body.contains("insufficient_quota") => {
            tracing::error!(body = %text, "{provider} says this account has no quota left");
            ProviderError::Misconfigured(message)
        }
        429 | 529 => ProviderError::Overloaded { retry_after },
        _ if status.is_server_error() => ProviderError::Unavailable {
            message,
            retry_after,
        },
        _ => ProviderError::Rejected(message),
    }
}

/// `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// What one SSE event means to a provider's parser.
#[derive(Default)]
pub struct Step {
    pub chunks: Vec<Chunk>,
    /// The provider's own end-of-answer marker arrived.
    pub finished: bool,
    /// The answer is whole, so the body may end here even without the marker.
    pub may_end: bool,
    pub error: Option<ProviderError>,
}

/// Decodes an SSE response with a provider-specific `parse`. A body that ends
/// before `parse` reports the end marker was cut off, and says so.
pub fn sse_chunks<F>(provider: &'static str, response: Response, parse: F) -> ChunkStream
where
    F: FnMut(Event) -> Step + Send + 'static,
{
    struct State<S, F> {
        events: S,
        parse: F,
        pending: VecDeque<Chunk>,
        /// Delivered after `pending`, then the stream ends.
        error: Option<ProviderError>,
        done: bool,
        may_end: bool,
    }
    let state = State {
        events: response.bytes_stream().eventsource(),
        parse,
        pending: VecDeque::new(),
        error: None,
        done: false,
        may_end: false,
    };
    stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(chunk) = state.pending.pop_front() {
                return Some((Ok(chunk), state));
            }
            if let Some(err) = state.error.take() {
                return Some((Err(err), state));
            }
            if state.done {
                return None;
            }
            match state.events.next().await {
                Some(Ok(event)) => {
                    let step = (state.parse)(event);
                    state.pending.extend(step.chunks);
                    state.done = step.finished || step.error.is_some();
                    state.may_end |= step.may_end;
                    state.error = step.error;
                }
                Some(Err(err)) => {
                    state.done = true;
                    // Transient before the first token; `until_first_token` turns
                    // it into an interruption after.
                    state.error = Some(ProviderError::unavailable(format!(
                        "reading the {provider} stream failed: {err}"
                    )));
                }
                None if state.may_end => return None,
                None => {
                    state.done = true;
                    state.error = Some(ProviderError::unavailable(format!(
                        "the {provider} stream ended before its end marker"
                    )));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    #[tokio::test]
    async fn a_key_quoted_by_the_provider_is_redacted() {
        let key = SecretString::from("sk-live-0123456789");
        let upstream = axum::http::Response::builder()
            .status(401)
            .body(r#"{"error": {"message": "Incorrect API key provided: sk-live-0123456789"}}"#)
            .unwrap();
        let err = status_error("OpenAI", Response::from(upstream), Some(&key)).await;
        let ProviderError::Misconfigured(message) = err else {
            panic!("a 401 is a misconfiguration: {err:?}");
        };
        assert!(!message.contains("sk-live-0123456789"), "{message}");
        assert!(message.contains("[redacted]"), "{message}");
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));

        let mut dated = HeaderMap::new();
        let soon = (OffsetDateTime::now_utc() + time::Duration::seconds(30))
            .format(&Rfc2822)
            .unwrap();
        dated.insert("retry-after", HeaderValue::from_str(&soon).unwrap());
        let wait = retry_after(&dated).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );

        dated.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&dated), None);
    }
}
