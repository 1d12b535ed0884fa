//! Limits shared by every instance through Redis: one script call per request.
//!
//! The script runs GCRA (see gcra.rs) for all of a request's limits at once,
//! atomically, on Redis's own clock, so instances with skewed clocks still
//! share one limit. While Redis is unreachable, calls fail fast: after a
//! failure the limiter waits `PROBE_EVERY` before trying again, so an outage
//! costs one slow request per second, not one per request.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{Script, aio::ConnectionManager};
use secrecy::SecretString;

use super::{Check, Decision, gcra};
use crate::redis_connection;

/// Redis answers a local script in well under a millisecond; past this, it is
/// treated as unreachable rather than letting requests queue behind it.
const TIMEOUT: Duration = Duration::from_millis(250);
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// KEYS: one per limit. ARGV: each limit's interval and period in microseconds.
/// Returns {1, after...} when every limit takes the request (each `after` is
/// how far its TAT is now ahead), or {0, index, ahead, retry_after} for the
/// first limit that refuses, having written nothing.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local afters = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or 0)
  local ahead = math.max(tat - now, 0)
  local after = ahead + interval
  if after > period then
    return {0, i, ahead, after - period}
  end
  afters[i] = after
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', now + afters[i]), 'PX', math.ceil(afters[i] / 1000))
end
return {1, unpack(afters)}
";

pub struct RedisLimiter {
    connection: ConnectionManager,
    script: Script,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Set while Redis is failing: calls before this instant are not attempted.
    skip_until: Option<Instant>,
}

/// Redis could not answer; the caller applies the outage policy.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unreachable: {0}")]
pub struct RedisDown(String);

impl RedisLimiter {
    /// Connects lazily: a server whose Redis is down at start still starts.
    pub fn new(url: &SecretString) -> anyhow::Result<Self> {
        let (_, connection) = redis_connection::lazy(url, TIMEOUT)?;
        Ok(Self {
            connection,
            script: Script::new(GCRA),
            health: Mutex::new(Health::default()),
        })
    }

    pub async fn check(&self, checks: &[Check]) -> Result<Decision, RedisDown> {
        if self
            .health()
            .skip_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Err(RedisDown("still in the back-off after a failure".into()));
        }
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            invocation
                .key(&check.key)
                .arg(micros(check.rate.interval()))
                .arg(micros(check.rate.period));
        }
        let mut connection = self.connection.clone();
        // EVALSHA, falling back to EVAL (which caches the script) the first time.
        let reply = tokio::time::timeout(
            TIMEOUT * 2,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        match reply {
            Ok(Ok(reply)) => {
                self.recovered();
                decide(checks, &reply)
                    .ok_or_else(|| RedisDown(format!("unexpected reply {reply:?}")))
            }
            Ok(Err(err)) => Err(self.failed(err.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {:?}", TIMEOUT * 2))),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn failed(&self, reason: String) -> RedisDown {
        let mut health = self.health();
        if health.skip_until.is_none() {
            tracing::warn!(%reason, "Redis is unreachable: rate limits follow RATE_LIMIT_ON_REDIS_ERROR until it is back");
        }
        health.skip_until = Some(Instant::now() + PROBE_EVERY);
        RedisDown(reason)
    }

    fn recovered(&self) {
        if self.health().skip_until.take().is_some() {
            tracing::info!("Redis is back: rate limits are shared again");
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Reads the script's reply into a decision about the request.
fn decide(checks: &[Check], reply: &[i64]) -> Option<Decision> {
    let duration = |micros: i64| Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    match reply {
        [1, afters @ ..] if afters.len() == checks.len() => {
            Some(gcra::tightest(checks.iter().zip(afters).map(
                |(check, after)| gcra::allowed(duration(*after), check.rate),
            )))
        }
        [0, index, ahead, retry_after] => {
            let check = checks.get(usize::try_from(*index).ok()?.checked_sub(1)?)?;
            Some(Decision {
                allowed: false,
                limit: check.rate.limit,
                remaining: 0,
                reset: duration(*ahead),
                retry_after: duration(*retry_after),
            })
        }
        _ => None,
    }
}
