//! An upstream for the benchmarks, in OpenAI's Chat Completions wire format:
//! POST /v1/chat/completions answers `--tokens` words, plain after
//! `--latency-ms`, or streamed with the first after `--ttft-ms` and the next
//! every `--token-ms`. It does no other work, so its own latency is the floor
//! the API's is compared with. `--jitter-ms J` spreads each plain answer's
//! latency evenly over ±J (the same sequence every run), as a real model's
//! varies; without it, clients that start together stay in step. Its waits
//! are timed to within tens of microseconds (see `Alarms`), not to tokio's
//! whole milliseconds.
//!
//! `upstream --port 9100 --latency-ms 0 --ttft-ms 0 --token-ms 0 --tokens 20`

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    convert::Infallible,
    sync::{
        Arc, Condvar, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::post,
    serve::ListenerExt as _,
};
use bench::Flags;
use futures::{channel::oneshot, stream};
use serde_json::{Value, json};

struct Pace {
    latency: Duration,
    jitter: Duration,
    answered: AtomicU64,
    first_token: Duration,
    between_tokens: Duration,
    tokens: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::from_env();
    let pace = Arc::new(Pace {
        latency: flags.millis("latency-ms", 0),
        jitter: flags.millis("jitter-ms", 0),
        answered: AtomicU64::new(0),
        first_token: flags.millis("ttft-ms", 0),
        between_tokens: flags.millis("token-ms", 0),
        tokens: flags.number("tokens", 20),
    });
    let port = flags.number("port", 9100);
    let router = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(pace);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", u16::try_from(port)?)).await?;
    println!("upstream listening on {}", listener.local_addr()?);
    // A provider sends each token as soon as it has it.
    let listener = listener.tap_io(|connection| {
        let _ = connection.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}

impl Pace {
    /// `latency` ± `jitter`, from a splitmix64 sequence over the answers.
    fn plain_latency(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let mut x = self
            .answered
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        (self.latency + self.jitter).saturating_sub(self.jitter.mul_f64(2.0 * unit))
    }
}

/// Waits `duration` from now; an "instant" upstream does not wait at all.
async fn pause(duration: Duration) {
    if !duration.is_zero() {
        let _ = ALARMS.set(Instant::now() + duration).await;
    }
}

/// tokio's timer counts whole milliseconds and rounds each wait up to the
/// next one, so a 50 ms answer took 50 to 51 ms by when in the millisecond
/// its request arrived (wrk straight at it at 16 connections: 51.3 ms at the
/// median; 50.5 with these alarms), and 5 ms between tokens took 6.4. That
/// error is as large as the overhead the benchmarks measure, and clients in
/// step with the upstream's ticks all land on the same side of it. One
/// thread wakes each waiting answer at its instant instead: a condition
/// variable's timed wait is a futex wait with a nanosecond deadline, late by
/// Linux's timer slack (50 µs) at most.
static ALARMS: LazyLock<Arc<Alarms>> = LazyLock::new(|| {
    let alarms = Arc::new(Alarms::default());
    let ringer = Arc::clone(&alarms);
    std::thread::Builder::new()
        .name("alarms".into())
        .spawn(move || ringer.ring_forever())
        .expect("the alarm thread starts");
    alarms
});

#[derive(Default)]
struct Alarms {
    pending: Mutex<BinaryHeap<Reverse<Alarm>>>,
    earliest_changed: Condvar,
}

struct Alarm {
    at: Instant,
    wake: oneshot::Sender<()>,
}

impl Alarms {
    /// A receiver that the alarm thread wakes at `at`. Not an async fn: the
    /// lock's guard must not be held in a future sent between threads.
    fn set(&self, at: Instant) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        let mut pending = self.pending.lock().expect("nothing panics holding it");
        let earliest = pending.peek().is_none_or(|Reverse(next)| at < next.at);
        pending.push(Reverse(Alarm { at, wake }));
        drop(pending);
        if earliest {
            self.earliest_changed.notify_one();
        }
        woken
    }

    fn ring_forever(&self) {
        let mut pending = self.pending.lock().expect("nothing panics holding it");
        loop {
            let now = Instant::now();
            while pending.peek().is_some_and(|Reverse(next)| next.at <= now) {
                if let Some(Reverse(due)) = pending.pop() {
                    let _ = due.wake.send(());
                }
            }
            pending = match pending.peek() {
                Some(Reverse(next)) => {
                    let wait = next.at - now;
                    self.earliest_changed
                        .wait_timeout(pending, wait)
                        .expect("nothing panics holding it")
                        .0
                }
                None => self
                    .earliest_changed
                    .wait(pending)
                    .expect("nothing panics holding it"),
            };
        }
    }
}

// The heap orders alarms by their instant alone; two for the same instant
// ring together, in either order.
impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Alarm {}

impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Alarm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

async fn complete(State(pace): State<Arc<Pace>>, Json(request): Json<Value>) -> Response {
    let model = request["model"].as_str().unwrap_or("bench").to_owned();
    if request["stream"].as_bool() != Some(true) {
        pause(pace.plain_latency()).await;
        let text: String = (0..pace.tokens).map(word).collect();
        return Json(json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "stop",
            }],
            "usage": usage(pace.tokens),
        }))
        .into_response();
    }
    let chunks = stream::unfold((0, pace, model), |(sent, pace, model)| async move {
        let data = if sent < pace.tokens {
            pause(if sent == 0 {
                pace.first_token
            } else {
                pace.between_tokens
            })
            .await;
            json!({
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{ "index": 0, "delta": { "content": word(sent) } }],
            })
            .to_string()
        } else if sent == pace.tokens {
            json!({
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": usage(pace.tokens),
            })
            .to_string()
        } else if sent == pace.tokens + 1 {
            "[DONE]".to_owned()
        } else {
            return None;
        };
        let event = Bytes::from(format!("data: {data}\n\n"));
        Some((Ok::<_, Infallible>(event), (sent + 1, pace, model)))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn word(index: u64) -> String {
    format!("word{index} ")
}

fn usage(completion: u64) -> Value {
    json!({ "prompt_tokens": 12, "completion_tokens": completion, "total_tokens": 12 + completion })
}
