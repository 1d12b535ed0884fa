//! Generations in progress, and for a while after they end, each as a log of
//! its events that any number of clients follow: the client that started it,
//! the same client reconnecting with `Last-Event-ID`, another tab. A generation
//! belongs to no connection; each follower reads the log at its own pace, so a
//! slow one holds nothing up.
//!
//! This is the in-process log: it serves the instance the generation runs on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{Stream, stream};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::GenerationEvent;
use crate::auth::{hex, random_bytes};

/// How long a finished generation can still be replayed.
pub const KEPT_AFTER_END: Duration = Duration::from_secs(300);

/// Every generation this instance is running or has recently finished.
#[derive(Default)]
pub struct LiveGenerations {
    by_id: Mutex<HashMap<String, Arc<Generation>>>,
}

impl LiveGenerations {
    /// A new, empty generation for a question stored in `session_id`.
    pub fn start(&self, user_id: i64, session_id: i64) -> Arc<Generation> {
        // Unguessable, though every route also checks the generation is the caller's.
        let id = hex(&random_bytes::<16>());
        let generation = Arc::new(Generation {
            id: id.clone(),
            user_id,
            session_id,
            log: Mutex::new(Log::default()),
            length: watch::Sender::new(0),
            followers: watch::Sender::new(0),
            stop: CancellationToken::new(),
        });
        let mut by_id = self.lock();
        forget_expired(&mut by_id);
        by_id.insert(id, generation.clone());
        generation
    }

    /// The generation, if it is running or ended less than `KEPT_AFTER_END` ago.
    pub fn find(&self, id: &str) -> Option<Arc<Generation>> {
        let mut by_id = self.lock();
        forget_expired(&mut by_id);
        by_id.get(id).cloned()
    }

    /// The id of the generation still running in a session, if any.
    pub fn running_in(&self, session_id: i64) -> Option<String> {
        self.lock()
            .values()
            .find(|generation| generation.session_id == session_id && !generation.has_ended())
            .map(|generation| generation.id.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Generation>>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn forget_expired(by_id: &mut HashMap<String, Arc<Generation>>) {
    by_id.retain(|_, generation| {
        generation
            .ended_at()
            .is_none_or(|ended| ended.elapsed() < KEPT_AFTER_END)
    });
}

pub struct Generation {
    pub id: String,
    pub user_id: i64,
    pub session_id: i64,
    log: Mutex<Log>,
    /// How many events the log holds; followers wait on it.
    length: watch::Sender<usize>,
    /// How many clients follow the generation right now.
    followers: watch::Sender<usize>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Log {
    events: Vec<GenerationEvent>,
    ended_at: Option<Instant>,
}

impl Generation {
    /// Appends an event; `Done` and `Error` end the log.
    pub fn publish(&self, event: GenerationEvent) {
        let length = {
            let mut log = self.log();
            if log.ended_at.is_some() {
                return;
            }
            if event.is_last() {
                log.ended_at = Some(Instant::now());
            }
            log.events.push(event);
            log.events.len()
        };
        self.length.send_replace(length);
    }

    /// The events after the first `after`, as (sequence number from 1, event),
    /// then each new one as it is published, until the last. The follower
    /// counts as one from this call until the stream is dropped.
    pub fn follow(
        self: &Arc<Self>,
        after: usize,
    ) -> impl Stream<Item = (usize, GenerationEvent)> + Send + 'static {
        let follower = Follower::new(self.clone());
        let length = self.length.subscribe();
        stream::unfold(
            (follower, length, after),
            |(follower, mut length, next)| async move {
                loop {
                    let (event, ended) = {
                        let log = follower.generation.log();
                        (log.events.get(next).cloned(), log.ended_at.is_some())
                    };
                    if let Some(event) = event {
                        return Some(((next + 1, event), (follower, length, next + 1)));
                    }
                    // Nothing to read: the log has ended, or the next event is
                    // still to come. Either way the sender outlives this Arc.
                    if ended || length.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }

    /// Asks the generation to stop; it stores what it has and ends with `Done`.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn stop_requested(&self) -> &CancellationToken {
        &self.stop
    }

    /// Resolves when no client follows the generation any more.
    pub async fn deserted(&self) {
        let mut followers = self.followers.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = followers.wait_for(|count| *count == 0).await;
    }

    /// The last event, once the generation has ended.
    pub async fn ended(&self) -> GenerationEvent {
        let mut length = self.length.subscribe();
        loop {
            if let Some(last) = self.log().events.last().filter(|event| event.is_last()) {
                return last.clone();
            }
            if length.changed().await.is_err() {
                // Unreachable while `self` is borrowed: the sender is ours.
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn has_ended(&self) -> bool {
        self.ended_at().is_some()
    }

    fn ended_at(&self) -> Option<Instant> {
        self.log().ended_at
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts a follower while it exists.
struct Follower {
    generation: Arc<Generation>,
}

impl Follower {
    fn new(generation: Arc<Generation>) -> Self {
        generation.followers.send_modify(|count| *count += 1);
        Self { generation }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.generation
            .followers
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}
