//! Settings for rate limits and token quotas.

use std::{fmt, str::FromStr, time::Duration};

use secrecy::SecretString;

use super::{ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `REDIS_URL`: shared limits across instances; unset, each process keeps its own.
    pub redis_url: Option<SecretString>,
    /// `REDIS_KEY_PREFIX`: namespaces this deployment's keys in a shared Redis.
    pub redis_key_prefix: String,
    /// `RATE_LIMIT_REQUESTS`: every authenticated request, per user.
    pub per_user: Option<Rate>,
    /// `RATE_LIMIT_CHAT`: POST /chat and /chat/stream, per user, on top of `per_user`.
    pub per_user_chat: Option<Rate>,
    /// `RATE_LIMIT_AUTH`: /auth/login and /auth/register, per client IP.
    pub per_ip_auth: Option<Rate>,
    /// `RATE_LIMIT_ON_REDIS_ERROR`: what a request gets while Redis is unreachable.
    pub on_redis_error: RedisOutagePolicy,
    /// `TRUSTED_PROXY_HOPS`: proxies in front of the server that append to
    /// X-Forwarded-For; 0 trusts only the socket's peer address. On Lambda it
    /// defaults to 1: API Gateway appends the address it saw.
    pub trusted_proxy_hops: usize,
    /// `MONTHLY_TOKEN_QUOTA`: tokens per user per calendar month (UTC) unless
    /// an admin set the user's own; `None` is unlimited.
    pub monthly_token_quota: Option<i64>,
}

/// `limit` requests per `period`, allowed in a burst of up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOutagePolicy {
    /// Serve without a limit, logging a warning once per outage.
    Open,
    /// Fall back to this process's own limiter.
    Local,
    /// Refuse with 503 until Redis is back.
    Closed,
}

pub(super) fn parse(vars: &Vars<'_>, on_lambda: bool) -> Result<LimitSettings, ConfigError> {
    Ok(LimitSettings {
        redis_url: vars.get("REDIS_URL").map(SecretString::from),
        redis_key_prefix: vars
            .get("REDIS_KEY_PREFIX")
            .unwrap_or_else(|| "chat-api:".to_owned()),
        per_user: rate(vars, "RATE_LIMIT_REQUESTS", "600/min")?,
        per_user_chat: rate(vars, "RATE_LIMIT_CHAT", "30/min")?,
        per_ip_auth: rate(vars, "RATE_LIMIT_AUTH", "20/min")?,
        on_redis_error: vars.choice(
            "RATE_LIMIT_ON_REDIS_ERROR",
            RedisOutagePolicy::Open,
            &[
                ("open", RedisOutagePolicy::Open),
                ("local", RedisOutagePolicy::Local),
                ("closed", RedisOutagePolicy::Closed),
            ],
        )?,
        trusted_proxy_hops: vars.parsed("TRUSTED_PROXY_HOPS", usize::from(on_lambda))?,
        monthly_token_quota: match vars.get("MONTHLY_TOKEN_QUOTA") {
            None => None,
            Some(_) => Some(vars.positive("MONTHLY_TOKEN_QUOTA", 1_i64)?),
        },
    })
}

/// `N/UNIT` (`s`, `min`, `h`, `day`) or `off`.
fn rate(vars: &Vars<'_>, name: &'static str, default: &str) -> Result<Option<Rate>, ConfigError> {
    let raw = vars.get(name).unwrap_or_else(|| default.to_owned());
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|err| ConfigError::new(name, format!("{raw:?}: {err}")))
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let expected = "expected N/s, N/min, N/h, N/day or off";
        let (limit, unit) = raw.trim().split_once('/').ok_or(expected)?;
        let limit: u32 = limit.trim().parse().map_err(|_| expected)?;
        if limit == 0 {
            return Err("the limit must be at least 1 (or use off)".into());
        }
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            "d" | "day" => 86_400,
            _ => return Err(expected.into()),
        };
        Ok(Self {
            limit,
            period: Duration::from_secs(seconds),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.period.as_secs())
    }
}

impl Rate {
    /// The time one request "costs": a full bucket refills one request per interval.
    pub fn interval(&self) -> Duration {
        self.period / self.limit
    }
}
