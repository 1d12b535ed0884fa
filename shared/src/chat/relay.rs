//! A generation's log kept in Redis as well (with `REDIS_URL`), so that a
//! reconnect, a second client or a stop that lands on another instance (another
//! server process, another Lambda execution environment) is served as it would
//! be on the instance running the generation.
//!
//! The running instance writes; others only read, and ask through Redis:
//! - `generation:ID` is a Redis Stream of the events, entry `0-SEQUENCE` for
//!   the event numbered SEQUENCE, so a `Last-Event-ID` is a stream position;
//! - `generation:ID:owner` holds its user and session, `session:ID:generation`
//!   the generation running in a session;
//! - `generation:ID:stop` is set by a stop elsewhere, `generation:ID:followers`
//!   counts the clients following elsewhere (for `STREAM_ON_DISCONNECT=cancel`).
//!
//! The writer sends each batch of events in one script call, which also reads
//! the stop flag and the followers elsewhere; with no events it polls every
//! `POLL`. Everything expires: `running_ttl` after the last write while running
//! (the provider's timeout bounds a generation), `KEPT_AFTER_END` after the end.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::{Stream, stream};
use redis::{
    AsyncConnectionConfig, Script,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::mpsc;

use super::{
    live::{Generation, KEPT_AFTER_END},
    wire::{Kind, WireEvent},
};

/// How soon a stop or a follower elsewhere is seen while no event is written.
const POLL: Duration = Duration::from_millis(250);
/// A follower elsewhere waits this long in one `XREAD`, then checks the
/// generation still exists (its instance may have died).
const BLOCK: Duration = Duration::from_secs(5);
/// Redis answers these commands in well under a millisecond nearby; a batch of
/// events may be large, so writes get more than the rate limiter's 250 ms.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Registering a new generation delays its first event, so Redis gets less.
const REGISTER_TIMEOUT: Duration = Duration::from_millis(250);
/// Events read per round trip by a follower elsewhere.
const BATCH: usize = 512;
/// Once the generation has ended, the writer gives up on Redis after this
/// many failed attempts in a row (`POLL` apart).
const ATTEMPTS_AFTER_END: u32 = 20;
/// How long a stop elsewhere waits for the running instance to confirm it.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// KEYS: events, owner, session pointer, stop flag, followers elsewhere.
/// ARGV: user, session, generation id, ttl in ms, 1 when ended, then
/// (sequence, kind, data) for each event. Entries already written (a retry
/// after a lost reply) are skipped, so a batch can be sent again safely.
/// Returns {stop requested, followers elsewhere}.
const APPEND: &str = r"
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local written = 0
if top[1] then written = tonumber(string.match(top[1][1], '%-(%d+)$')) end
for i = 6, #ARGV, 3 do
  local sequence = tonumber(ARGV[i])
  if sequence > written then
    redis.call('XADD', KEYS[1], '0-' .. sequence, 'kind', ARGV[i + 1], 'data', ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[2], 'user', ARGV[1], 'session', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[5] == '1' then
  if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
else
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
end
return {redis.call('EXISTS', KEYS[4]), tonumber(redis.call('GET', KEYS[5]) or '0')}
";

pub struct Relay {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    /// How long a running generation's keys outlive its last write.
    running_ttl: Duration,
    append: Script,
}

struct Keys {
    events: String,
    owner: String,
    stop: String,
    followers: String,
}

impl Relay {
    /// Connects lazily, like the rate limiter: a server whose Redis is down at
    /// start still starts.
    pub fn new(
        url: &SecretString,
        prefix: &str,
        longest_generation: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url.expose_secret())
            .context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("creating the Redis connection")?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
            running_ttl: longest_generation + KEPT_AFTER_END,
            append: Script::new(APPEND),
        })
    }

    fn keys(&self, generation_id: &str) -> Keys {
        let events = format!("{}generation:{generation_id}", self.prefix);
        Keys {
            owner: format!("{events}:owner"),
            stop: format!("{events}:stop"),
            followers: format!("{events}:followers"),
            events,
        }
    }

    fn pointer(&self, session_id: i64) -> String {
        format!("{}session:{session_id}:generation", self.prefix)
    }

    /// Makes a new generation known to every instance before its first event
    /// reaches a client, so a client holding `start` can find it anywhere.
    /// Should Redis fail, the generation is served here only.
    pub(super) async fn register(&self, generation: &Generation) {
        let keys = self.keys(&generation.id);
        let ttl = millis(self.running_ttl);
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &keys.owner,
                &[
                    ("user", generation.user_id),
                    ("session", generation.session_id),
                ],
            )
            .ignore()
            .pexpire(&keys.owner, ttl)
            .ignore()
            .cmd("SET")
            .arg(self.pointer(generation.session_id))
            .arg(&generation.id)
            .arg("PX")
            .arg(ttl)
            .ignore();
        let registration = pipe.query_async::<()>(&mut connection);
        let failure = match tokio::time::timeout(REGISTER_TIMEOUT, registration).await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {REGISTER_TIMEOUT:?}"),
        };
        tracing::warn!(error = %failure, "could not register a generation in Redis: it is followed on this instance only");
    }

    /// Writes a generation's events to Redis as they are published, until the
    /// last; passes on stops and followers from elsewhere. Runs beside the
    /// generation, on the instance running it.
    pub(super) async fn mirror(
        &self,
        generation: Arc<Generation>,
        mut events: mpsc::UnboundedReceiver<(usize, WireEvent)>,
    ) {
        let keys = self.keys(&generation.id);
        let pointer = self.pointer(generation.session_id);
        let mut pending: Vec<(usize, WireEvent)> = Vec::new();
        let mut publishing = true;
        let mut failures = 0;
        loop {
            if publishing {
                tokio::select! {
                    received = events.recv() => match received {
                        Some(event) => {
                            pending.push(event);
                            while let Ok(event) = events.try_recv() {
                                pending.push(event);
                            }
                        }
                        None => publishing = false,
                    },
                    () = tokio::time::sleep(POLL) => {}
                }
            } else if pending.is_empty() || failures > ATTEMPTS_AFTER_END {
                break;
            } else {
                tokio::time::sleep(POLL).await;
            }
            let ended = pending.last().is_some_and(|(_, event)| event.is_last());
            let ttl = if ended {
                KEPT_AFTER_END
            } else {
                self.running_ttl
            };
            let mut call = self.append.prepare_invoke();
            call.key(&keys.events)
                .key(&keys.owner)
                .key(&pointer)
                .key(&keys.stop)
                .key(&keys.followers)
                .arg(generation.user_id)
                .arg(generation.session_id)
                .arg(&generation.id)
                .arg(millis(ttl))
                .arg(u8::from(ended));
            for (sequence, event) in &pending {
                call.arg(*sequence)
                    .arg(event.kind.as_str())
                    .arg(event.data.as_ref());
            }
            let mut connection = self.connection.clone();
            match call.invoke_async::<(bool, i64)>(&mut connection).await {
                Ok((stop, elsewhere)) => {
                    failures = 0;
                    pending.clear();
                    if stop {
                        generation.stop();
                    }
                    generation.set_followers_elsewhere(elsewhere);
                    if ended {
                        break;
                    }
                }
                Err(err) => {
                    if failures == 0 {
                        tracing::warn!(error = %err, "could not write a generation's events to Redis; retrying");
                    }
                    failures += 1;
                    if ended {
                        // Retried meanwhile, but clients here need not wait for it.
                        generation.mark_mirrored();
                    }
                }
            }
        }
        generation.mark_mirrored();
    }

    /// A generation running or recently ended on any instance.
    pub async fn find(self: &Arc<Self>, generation_id: &str) -> anyhow::Result<Option<Remote>> {
        let keys = self.keys(generation_id);
        let mut connection = self.connection.clone();
        let (user_id, session_id): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(&keys.owner)
            .arg("user")
            .arg("session")
            .query_async(&mut connection)
            .await
            .context("reading a generation's owner from Redis")?;
        Ok(user_id.zip(session_id).map(|(user_id, session_id)| Remote {
            relay: self.clone(),
            id: generation_id.to_owned(),
            user_id,
            session_id,
            keys,
        }))
    }

    /// The generation running in a session, on any instance.
    pub async fn running_in(&self, session_id: i64) -> anyhow::Result<Option<String>> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(self.pointer(session_id))
            .query_async(&mut connection)
            .await
            .context("reading a session's generation from Redis")
    }
}

/// A generation known through Redis, running on some instance.
pub struct Remote {
    relay: Arc<Relay>,
    pub id: String,
    pub user_id: i64,
    pub session_id: i64,
    keys: Keys,
}

impl Remote {
    /// Like `Generation::follow`: the events after `after`, then the new ones,
    /// until the last. The follower is counted (in Redis) until the stream is
    /// dropped. Should Redis fail midway the stream ends early, and the client
    /// reconnects with `Last-Event-ID` as after any dropped connection.
    pub async fn follow(
        self,
        after: usize,
    ) -> anyhow::Result<impl Stream<Item = (usize, WireEvent)> + Send + 'static> {
        let mut connection = self.relay.connection.clone();
        let (): () = redis::pipe()
            .incr(&self.keys.followers, 1)
            .ignore()
            .pexpire(&self.keys.followers, millis(self.relay.running_ttl))
            .ignore()
            .query_async(&mut connection)
            .await
            .context("counting a follower in Redis")?;
        let counted = CountedFollower {
            relay: self.relay.clone(),
            key: self.keys.followers.clone(),
        };
        self.read(after, Some(counted)).await
    }

    /// Asks the instance running the generation to stop it, and waits for its
    /// last event.
    pub async fn stop(self) -> anyhow::Result<WireEvent> {
        let mut connection = self.relay.connection.clone();
        let (): () = redis::cmd("SET")
            .arg(&self.keys.stop)
            .arg(1)
            .arg("PX")
            .arg(millis(self.relay.running_ttl))
            .query_async(&mut connection)
            .await
            .context("asking for a stop through Redis")?;
        let top: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(&self.keys.events)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .context("reading a generation's last event from Redis")?;
        let written = top.first().and_then(|(id, _)| sequence_of(id)).unwrap_or(1);
        let events = self.read(written.saturating_sub(1), None).await?;
        let last = async {
            futures::pin_mut!(events);
            let mut last = None;
            while let Some((_, event)) = futures::StreamExt::next(&mut events).await {
                last = Some(event);
            }
            last.filter(WireEvent::is_last)
        };
        tokio::time::timeout(STOP_WAIT, last)
            .await
            .ok()
            .flatten()
            .context("the instance running the generation did not confirm the stop")
    }

    /// Reads on a connection of its own: `XREAD BLOCK` holds its connection.
    async fn read(
        self,
        after: usize,
        counted: Option<CountedFollower>,
    ) -> anyhow::Result<impl Stream<Item = (usize, WireEvent)> + Send + 'static> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(BLOCK + TIMEOUT));
        let connection = self
            .relay
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting to Redis to follow a generation")?;
        let reader = Reader {
            keys: self.keys,
            connection,
            after,
            buffered: VecDeque::new(),
            ended: false,
            _counted: counted,
        };
        Ok(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await?;
            Some((next, reader))
        }))
    }
}

struct Reader {
    keys: Keys,
    connection: MultiplexedConnection,
    after: usize,
    buffered: VecDeque<(usize, WireEvent)>,
    ended: bool,
    _counted: Option<CountedFollower>,
}

/// `XREAD`'s reply: per stream, its name and its entries (id, field-value list).
type Entries = Vec<(String, Vec<(String, Vec<String>)>)>;

impl Reader {
    async fn next(&mut self) -> Option<(usize, WireEvent)> {
        loop {
            if let Some((sequence, event)) = self.buffered.pop_front() {
                self.ended = event.is_last();
                return Some((sequence, event));
            }
            if self.ended {
                return None;
            }
            let reply: redis::RedisResult<Option<Entries>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(millis(BLOCK))
                .arg("STREAMS")
                .arg(&self.keys.events)
                .arg(format!("0-{}", self.after))
                .query_async(&mut self.connection)
                .await;
            match reply {
                Ok(Some(streams)) => {
                    for (_, entries) in streams {
                        for (id, fields) in entries {
                            let Some(entry) = sequence_of(&id).zip(event_of(&fields)) else {
                                tracing::warn!(%id, "skipping a malformed generation event in Redis");
                                continue;
                            };
                            self.after = entry.0;
                            self.buffered.push_back(entry);
                        }
                    }
                }
                // Nothing new within `BLOCK`: go on while the generation exists.
                Ok(None) => {
                    let exists: redis::RedisResult<bool> = redis::cmd("EXISTS")
                        .arg(&self.keys.owner)
                        .query_async(&mut self.connection)
                        .await;
                    if !exists.unwrap_or(false) {
                        return None;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "lost Redis while following a generation");
                    return None;
                }
            }
        }
    }
}

/// Counts a follower elsewhere in Redis while it exists.
struct CountedFollower {
    relay: Arc<Relay>,
    key: String,
}

impl Drop for CountedFollower {
    fn drop(&mut self) {
        let mut connection = self.relay.connection.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let decremented: redis::RedisResult<i64> = redis::cmd("DECR")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await;
                if let Err(err) = decremented {
                    tracing::warn!(error = %err, "could not uncount a follower in Redis");
                }
            });
        }
    }
}

fn sequence_of(entry_id: &str) -> Option<usize> {
    entry_id.strip_prefix("0-")?.parse().ok()
}

fn event_of(fields: &[String]) -> Option<WireEvent> {
    let field = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str())
    };
    Some(WireEvent {
        kind: Kind::parse(field("kind")?)?,
        data: field("data")?.into(),
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
