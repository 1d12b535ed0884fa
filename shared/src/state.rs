//! Everything a request needs, built once per process (per cold start on Lambda).

use std::{ops::Deref, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use secrecy::SecretString;
use tokio_util::task::TaskTracker;

use crate::{
    auth::{JwtKeys, KnownAccounts, Passwords, random_bytes},
    chat::{LiveGenerations, Relay},
    config::Settings,
    llm::{self, Provider},
    rate_limit::RateLimiter,
    store::{self, Store},
};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub provider: Arc<dyn Provider>,
    pub jwt: Arc<JwtKeys>,
    pub passwords: Passwords,
    pub limiter: RateLimiter,
    /// Accounts recently seen to exist, so tokens of deleted ones stop working.
    pub accounts: KnownAccounts,
    /// Streaming generations still running, so shutdown can wait for them.
    pub generations: TaskTracker,
    /// Their event logs, which clients follow and reconnect to.
    pub live: LiveGenerations,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = store::connect(&settings.db).await?;
        Self::from_parts(settings, store, llm::from_settings(&settings.llm)?)
    }

    pub fn from_parts(
        settings: &Settings,
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
    ) -> anyhow::Result<Self> {
        let secret = settings.auth.jwt_secret.clone().unwrap_or_else(|| {
            tracing::warn!(
                "JWT_SECRET is not set: using a random key, so tokens stop working when this process stops"
            );
            generated_secret()
        });
        let generations = TaskTracker::new();
        Ok(Self(Arc::new(Inner {
            settings: settings.clone(),
            store,
            provider,
            jwt: Arc::new(JwtKeys::new(&secret, settings.auth.access_token_ttl)),
            passwords: Passwords::new(settings.auth.bcrypt_cost),
            live: LiveGenerations::new(relay(settings)?, generations.clone()),
            generations,
            limiter: RateLimiter::new(&settings.limits)?,
            accounts: KnownAccounts::default(),
        })))
    }
}

/// With Redis, generations are followed and stopped from any instance.
fn relay(settings: &Settings) -> anyhow::Result<Option<Relay>> {
    let Some(url) = &settings.limits.redis_url else {
        return Ok(None);
    };
    Relay::new(url, &settings.limits.redis_key_prefix, settings.llm.timeout).map(Some)
}

fn generated_secret() -> SecretString {
    SecretString::from(STANDARD.encode(random_bytes::<48>()))
}
