//! Retries with exponential backoff and full jitter, honouring `retry-after`,
//! for failures before the first token (a `Provider` guarantees an `Err` means
//! nothing reached the client).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rand::RngExt as _;
use tokio::time::Instant;

use super::{ChatRequest, Completion, Provider, ProviderError, ProviderStream};
use crate::config::LlmSettings;

/// The longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A `retry-after` longer than this is not waited for: the caller gets the
/// error (and its retry-after) at once instead of a hanging request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

pub struct Retrying {
    inner: Arc<dyn Provider>,
    max_retries: u32,
    base_delay: Duration,
    first_token_timeout: Duration,
}

impl Retrying {
    pub fn new(inner: Arc<dyn Provider>, settings: &LlmSettings) -> Self {
        Self {
            inner,
            max_retries: settings.max_retries,
            base_delay: settings.retry_base_delay,
            first_token_timeout: settings.first_token_timeout,
        }
    }

    /// How long to wait before retry number `retry` (0-based) after `err`, or
    /// `None` when it should not be retried: a permanent error, no retries left,
    /// or a wait that would outlast the request's deadline (the caller then gets
    /// the error, and its retry-after, at once).
    fn backoff(
        &self,
        retry: u32,
        err: &ProviderError,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        if retry >= self.max_retries || !err.is_transient() {
            return None;
        }
        let wait = match err.retry_after() {
            Some(wait) if wait > MAX_RETRY_AFTER => return None,
            Some(wait) => wait,
            None => {
                let ceiling = self
                    .base_delay
                    .saturating_mul(2u32.saturating_pow(retry))
                    .min(MAX_BACKOFF);
                ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
            }
        };
        match deadline {
            Some(deadline) if Instant::now() + wait >= deadline => None,
            _ => Some(wait),
        }
    }

    /// One attempt may take `first_token_timeout` (for a whole answer, the
    /// answer), so a stalled provider leaves time for a retry or the fallback.
    fn attempt_deadline(&self, request: &ChatRequest) -> Instant {
        let attempt = Instant::now() + self.first_token_timeout;
        request
            .deadline
            .map_or(attempt, |deadline| deadline.min(attempt))
    }
}

#[async_trait]
impl Provider for Retrying {
    fn default_model(&self) -> &str {
        self.inner.default_model()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        self.with_retries(request, || self.inner.complete(request))
            .await
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        self.with_retries(request, || self.inner.stream(request))
            .await
    }
}

impl Retrying {
    async fn with_retries<T, F, Attempt>(
        &self,
        request: &ChatRequest,
        attempt: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn() -> Attempt,
        Attempt: Future<Output = Result<T, ProviderError>>,
    {
        let mut retry = 0;
        loop {
            let outcome = tokio::time::timeout_at(self.attempt_deadline(request), attempt())
                .await
                .unwrap_or(Err(ProviderError::Timeout));
            let err = match outcome {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let Some(wait) = self.backoff(retry, &err, request.deadline) else {
                return Err(err);
            };
            tracing::warn!(error = %err, retry = retry + 1, ?wait, "retrying the provider");
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::MockProvider;

    fn retrying(max_retries: u32) -> Retrying {
        let settings = crate::config::Settings::from_lookup(|_| None).unwrap().llm;
        Retrying {
            inner: Arc::new(MockProvider::new(settings.mock.clone())),
            max_retries,
            base_delay: Duration::from_millis(100),
            first_token_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn backs_off_exponentially_with_jitter_and_stops() {
        let policy = retrying(3);
        let err = ProviderError::unavailable("500");
        for (retry, ceiling) in [(0, 100), (1, 200), (2, 400)] {
            let wait = policy.backoff(retry, &err, None).unwrap();
            assert!(wait <= Duration::from_millis(ceiling), "{retry}: {wait:?}");
        }
        assert_eq!(policy.backoff(3, &err, None), None);
        // Never past the caller's deadline.
        let soon = Some(Instant::now() + Duration::from_millis(1));
        let limited = ProviderError::Overloaded {
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(policy.backoff(0, &limited, soon), None);
    }

    #[test]
    fn honours_retry_after_and_skips_permanent_errors() {
        let policy = retrying(2);
        let limited = ProviderError::Overloaded {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            policy.backoff(0, &limited, None),
            Some(Duration::from_secs(2))
        );
        let too_long = ProviderError::Overloaded {
            retry_after: Some(Duration::from_secs(600)),
        };
        assert_eq!(policy.backoff(0, &too_long, None), None);
        assert_eq!(
            policy.backoff(0, &ProviderError::Misconfigured("401".into()), None),
            None
        );
        assert_eq!(
            policy.backoff(0, &ProviderError::Rejected("400".into()), None),
            None
        );
        assert_eq!(policy.backoff(0, &ProviderError::Timeout, None), None);
    }
}
