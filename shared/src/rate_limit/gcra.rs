//! The generic cell rate algorithm, and the in-process limiter built on it.
//!
//! Each key keeps one number, its theoretical arrival time (TAT): when the
//! bucket would be empty again if requests kept arriving at the allowed rate.
//! A request is allowed when, after adding one interval, the TAT is at most one
//! period ahead of now. The Redis script (redis.rs) does the same arithmetic.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Check, Decision};
use crate::config::Rate;

/// Past this many keys, each new check first drops the keys whose TAT has
/// passed (their buckets are full again, so forgetting them changes nothing).
const SWEEP_ABOVE: usize = 10_000;

/// How far one key's TAT may be ahead of now after one more request, or why not.
pub(super) fn next_ahead(ahead: Duration, rate: Rate) -> Result<Duration, Decision> {
    let after = ahead + rate.interval();
    if after > rate.period {
        return Err(Decision {
            allowed: false,
            limit: rate.limit,
            remaining: 0,
            reset: ahead,
            retry_after: after - rate.period,
        });
    }
    Ok(after)
}

pub(super) fn allowed(after: Duration, rate: Rate) -> Decision {
    let room = rate.period - after;
    Decision {
        allowed: true,
        limit: rate.limit,
        remaining: u32::try_from(room.as_nanos() / rate.interval().as_nanos()).unwrap_or(u32::MAX),
        reset: after,
        retry_after: Duration::ZERO,
    }
}

/// The limiter of one process: exact for it, blind to every other instance.
#[derive(Default)]
pub struct LocalLimiter {
    tats: Mutex<HashMap<String, Instant>>,
}

impl LocalLimiter {
    /// Checks every limit at once: either all of them take the request, or
    /// none does and the first refusal is returned.
    pub fn check(&self, checks: &[Check]) -> Decision {
        let now = Instant::now();
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tats.len() > SWEEP_ABOVE {
            tats.retain(|_, tat| *tat > now);
        }
        let mut afters = Vec::with_capacity(checks.len());
        for check in checks {
            let ahead = tats
                .get(&check.key)
                .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
            match next_ahead(ahead, check.rate) {
                Ok(after) => afters.push(after),
                Err(refused) => return refused,
            }
        }
        for (check, after) in checks.iter().zip(&afters) {
            tats.insert(check.key.clone(), now + *after);
        }
        tightest(
            checks
                .iter()
                .zip(afters)
                .map(|(check, after)| allowed(after, check.rate)),
        )
    }
}

/// Of several allowed decisions, the one with the fewest requests left: the
/// one the headers should describe.
pub(super) fn tightest(decisions: impl Iterator<Item = Decision>) -> Decision {
    decisions
        .min_by_key(|decision| decision.remaining)
        .unwrap_or(Decision::UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, limit: u32, secs: u64) -> Check {
        Check {
            key: key.to_owned(),
            rate: Rate {
                limit,
                period: Duration::from_secs(secs),
            },
        }
    }

    #[test]
    fn a_full_bucket_allows_exactly_the_limit_then_says_when_to_retry() {
        let limiter = LocalLimiter::default();
        let checks = [check("user:1", 3, 60)];
        let remaining: Vec<u32> = (0..3).map(|_| limiter.check(&checks).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&checks);
        assert!(!refused.allowed);
        // One request's worth (20 s) frees up after the interval, less the
        // moment that has passed since the first request.
        assert!(refused.retry_after <= Duration::from_secs(20));
        assert!(refused.retry_after > Duration::from_secs(19));
        assert!(refused.reset > Duration::from_secs(59));
        // Another key has its own bucket.
        assert!(limiter.check(&[check("user:2", 3, 60)]).allowed);
    }

    #[test]
    fn a_refusal_by_one_limit_consumes_none_of_the_others() {
        let limiter = LocalLimiter::default();
        let general = check("user:1", 10, 60);
        let chat = check("chat:1", 1, 60);
        assert!(limiter.check(&[general.clone(), chat.clone()]).allowed);
        assert!(!limiter.check(&[general.clone(), chat]).allowed);
        // The refused request took nothing from the general bucket: 8 left after this one.
        assert_eq!(limiter.check(&[general]).remaining, 8);
    }
}
