//! Rate limits: per user on every authenticated request and on chat, per
//! client IP on sign-in and registration. Enforced in Redis when `REDIS_URL`
//! is set (one limit for every instance and Lambda function), otherwise in
//! this process.

mod client_ip;
mod gcra;
mod redis;

use std::time::Duration;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{VerifiedToken, bearer_token},
    config::{LimitSettings, Rate, RedisOutagePolicy},
    error::Problem,
    state::AppState,
};

pub use self::{client_ip::client_ip, gcra::LocalLimiter, redis::RedisLimiter};

/// One limit to apply: a bucket and its rate.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub rate: Rate,
}

/// What a limiter said about a request, and what its headers tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until one more request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

impl Decision {
    const UNLIMITED: Self = Self {
        allowed: true,
        limit: u32::MAX,
        remaining: u32::MAX,
        reset: Duration::ZERO,
        retry_after: Duration::ZERO,
    };

    /// `RateLimit-Limit`, `-Remaining` and `-Reset` (whole seconds, rounded up
    /// so a client that waits that long is never refused for being early).
    fn write_headers(&self, headers: &mut HeaderMap) {
        const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(ceil_secs(self.reset)));
        if !self.allowed {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after)),
            );
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

pub struct RateLimiter {
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    on_redis_error: RedisOutagePolicy,
}

/// The answer to a check: a decision, no limit at all (Redis down, failing
/// open), or no answer (Redis down, failing closed).
enum Outcome {
    Decided(Decision),
    Unlimited,
    Unavailable,
}

impl RateLimiter {
    pub fn new(settings: &LimitSettings) -> anyhow::Result<Self> {
        Ok(Self {
            local: LocalLimiter::default(),
            redis: settings
                .redis_url
                .as_ref()
                .map(RedisLimiter::new)
                .transpose()?,
            on_redis_error: settings.on_redis_error,
        })
    }

    async fn check(&self, checks: &[Check]) -> Outcome {
        let Some(redis) = &self.redis else {
            return Outcome::Decided(self.local.check(checks));
        };
        match redis.check(checks).await {
            Ok(decision) => Outcome::Decided(decision),
            Err(_) => match self.on_redis_error {
                RedisOutagePolicy::Open => Outcome::Unlimited,
                RedisOutagePolicy::Local => Outcome::Decided(self.local.check(checks)),
                RedisOutagePolicy::Closed => Outcome::Unavailable,
            },
        }
    }
}

/// The middleware: works out which limits a request falls under, checks them
/// all in one go, and answers 429 or passes the request on with the headers of
/// the tightest limit. A valid bearer token is verified here once and handed to
/// the `CurrentUser` extractor.
pub async fn enforce(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let checks = plan(&state, &mut request);
    if checks.is_empty() {
        return next.run(request).await;
    }
    let decision = match state.limiter.check(&checks).await {
        Outcome::Decided(decision) => decision,
        Outcome::Unlimited => return next.run(request).await,
        Outcome::Unavailable => {
            let mut response = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limiter_unavailable",
                "the rate limiter is not answering; try again shortly",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let seconds = ceil_secs(decision.retry_after);
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests: try again in {seconds} s"),
        )
        .with("retry_after", seconds)
        .into_response()
    };
    decision.write_headers(response.headers_mut());
    response
}

fn plan(state: &AppState, request: &mut Request) -> Vec<Check> {
    let limits = &state.settings.limits;
    let prefix = &limits.redis_key_prefix;
    let path = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |path| path.as_str().to_owned(),
    );
    let mut checks = Vec::new();
    if request.method() == Method::POST && matches!(path.as_str(), "/auth/login" | "/auth/register")
    {
        if let Some(rate) = limits.per_ip_auth {
            let ip = client_ip(request, limits.trusted_proxy_hops)
                .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            checks.push(Check {
                key: format!("{prefix}rl:auth:{{{ip}}}"),
                rate,
            });
        }
        return checks;
    }
    let Some(user) = bearer_token(request.headers()).and_then(|token| state.jwt.verify(token).ok())
    else {
        // No valid token: the route answers 401 (or is public) without any work worth limiting.
        return checks;
    };
    request.extensions_mut().insert(VerifiedToken(user));
    // The braces are a Redis Cluster hash tag: one user's keys share a slot,
    // as a multi-key script requires.
    if let Some(rate) = limits.per_user_chat
        && path.starts_with("/chat")
    {
        checks.push(Check {
            key: format!("{prefix}rl:chat:{{u{user}}}"),
            rate,
        });
    }
    if let Some(rate) = limits.per_user {
        checks.push(Check {
            key: format!("{prefix}rl:requests:{{u{user}}}"),
            rate,
        });
    }
    checks
}
