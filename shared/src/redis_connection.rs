//! The one way this crate opens `REDIS_URL`, for the rate limiter and the
//! streaming relay alike.

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret as _, SecretString};

/// The client, and a shared connection whose commands fail after `timeout`.
/// It connects lazily: a server whose Redis is down at start still starts.
pub fn lazy(
    url: &SecretString,
    timeout: Duration,
) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client =
        redis::Client::open(url.expose_secret()).context("REDIS_URL is not a valid Redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .context("creating the Redis connection")?;
    Ok((client, connection))
}
