//! Times Server-Sent Event streams, which a load generator cannot: from the
//! request to the first delta, and the gaps between deltas. `--concurrency`
//! clients each open `--streams` streams one after the other; prints one JSON
//! line of milliseconds (median, p99, min, max) and the most streams open at
//! once.
//!
//! A delta is an `event: delta` (chat-api) or an event whose JSON has
//! `choices[0].delta.content` (OpenAI's wire format, to time the upstream).
//!
//! `--token` may list several tokens, comma-separated, and `--sessions`
//! session ids: client i uses token i mod n (one user each, as many users
//! would) and session i mod m (a conversation going on); without sessions,
//! each stream starts a new conversation.
//!
//! `sse --url http://127.0.0.1:8000/chat/stream --token T --body '{"message":"hi"}' --concurrency 16 --streams 20`

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use bench::{Flags, percentile};
use eventsource_stream::Eventsource as _;
use futures::{StreamExt as _, future::join_all};
use serde_json::{Value, json};

#[derive(Default)]
struct Timings {
    first_delta: Vec<f64>,
    gaps: Vec<f64>,
    errors: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::from_env();
    let url = flags.text("url", "http://127.0.0.1:8000/chat/stream");
    let tokens: Vec<String> = flags
        .text("token", "")
        .split(',')
        .map(str::to_owned)
        .collect();
    let body: Value = serde_json::from_str(&flags.text("body", r#"{"message":"hi"}"#))?;
    let concurrency = flags.number("concurrency", 1);
    let streams = flags.number("streams", 10);
    let sessions = flags
        .text("sessions", "")
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::parse::<i64>)
        .collect::<Result<Vec<_>, _>>()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::try_from(concurrency)?)
        .build()?;
    let open = Arc::new(Gauge::default());
    let started = Instant::now();
    let clients = (0..usize::try_from(concurrency)?).map(|index| {
        let mut body = body.clone();
        if !sessions.is_empty() {
            body["session_id"] = json!(sessions[index % sessions.len()]);
        }
        let token = tokens[index % tokens.len()].clone();
        let (client, url, open) = (client.clone(), url.clone(), open.clone());
        async move {
            let mut timings = Timings::default();
            for _ in 0..streams {
                if one_stream(&client, &url, &token, &body, &open, &mut timings)
                    .await
                    .is_err()
                {
                    timings.errors += 1;
                }
            }
            timings
        }
    });
    let mut all = Timings::default();
    for timings in join_all(clients).await {
        all.first_delta.extend(timings.first_delta);
        all.gaps.extend(timings.gaps);
        all.errors += timings.errors;
    }
    println!(
        "{}",
        json!({
            "streams": all.first_delta.len(),
            "errors": all.errors,
            "seconds": started.elapsed().as_secs_f64(),
            "most_open_at_once": open.most.load(Ordering::Relaxed),
            "first_delta_ms": summary(all.first_delta),
            "gap_ms": summary(all.gaps),
        })
    );
    Ok(())
}

async fn one_stream(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    open: &Gauge,
    timings: &mut Timings,
) -> anyhow::Result<()> {
    let sent = Instant::now();
    let mut request = client.post(url).json(body);
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?.error_for_status()?;
    let _open = open.enter();
    let mut events = response.bytes_stream().eventsource();
    let mut last_delta = None;
    while let Some(event) = events.next().await {
        let event = event?;
        let is_delta = event.event == "delta"
            || serde_json::from_str::<Value>(&event.data)
                .is_ok_and(|data| data["choices"][0]["delta"]["content"].is_string());
        if !is_delta {
            continue;
        }
        let now = Instant::now();
        match last_delta {
            None => timings.first_delta.push(millis(now - sent)),
            Some(previous) => timings.gaps.push(millis(now - previous)),
        }
        last_delta = Some(now);
    }
    anyhow::ensure!(last_delta.is_some(), "a stream without deltas");
    Ok(())
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&samples, 0.5),
        "p99": percentile(&samples, 0.99),
        "min": samples.first(),
        "max": samples.last(),
    })
}

/// How many streams are open now, and the most at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Gauge {
    fn enter(&self) -> impl Drop + '_ {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        Leave(self)
    }
}

struct Leave<'a>(&'a Gauge);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}
