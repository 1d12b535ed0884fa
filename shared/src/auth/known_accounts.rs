//! Which accounts a valid token may still act for.
//!
//! A token is signed for 15 minutes (by default) and says nothing about
//! whether its account still exists. Looking the account up on every request
//! would cost a store read each time; instead each process remembers the
//! accounts it has seen exist for `REMEMBER_FOR`, so a deleted account's
//! tokens stop working within that time, and a busy user costs one read a
//! minute.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{error::ApiError, store::Store};

const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Past this many entries, expired ones are dropped before adding another.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Default)]
pub struct KnownAccounts {
    seen: Mutex<HashMap<i64, Instant>>,
}

impl KnownAccounts {
    /// `Unauthorized` when the account no longer exists.
    pub async fn ensure_exists(&self, user_id: i64, store: &dyn Store) -> Result<(), ApiError> {
        let now = Instant::now();
        if self.lock().get(&user_id).is_some_and(|until| *until > now) {
            return Ok(());
        }
        if store.find_user(user_id).await?.is_none() {
            self.lock().remove(&user_id);
            tracing::debug!(user_id, "a valid token for an account that does not exist");
            return Err(ApiError::Unauthorized);
        }
        let mut seen = self.lock();
        if seen.len() > SWEEP_ABOVE {
            seen.retain(|_, until| *until > now);
        }
        seen.insert(user_id, now + REMEMBER_FOR);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
