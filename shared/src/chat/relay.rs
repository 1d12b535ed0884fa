//! A generation's log kept in Redis as well (with `REDIS_URL`), so that a
//! reconnect, a second client or a stop that lands on another instance (another
//! server process, another Lambda execution environment) is served as it would
//! be on the instance running the generation.
//!
//! The running instance writes; others only read, and ask through Redis. A
//! generation's keys share the hash tag `{ID}`, so each script touches one slot:
//! - `generation:{ID}` is a Redis Stream of the events, entry `0-SEQUENCE` for
//!   the event numbered SEQUENCE, so a `Last-Event-ID` is a stream position;
//! - `generation:{ID}:owner` holds its user and session, and once it has ended
//!   the number of its last event;
//! - `generation:{ID}:alive` exists while the running instance is (a heartbeat
//!   of `ALIVE`), so followers elsewhere notice an instance that died;
//! - `generation:{ID}:stop` is set by a stop elsewhere;
//! - `generation:{ID}:followers` holds the clients following elsewhere, each
//!   until it renews or leaves (for `STREAM_ON_DISCONNECT=cancel`);
//! - `session:N:generation` names the generation running in a session.
//!
//! The writer sends each batch of events in one script call, which also reads
//! the stop flag and counts the followers elsewhere; with no events it polls
//! every `POLL`. Everything expires: `running_ttl` after the last write while
//! running (the provider's timeout bounds a generation), `KEPT_AFTER_END` after
//! the end.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{Stream, stream};
use redis::{
    AsyncConnectionConfig, Script,
    aio::{ConnectionManager, MultiplexedConnection},
};
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::{
    live::{Generation, KEPT_AFTER_END},
    wire::{Kind, WireEvent},
};
use crate::{
    auth::{hex, random_bytes},
    redis_connection,
};

/// How soon a stop or a follower elsewhere is seen while no event is written.
const POLL: Duration = Duration::from_millis(250);
/// How long the heartbeat outlives the running instance's last write.
const ALIVE: Duration = Duration::from_secs(2);
/// A follower elsewhere waits this long in one `XREAD`, then checks the
/// generation still runs somewhere.
const BLOCK: Duration = Duration::from_secs(2);
/// A follower elsewhere counts this long after it last renewed (each `BLOCK`).
const FOLLOWER_LEASE: Duration = Duration::from_secs(10);
/// Redis answers these commands in well under a millisecond nearby; a batch of
/// events may be large, and the first call of a cold Lambda connects (TLS), so
/// they get more than the rate limiter's 250 ms.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Events read per round trip by a follower elsewhere.
const BATCH: usize = 512;
/// Once the generation has ended, the writer gives up on Redis after this
/// many failed attempts in a row (`POLL` apart).
const ATTEMPTS_AFTER_END: u32 = 20;
/// How long a stop elsewhere waits for the running instance to confirm it.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Redis's clock in milliseconds, the same for every instance.
const NOW: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
";

/// KEYS: events, owner, stop flag, followers, heartbeat. ARGV: user, session,
/// ttl in ms, heartbeat in ms, 1 when ended, then (sequence, kind, data) for
/// each event. Entries already written (a retry after a lost reply) are
/// skipped, so a batch can be sent again safely. Returns {stop requested,
/// followers elsewhere}.
const APPEND: &str = r"
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local written = 0
if top[1] then written = tonumber(string.match(top[1][1], '%-(%d+)$')) end
for i = 6, #ARGV, 3 do
  local sequence = tonumber(ARGV[i])
  if sequence > written then
    redis.call('XADD', KEYS[1], '0-' .. sequence, 'kind', ARGV[i + 1], 'data', ARGV[i + 2])
    written = sequence
  end
end
redis.call('HSET', KEYS[2], 'user', ARGV[1], 'session', ARGV[2])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[2], 'last', written)
  redis.call('DEL', KEYS[5])
else
  redis.call('SET', KEYS[5], 1, 'PX', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
return {redis.call('EXISTS', KEYS[3]), redis.call('ZCARD', KEYS[4])}
";

/// KEYS: followers. ARGV: this follower, its lease in ms, the key's ttl in ms.
const RENEW: &str = r"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// KEYS: a session's pointer. ARGV: the generation that ended.
const CLEAR_POINTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct Relay {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    /// How long a running generation's keys outlive its last write.
    running_ttl: Duration,
    append: Script,
    renew: Script,
    clear_pointer: Script,
}

struct Keys {
    events: String,
    owner: String,
    stop: String,
    followers: String,
    alive: String,
}

impl Relay {
    /// Connects lazily, like the rate limiter: a server whose Redis is down at
    /// start still starts.
    pub fn new(
        url: &SecretString,
        prefix: &str,
        longest_generation: Duration,
    ) -> anyhow::Result<Self> {
        let (client, connection) = redis_connection::lazy(url, TIMEOUT)?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
            running_ttl: longest_generation + KEPT_AFTER_END,
            append: Script::new(&format!("{NOW}{APPEND}")),
            renew: Script::new(&format!("{NOW}{RENEW}")),
            clear_pointer: Script::new(CLEAR_POINTER),
        })
    }

    fn keys(&self, generation_id: &str) -> Keys {
        let events = format!("{}generation:{{{generation_id}}}", self.prefix);
        Keys {
            owner: format!("{events}:owner"),
            stop: format!("{events}:stop"),
            followers: format!("{events}:followers"),
            alive: format!("{events}:alive"),
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
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &keys.owner,
            &[
                ("user", generation.user_id),
                ("session", generation.session_id),
            ],
        )
        .ignore()
        .pexpire(&keys.owner, ttl)
        .ignore()
        .pset_ex(&keys.alive, 1, millis(ALIVE).unsigned_abs())
        .ignore()
        .cmd("SET")
        .arg(self.pointer(generation.session_id))
        .arg(&generation.id)
        .arg("PX")
        .arg(ttl)
        .ignore();
        let mut connection = self.connection.clone();
        if let Err(err) = pipe.query_async::<()>(&mut connection).await {
            tracing::warn!(error = %err, "could not register a generation in Redis: it is followed on this instance only");
        }
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
        let mut pending: Vec<(usize, WireEvent)> = Vec::new();
        let mut failures = 0;
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Some(event) => {
                        pending.push(event);
                        while let Ok(event) = events.try_recv() {
                            pending.push(event);
                        }
                    }
                    // The generation is gone without a last event (it panicked).
                    None if pending.is_empty() => break,
                    None => tokio::time::sleep(POLL).await,
                },
                () = tokio::time::sleep(POLL) => {}
            }
            let ended = pending.last().is_some_and(|(_, event)| event.is_last());
            match self.append(&generation, &keys, &pending, ended).await {
                Ok((stop, elsewhere)) => {
                    failures = 0;
                    pending.clear();
                    if stop {
                        generation.stop();
                    }
                    generation.set_followers_elsewhere(elsewhere);
                    if ended {
                        self.clear_pointer(&generation).await;
                        break;
                    }
                }
                Err(err) => {
                    if failures == 0 {
                        tracing::warn!(error = %err, "could not write a generation's events to Redis; retrying");
                    }
                    failures += 1;
                    if ended {
                        // Clients here need not wait for Redis to come back.
                        generation.mark_mirrored();
                        if failures > ATTEMPTS_AFTER_END {
                            tracing::warn!("gave up writing a generation's end to Redis");
                            break;
                        }
                    }
                }
            }
        }
        generation.mark_mirrored();
    }

    async fn append(
        &self,
        generation: &Generation,
        keys: &Keys,
        events: &[(usize, WireEvent)],
        ended: bool,
    ) -> redis::RedisResult<(bool, i64)> {
        let ttl = if ended {
            KEPT_AFTER_END
        } else {
            self.running_ttl
        };
        let mut call = self.append.prepare_invoke();
        call.key(&keys.events)
            .key(&keys.owner)
            .key(&keys.stop)
            .key(&keys.followers)
            .key(&keys.alive)
            .arg(generation.user_id)
            .arg(generation.session_id)
            .arg(millis(ttl))
            .arg(millis(ALIVE))
            .arg(u8::from(ended));
        for (sequence, event) in events {
            call.arg(*sequence)
                .arg(event.kind.as_str())
                .arg(event.data.as_ref());
        }
        let mut connection = self.connection.clone();
        call.invoke_async(&mut connection).await
    }

    async fn clear_pointer(&self, generation: &Generation) {
        let mut connection = self.connection.clone();
        let cleared: redis::RedisResult<i64> = self
            .clear_pointer
            .key(self.pointer(generation.session_id))
            .arg(&generation.id)
            .invoke_async(&mut connection)
            .await;
        if let Err(err) = cleared {
            // It expires by itself; meanwhile the session names an ended generation.
            tracing::warn!(error = %err, "could not clear a session's generation in Redis");
        }
    }

    /// A generation running or recently ended on any instance. One whose
    /// instance died before it ended is gone: nothing more will come of it.
    pub async fn find(self: &Arc<Self>, generation_id: &str) -> anyhow::Result<Option<Remote>> {
        let keys = self.keys(generation_id);
        let mut connection = self.connection.clone();
        let ((user_id, session_id, last), alive): (Owner, bool) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.owner)
            .arg("user")
            .arg("session")
            .arg("last")
            .exists(&keys.alive)
            .query_async(&mut connection)
            .await
            .context("reading a generation's owner from Redis")?;
        if last.is_none() && !alive {
            return Ok(None);
        }
        Ok(user_id.zip(session_id).map(|(user_id, session_id)| Remote {
            relay: self.clone(),
            id: generation_id.to_owned(),
            user_id,
            session_id,
            keys,
        }))
    }

    /// The generation running in a session, on any live instance.
    pub async fn running_in(&self, session_id: i64) -> anyhow::Result<Option<String>> {
        let mut connection = self.connection.clone();
        let id: Option<String> = redis::cmd("GET")
            .arg(self.pointer(session_id))
            .query_async(&mut connection)
            .await
            .context("reading a session's generation from Redis")?;
        let Some(id) = id else {
            return Ok(None);
        };
        let alive: bool = redis::cmd("EXISTS")
            .arg(self.keys(&id).alive)
            .query_async(&mut connection)
            .await
            .context("reading a generation's heartbeat from Redis")?;
        Ok(alive.then_some(id))
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
    /// until the last. The follower counts (in Redis) while it reads. Should
    /// Redis fail, or the running instance die, the stream ends early, and the
    /// client reconnects with `Last-Event-ID` as after any dropped connection.
    pub async fn follow(
        self,
        after: usize,
    ) -> anyhow::Result<impl Stream<Item = (usize, WireEvent)> + Send + 'static> {
        let follower = hex(&random_bytes::<8>());
        self.read(after, Some(follower)).await
    }

    /// Asks the instance running the generation to stop it, and waits for its
    /// last event; `None` if that instance died first.
    pub async fn stop(self) -> anyhow::Result<Option<WireEvent>> {
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
            .context("the instance running the generation did not confirm the stop")
    }

    /// Reads on a connection of its own: `XREAD BLOCK` holds its connection.
    async fn read(
        self,
        after: usize,
        follower: Option<String>,
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
        let mut reader = Reader {
            relay: self.relay,
            keys: self.keys,
            connection,
            after,
            buffered: VecDeque::new(),
            ended: false,
            follower,
            renewed_at: None,
        };
        // A reconnect after the last event (EventSource does so) ends at once.
        reader.ended = reader.over().await;
        Ok(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await?;
            Some((next, reader))
        }))
    }
}

struct Reader {
    relay: Arc<Relay>,
    keys: Keys,
    connection: MultiplexedConnection,
    after: usize,
    buffered: VecDeque<(usize, WireEvent)>,
    ended: bool,
    /// This follower's name in the generation's followers, when it counts.
    follower: Option<String>,
    renewed_at: Option<Instant>,
}

/// A generation's owner hash: user, session, and its last event once ended.
type Owner = (Option<i64>, Option<i64>, Option<usize>);

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
            if let Err(err) = self.renew().await {
                tracing::warn!(error = %err, "lost Redis while following a generation");
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
                    for (id, fields) in streams.into_iter().flat_map(|(_, entries)| entries) {
                        let Some(sequence) = sequence_of(&id) else {
                            continue;
                        };
                        self.after = sequence;
                        match event_of(&fields) {
                            Some(event) => self.buffered.push_back((sequence, event)),
                            None => {
                                tracing::warn!(%id, "skipped a generation event of an unknown kind")
                            }
                        }
                    }
                }
                // Nothing new within `BLOCK`: go on while it runs somewhere.
                Ok(None) => self.ended = self.over().await,
                Err(err) => {
                    tracing::warn!(error = %err, "lost Redis while following a generation");
                    return None;
                }
            }
        }
    }

    /// Whether nothing more will come: the generation has expired, its last
    /// event has been read, or the instance running it has died.
    async fn over(&mut self) -> bool {
        let state: redis::RedisResult<(Option<usize>, bool, bool)> = redis::pipe()
            .hget(&self.keys.owner, "last")
            .exists(&self.keys.owner)
            .exists(&self.keys.alive)
            .query_async(&mut self.connection)
            .await;
        match state {
            Ok((last, owned, alive)) => !owned || last.map_or(!alive, |last| self.after >= last),
            Err(_) => true,
        }
    }

    /// Renews this follower's lease, at most once per `BLOCK`.
    async fn renew(&mut self) -> redis::RedisResult<()> {
        let Some(follower) = &self.follower else {
            return Ok(());
        };
        if self.renewed_at.is_some_and(|at| at.elapsed() < BLOCK) {
            return Ok(());
        }
        self.renewed_at = Some(Instant::now());
        let _: i64 = self
            .relay
            .renew
            .key(&self.keys.followers)
            .arg(follower)
            .arg(millis(FOLLOWER_LEASE))
            .arg(millis(self.relay.running_ttl))
            .invoke_async(&mut self.connection)
            .await?;
        Ok(())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(follower) = self.follower.take() else {
            return;
        };
        let mut connection = self.relay.connection.clone();
        let key = std::mem::take(&mut self.keys.followers);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let removed: redis::RedisResult<i64> = redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&follower)
                    .query_async(&mut connection)
                    .await;
                if let Err(err) = removed {
                    // Its lease runs out by itself.
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
