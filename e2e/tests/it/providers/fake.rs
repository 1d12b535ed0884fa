//! Test servers that speak the providers' documented wire formats: OpenAI's
//! Chat Completions and Anthropic's Messages, plain and streamed. Each request
//! takes the next scripted behaviour; every request is recorded.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answers `text`, reporting `usage` (prompt, completion) when given.
    Answer {
        text: String,
        usage: Option<(i64, i64)>,
    },
    /// Streams one word every `delay`, so a test can hang up mid-answer.
    SlowAnswer { text: String, delay: Duration },
    /// Fails with this status and the provider's error body.
    Fail {
        status: u16,
        retry_after: Option<&'static str>,
    },
    /// Streams `words` words of `text`, then closes the connection without
    /// the end marker.
    CutAfter { text: String, words: usize },
    /// Streams `words` words of `text`, then sends the provider's error event.
    ErrorAfter { text: String, words: usize },
    /// Streams `words` words, then goes silent with the connection open.
    StallAfter { text: String, words: usize },
    /// OpenAI's 429 for an account without credit.
    QuotaExhausted,
    /// A whole stream, usage included, that ends without OpenAI's `[DONE]`
    /// (as older llama.cpp servers do).
    AnswerWithoutDone { text: String },
}

pub fn answer(text: &str, usage: Option<(i64, i64)>) -> Script {
    Script::Answer {
        text: text.to_owned(),
        usage,
    }
}

pub fn fail(status: u16) -> Script {
    Script::Fail {
        status,
        retry_after: None,
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    scripts: VecDeque<Script>,
    requests: Vec<Recorded>,
    /// Streams whose client went away before the fake finished sending.
    abandoned: usize,
    /// Streams the fake sent to the end.
    completed: usize,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub wire: Wire,
    /// What `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` should be set to.
    pub base_url: String,
    shared: Arc<Mutex<Shared>>,
}

/// What a request that finds no script left gets.
const DEFAULT_TEXT: &str = "The fake provider has nothing scripted for this request.";

impl FakeProvider {
    pub async fn start(wire: Wire) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (path, prefix) = match wire {
            Wire::OpenAi => ("/v1/chat/completions", "/v1"),
            Wire::Anthropic => ("/v1/messages", ""),
        };
        let fake = Self {
            wire,
            base_url: String::new(),
            shared: shared.clone(),
        };
        let router = Router::new()
            .route(path, post(handle))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base_url: format!("http://127.0.0.1:{port}{prefix}"),
            ..fake
        }
    }

    pub fn script(&self, scripts: impl IntoIterator<Item = Script>) {
        self.shared.lock().unwrap().scripts.extend(scripts);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }

    pub fn abandoned(&self) -> usize {
        self.shared.lock().unwrap().abandoned
    }

    pub fn completed(&self) -> usize {
        self.shared.lock().unwrap().completed
    }

    /// The environment that points the API at this fake.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.wire {
            Wire::OpenAi => vec![
                ("LLM_PROVIDER", "openai".into()),
                ("OPENAI_BASE_URL", self.base_url.clone()),
                ("OPENAI_API_KEY", "sk-test-openai-key".into()),
                ("OPENAI_MODEL", "gpt-test".into()),
            ],
            Wire::Anthropic => vec![
                ("LLM_PROVIDER", "anthropic".into()),
                ("ANTHROPIC_BASE_URL", self.base_url.clone()),
                ("ANTHROPIC_API_KEY", "sk-ant-test-key".into()),
                ("ANTHROPIC_MODEL", "claude-test".into()),
                ("ANTHROPIC_MAX_TOKENS", "321".into()),
            ],
        }
    }
}

async fn handle(
    State(fake): State<FakeProvider>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let streaming = body["stream"] == true;
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let script = {
        let mut shared = fake.shared.lock().unwrap();
        shared.requests.push(Recorded {
            headers,
            body,
            at: Instant::now(),
        });
        shared.scripts.pop_front()
    };
    let script = script.unwrap_or_else(|| answer(DEFAULT_TEXT, Some((10, 10))));
    if let Script::Fail {
        status,
        retry_after,
    } = &script
    {
        return failure(fake.wire, *status, *retry_after);
    }
    if let Script::QuotaExhausted = &script {
        let body = json!({ "error": { "message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota" } });
        return (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    }
    if !streaming {
        return whole(fake.wire, &model, &script).await;
    }
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(stream_script(fake.clone(), model, script, sender));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .unwrap()
}

fn failure(wire: Wire, status: u16, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    // Like the real APIs, a 401 names the key it refused.
    let message = if status == StatusCode::UNAUTHORIZED {
        "Incorrect API key provided: sk-test-openai-key / sk-ant-test-key".to_owned()
    } else {
        format!("scripted {status}")
    };
    let body = match wire {
        Wire::OpenAi => {
            json!({ "error": { "message": message, "type": "server_error", "code": null } })
        }
        Wire::Anthropic => {
            let kind = match status.as_u16() {
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(wait) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", wait.parse().unwrap());
    }
    response
}

/// A non-streaming answer. Stalls are long sleeps; breaks are failures.
async fn whole(wire: Wire, model: &str, script: &Script) -> Response {
    let (text, usage) = match script {
        Script::Answer { text, usage } => (text.clone(), *usage),
        Script::SlowAnswer { text, .. } | Script::AnswerWithoutDone { text } => {
            (text.clone(), None)
        }
        Script::StallAfter { .. } => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!("the client gives up first")
        }
        Script::CutAfter { .. }
        | Script::ErrorAfter { .. }
        | Script::Fail { .. }
        | Script::QuotaExhausted => {
            return failure(wire, 500, None);
        }
    };
    let body = match wire {
        Wire::OpenAi => {
            let mut body = json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_790_000_000, "model": model,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            });
            if let Some((prompt, completion)) = usage {
                body["usage"] = json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion });
            }
            body
        }
        Wire::Anthropic => {
            let (prompt, completion) = usage.unwrap_or((0, 0));
            json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{ "type": "text", "text": text }],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": { "input_tokens": prompt, "output_tokens": completion },
            })
        }
    };
    Json(body).into_response()
}

/// Words with their separating spaces, so that they concatenate to the text.
pub fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for (index, word) in text.split(' ').enumerate() {
        words.push(if index == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    words
}

async fn stream_script(
    fake: FakeProvider,
    model: String,
    script: Script,
    sender: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let wire = fake.wire;
    let (text, usage, delay, stop_after, ending) = match script {
        Script::Answer { text, usage } => (text, usage, Duration::ZERO, None, Ending::Done),
        Script::SlowAnswer { text, delay } => (text, Some((7, 7)), delay, None, Ending::Done),
        Script::CutAfter { text, words } => (text, None, Duration::ZERO, Some(words), Ending::Cut),
        Script::ErrorAfter { text, words } => {
            (text, None, Duration::ZERO, Some(words), Ending::ErrorEvent)
        }
        Script::StallAfter { text, words } => {
            (text, None, Duration::ZERO, Some(words), Ending::Stall)
        }
        Script::AnswerWithoutDone { text } => (
            text,
            Some((6, 6)),
            Duration::ZERO,
            None,
            Ending::DoneWithoutMarker,
        ),
        Script::Fail { .. } | Script::QuotaExhausted => {
            unreachable!("failures are answered before streaming")
        }
    };
    let send = |frame: String| {
        let sender = sender.clone();
        async move { sender.send(Ok(Bytes::from(frame))).await.is_ok() }
    };
    let mut frames = vec![opening(wire, &model, usage)];
    let all_words = words(&text);
    let count = stop_after.unwrap_or(all_words.len()).min(all_words.len());
    for word in &all_words[..count] {
        frames.push(delta(wire, &model, word));
    }
    let mut delivered_all = true;
    for (index, frame) in frames.into_iter().enumerate() {
        if index > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !send(frame).await {
            delivered_all = false;
            break;
        }
    }
    if !delivered_all {
        fake.shared.lock().unwrap().abandoned += 1;
        return;
    }
    match ending {
        Ending::Done => {
            for frame in closing(wire, &model, usage) {
                if !send(frame).await {
                    fake.shared.lock().unwrap().abandoned += 1;
                    return;
                }
            }
            fake.shared.lock().unwrap().completed += 1;
        }
        Ending::DoneWithoutMarker => {
            let frames = closing(wire, &model, usage);
            for frame in frames.into_iter().filter(|frame| !frame.contains("[DONE]")) {
                send(frame).await;
            }
            fake.shared.lock().unwrap().completed += 1;
        }
        Ending::Cut => {}
        Ending::ErrorEvent => {
            let frame = match wire {
                Wire::OpenAi => sse(
                    None,
                    &json!({ "error": { "message": "scripted mid-stream error", "type": "server_error" } }),
                ),
                Wire::Anthropic => sse(
                    Some("error"),
                    &json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
                ),
            };
            send(frame).await;
        }
        Ending::Stall => {
            // Hold the connection open, silent, until the client goes away.
            sender.closed().await;
            fake.shared.lock().unwrap().abandoned += 1;
        }
    }
}

enum Ending {
    Done,
    DoneWithoutMarker,
    Cut,
    ErrorEvent,
    Stall,
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn openai_chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    sse(
        None,
        &json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_790_000_000, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }], "usage": null,
        }),
    )
}

fn opening(wire: Wire, model: &str, usage: Option<(i64, i64)>) -> String {
    match wire {
        Wire::OpenAi => openai_chunk(model, json!({ "role": "assistant", "content": "" }), None),
        Wire::Anthropic => {
            let start = sse(
                Some("message_start"),
                &json!({
                    "type": "message_start",
                    "message": { "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                                 "stop_reason": null, "stop_sequence": null,
                                 "usage": { "input_tokens": usage.map_or(0, |(prompt, _)| prompt), "output_tokens": 1 } },
                }),
            );
            let block = sse(
                Some("content_block_start"),
                &json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            );
            let ping = sse(Some("ping"), &json!({ "type": "ping" }));
            format!("{start}{block}{ping}")
        }
    }
}

fn delta(wire: Wire, model: &str, text: &str) -> String {
    match wire {
        Wire::OpenAi => openai_chunk(model, json!({ "content": text }), None),
        Wire::Anthropic => sse(
            Some("content_block_delta"),
            &json!({
                "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": text },
            }),
        ),
    }
}

fn closing(wire: Wire, model: &str, usage: Option<(i64, i64)>) -> Vec<String> {
    match wire {
        Wire::OpenAi => {
            let mut frames = vec![openai_chunk(model, json!({}), Some("stop"))];
            if let Some((prompt, completion)) = usage {
                frames.push(sse(None, &json!({
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_790_000_000, "model": model,
                    "choices": [], "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
                })));
            }
            frames.push("data: [DONE]\n\n".to_owned());
            frames
        }
        Wire::Anthropic => {
            // The prompt's tokens came in message_start; the output's come here.
            let completion = usage.map_or(0, |(_, completion)| completion);
            vec![
                sse(
                    Some("content_block_stop"),
                    &json!({ "type": "content_block_stop", "index": 0 }),
                ),
                sse(
                    Some("message_delta"),
                    &json!({
                        "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                        "usage": { "output_tokens": completion },
                    }),
                ),
                sse(Some("message_stop"), &json!({ "type": "message_stop" })),
            ]
        }
    }
}
