//! Generations in progress, and for a while after they end, each as a log of
//! its events that any number of clients follow: the client that started it,
//! the same client reconnecting with `Last-Event-ID`, another tab. A generation
//! belongs to no connection; each follower reads the log at its own pace, so a
//! slow one holds nothing up.
//!
//! The log lives in the instance running the generation. With `REDIS_URL` it
//! is also written to Redis (`relay.rs`), and a generation this instance does
//! not know is looked for there: the one running it may be another.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{Stream, StreamExt as _, stream};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{GenerationEvent, relay::Relay, relay::Remote, wire::WireEvent};
use crate::auth::{hex, random_bytes};

/// How long a finished generation can still be replayed.
pub const KEPT_AFTER_END: Duration = Duration::from_secs(300);
/// How long the end of a follow waits for the last event to reach Redis. On
/// Lambda the execution environment may freeze once the response ends, so
/// the response outlasts the write.
const MIRROR_WAIT: Duration = Duration::from_secs(5);

/// A stream of events numbered from 1, wherever the log is.
pub type Events = Pin<Box<dyn Stream<Item = (usize, WireEvent)> + Send>>;

/// Every generation this instance is running or has recently finished, and
/// (with Redis) the way to those of other instances.
pub struct LiveGenerations {
    by_id: Mutex<HashMap<String, Arc<Generation>>>,
    relay: Option<Arc<Relay>>,
    /// Where the writers to Redis run, so shutdown waits for them too.
    tasks: TaskTracker,
}

/// A generation found by id: on this instance, or through Redis on another.
pub enum Found {
    Here(Arc<Generation>),
    Elsewhere(Remote),
}

impl LiveGenerations {
    pub fn new(relay: Option<Relay>, tasks: TaskTracker) -> Self {
        Self {
            by_id: Mutex::default(),
            relay: relay.map(Arc::new),
            tasks,
        }
    }

    /// A new, empty generation for a question stored in `session_id`.
    pub async fn start(&self, user_id: i64, session_id: i64) -> Arc<Generation> {
        // Unguessable, though every route also checks the generation is the caller's.
        let id = hex(&random_bytes::<16>());
        let (mirror, mirrored) = match &self.relay {
            Some(_) => {
                let (sender, receiver) = mpsc::unbounded_channel();
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let generation = Arc::new(Generation {
            id: id.clone(),
            user_id,
            session_id,
            log: Mutex::new(Log::default()),
            length: watch::Sender::new(0),
            followers: watch::Sender::new(Followers::default()),
            stop: CancellationToken::new(),
            mirrored: watch::Sender::new(mirror.is_none()),
            mirror,
        });
        if let (Some(relay), Some(events)) = (&self.relay, mirrored) {
            relay.register(&generation).await;
            let relay = relay.clone();
            let generation = generation.clone();
            self.tasks
                .spawn(async move { relay.mirror(generation, events).await });
        }
        let mut by_id = self.lock();
        forget_expired(&mut by_id);
        by_id.insert(id, generation.clone());
        generation
    }

    /// The generation, if it is running or ended less than `KEPT_AFTER_END`
    /// ago, here or (with Redis) elsewhere.
    pub async fn find(&self, id: &str) -> anyhow::Result<Option<Found>> {
        let here = {
            let mut by_id = self.lock();
            forget_expired(&mut by_id);
            by_id.get(id).cloned()
        };
        match (here, &self.relay) {
            (Some(generation), _) => Ok(Some(Found::Here(generation))),
            (None, Some(relay)) => Ok(relay.find(id).await?.map(Found::Elsewhere)),
            (None, None) => Ok(None),
        }
    }

    /// The id of the generation still running in a session, if any. Redis
    /// failing, it answers for this instance only.
    pub async fn running_in(&self, session_id: i64) -> Option<String> {
        let here = self
            .lock()
            .values()
            .find(|generation| generation.session_id == session_id && !generation.has_ended())
            .map(|generation| generation.id.clone());
        if here.is_some() {
            return here;
        }
        self.relay
            .as_ref()?
            .running_in(session_id)
            .await
            .inspect_err(|err| tracing::warn!(error = %err, "could not ask Redis"))
            .ok()
            .flatten()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Generation>>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Found {
    pub fn user_id(&self) -> i64 {
        match self {
            Self::Here(generation) => generation.user_id,
            Self::Elsewhere(remote) => remote.user_id,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Here(generation) => &generation.id,
            Self::Elsewhere(remote) => &remote.id,
        }
    }

    /// The events after the first `after`, then the new ones, until the last.
    pub async fn follow(self, after: usize) -> anyhow::Result<Events> {
        Ok(match self {
            Self::Here(generation) => generation.follow(after).boxed(),
            Self::Elsewhere(remote) => remote.follow(after).await?.boxed(),
        })
    }

    /// Stops the generation; answers its last event, or `None` if it can no
    /// longer end (the instance running it died).
    pub async fn stop(self) -> anyhow::Result<Option<WireEvent>> {
        match self {
            Self::Here(generation) => {
                generation.stop();
                Ok(Some(generation.ended().await))
            }
            Self::Elsewhere(remote) => remote.stop().await,
        }
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
    followers: watch::Sender<Followers>,
    stop: CancellationToken,
    /// With Redis: each event, numbered, to the writer.
    mirror: Option<mpsc::UnboundedSender<(usize, WireEvent)>>,
    /// Whether Redis holds the log up to its end (always, without Redis).
    mirrored: watch::Sender<bool>,
}

#[derive(Default)]
struct Log {
    events: Vec<WireEvent>,
    ended_at: Option<Instant>,
}

#[derive(Default, Clone, Copy)]
struct Followers {
    here: usize,
    /// As last read from Redis.
    elsewhere: i64,
}

impl Generation {
    /// Appends an event; `Done` and `Error` end the log.
    pub fn publish(&self, event: GenerationEvent) {
        let event = WireEvent::from(event);
        let length = {
            let mut log = self.log();
            if log.ended_at.is_some() {
                return;
            }
            if event.is_last() {
                log.ended_at = Some(Instant::now());
            }
            log.events.push(event.clone());
            log.events.len()
        };
        if let Some(mirror) = &self.mirror {
            // The writer outlives the log's end; if it has gone, so has Redis's copy.
            let _ = mirror.send((length, event));
        }
        self.length.send_replace(length);
    }

    /// The events after the first `after`, as (sequence number from 1, event),
    /// then each new one as it is published, until the last. The follower
    /// counts as one from this call until the stream is dropped.
    pub fn follow(
        self: &Arc<Self>,
        after: usize,
    ) -> impl Stream<Item = (usize, WireEvent)> + Send + 'static {
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
                    if ended {
                        follower.generation.wait_mirrored().await;
                        return None;
                    }
                    // The next event is still to come; the sender outlives this Arc.
                    if length.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }

    /// Asks the generation to stop; it stores what it has and ends with
    /// `Done`. A generation whose question could not be made durable calls
    /// it too, after ending with `Error`, to drop the provider's call.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn stop_requested(&self) -> &CancellationToken {
        &self.stop
    }

    /// Resolves when no client follows the generation any more, here or elsewhere.
    pub async fn deserted(&self) {
        let mut followers = self.followers.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = followers
            .wait_for(|count| count.here == 0 && count.elsewhere <= 0)
            .await;
    }

    pub(super) fn set_followers_elsewhere(&self, elsewhere: i64) {
        self.followers.send_if_modified(|count| {
            let changed = count.elsewhere != elsewhere;
            count.elsewhere = elsewhere;
            changed
        });
    }

    pub(super) fn mark_mirrored(&self) {
        self.mirrored.send_replace(true);
    }

    async fn wait_mirrored(&self) {
        let mut mirrored = self.mirrored.subscribe();
        let _ = tokio::time::timeout(MIRROR_WAIT, mirrored.wait_for(|done| *done)).await;
    }

    /// The last event, once the generation has ended.
    pub async fn ended(&self) -> WireEvent {
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
        generation.followers.send_modify(|count| count.here += 1);
        Self { generation }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.generation
            .followers
            .send_modify(|count| count.here = count.here.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[tokio::test(start_paused = true)]
    async fn a_log_is_kept_five_minutes_after_its_end_and_while_it_runs() {
        let live = LiveGenerations::new(None, TaskTracker::new());
        let ended = live.start(1, 10).await;
        ended.publish(GenerationEvent::Delta("partial".into()));
        ended.publish(GenerationEvent::Error(ApiError::Unauthorized.to_problem()));
        let running = live.start(1, 11).await;
        running.publish(GenerationEvent::Delta("still going".into()));

        tokio::time::advance(KEPT_AFTER_END - Duration::from_secs(1)).await;
        assert!(live.find(&ended.id).await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(live.find(&ended.id).await.unwrap().is_none(), "expired");
        assert!(live.find(&running.id).await.unwrap().is_some());
        assert_eq!(live.running_in(11).await, Some(running.id.clone()));
        assert_eq!(live.running_in(10).await, None);
    }
}
