//! A typed HTTP client for chat-api's black-box scenarios (tests/it) and the
//! benchmarks: it knows the API only by its URLs and JSON.

pub mod instances;

use std::sync::atomic::{AtomicU64, Ordering};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

pub const PASSWORD: &str = "secret123";

/// The administrator the scenarios use: the deployment under test lists it in
/// `ADMIN_EMAILS`.
pub const ADMIN_EMAIL: &str = "admin@e2e.example.com";

/// Where an API runs: one server, or Lambda functions each serving a group.
#[derive(Clone)]
enum Routing {
    /// Every route at one base URL.
    Server(String),
    /// `cargo lambda watch` or function URLs: `{base}/{function}{path}`.
    Lambda(String),
}

#[derive(Clone)]
pub struct Api {
    routing: Routing,
    client: reqwest::Client,
}

/// The Lambda function that serves `path`, as template.yaml routes it.
pub fn function_for(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or_default();
    if path.starts_with("/auth") {
        "auth"
    } else if path.starts_with("/chat/stream") {
        "chat-stream"
    } else if path.starts_with("/chat") {
        "chat"
    } else if path.starts_with("/admin") || path.starts_with("/docs") || path == "/openapi.json" {
        "admin"
    } else {
        // /sessions, /usage, /health, and anything unknown.
        "sessions"
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// A response read to the end: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    async fn read(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Panics with the body when the status is not the expected one.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts a problem+json error with this status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        let reply = self.expect(status);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{}",
            reply.body
        );
        assert_eq!(reply.body["status"], status, "{}", reply.body);
        assert_eq!(reply.body["code"], code, "{}", reply.body);
        assert!(reply.body["title"].is_string() && reply.body["detail"].is_string());
        reply
    }
}

/// One Server-Sent Event, its data parsed as JSON.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// A whole SSE response: its headers and every event until the server closed it.
#[derive(Debug)]
pub struct Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub events: Vec<SseEvent>,
}

impl Stream {
    pub fn names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|event| event.event.as_str())
            .collect()
    }

    /// The text of every `delta` event, concatenated.
    pub fn text(&self) -> String {
        deltas_text(&self.events)
    }

    pub fn last(&self) -> &SseEvent {
        self.events.last().expect("the stream had events")
    }
}

/// An SSE response read one event at a time, while it arrives.
pub struct LiveStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    events: std::pin::Pin<Box<dyn futures::Stream<Item = SseEvent> + Send>>,
}

impl LiveStream {
    /// A `text/event-stream` response, or the reply it was instead.
    async fn open(response: Response) -> Result<Self, Reply> {
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !is_sse {
            return Err(Reply::read(response).await);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let events = response.bytes_stream().eventsource().map(|event| {
            let event = event.expect("a well-formed SSE event");
            SseEvent {
                data: serde_json::from_str(&event.data).expect("SSE data is JSON"),
                event: event.event,
                id: event.id,
            }
        });
        Ok(Self {
            status,
            headers,
            events: Box::pin(events),
        })
    }

    /// The next event; `None` once the server has ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        self.events.next().await
    }

    /// Every event until the server ends the stream.
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The concatenated `content` of the `delta` events among `events`.
pub fn deltas_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|event| event.event == "delta")
        .map(|event| event.data["content"].as_str().unwrap_or_default())
        .collect()
}

/// An email no earlier run has used, for targets whose data persists.
pub fn unique_email(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{nanos:x}-{n}@example.com")
}

impl Api {
    /// `http://host:port` for a server; `lambda+http://host:port/lambda-url`
    /// for Lambda functions under one URL prefix (the `cargo lambda watch` layout).
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let routing = match base.strip_prefix("lambda+") {
            Some(base) => Routing::Lambda(base.to_owned()),
            None => Routing::Server(base.to_owned()),
        };
        Self {
            routing,
            client: reqwest::Client::new(),
        }
    }

    /// Whether this API is Lambda functions (behind an emulator or function URLs).
    pub fn is_lambda(&self) -> bool {
        matches!(self.routing, Routing::Lambda(_))
    }

    pub fn url(&self, path: &str) -> String {
        match &self.routing {
            Routing::Server(base) => format!("{base}{path}"),
            Routing::Lambda(base) => format!("{base}/{}{path}", function_for(path)),
        }
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let retry = match &self.routing {
            Routing::Lambda(_) => request.try_clone(),
            Routing::Server(_) => None,
        };
        let reply = Reply::read(request.send().await.expect("send the request")).await;
        // `cargo lambda watch` now and then answers a GET with a 500 of its own
        // (its problem type, never this API's `about:blank`) without a sign of
        // the function having failed; a read is safe to ask again, once, out loud.
        // This API's own 500s, and anything that writes, are never retried.
        match retry {
            Some(again)
                if reply.status == StatusCode::INTERNAL_SERVER_ERROR
                    && reply.body["type"] == "https://httpstatuses.com/500"
                    && again
                        .try_clone()
                        .and_then(|request| request.build().ok())
                        .is_some_and(|request| request.method() == Method::GET) =>
            {
                eprintln!("note: the Lambda emulator answered 500 itself; asking once more");
                Reply::read(again.send().await.expect("send the request")).await
            }
            _ => reply,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::GET, path, token)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path, token).json(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(self.request(Method::PATCH, path, token).json(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::DELETE, path, token)).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/auth/register",
            None,
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Logs in with the OAuth2 password form, as the seed's curl does.
    pub async fn login_form(&self, username: &str, password: &str) -> Reply {
        let form = [("username", username), ("password", password)];
        self.send(self.request(Method::POST, "/auth/login", None).form(&form))
            .await
    }

    pub async fn login_json(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/auth/login",
            None,
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers a fresh user and logs in.
    pub async fn account(&self) -> Account {
        let email = unique_email("user");
        let user = self.register(&email, PASSWORD).await.expect(201).body;
        let tokens = self.login_form(&email, PASSWORD).await.expect(200).body;
        Account {
            id: user["id"].as_i64().expect("user id"),
            email,
            access_token: tokens["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh_token: tokens["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
        }
    }

    /// Signs in as `ADMIN_EMAIL`, registering it the first time.
    pub async fn admin(&self) -> Account {
        let registered = self.register(ADMIN_EMAIL, PASSWORD).await;
        assert!(
            matches!(registered.status.as_u16(), 201 | 409),
            "registering the admin: {}",
            registered.body
        );
        let tokens = self
            .login_json(ADMIN_EMAIL, PASSWORD)
            .await
            .expect(200)
            .body;
        let me = self
            .get("/auth/me", tokens["access_token"].as_str())
            .await
            .expect(200)
            .body;
        Account {
            id: me["id"].as_i64().expect("admin id"),
            email: ADMIN_EMAIL.to_owned(),
            access_token: tokens["access_token"].as_str().expect("token").to_owned(),
            refresh_token: tokens["refresh_token"].as_str().expect("token").to_owned(),
        }
    }

    pub async fn create_session(&self, account: &Account, body: &Value) -> Value {
        self.post("/sessions", Some(&account.access_token), body)
            .await
            .expect(201)
            .body
    }

    pub async fn session(&self, account: &Account, id: i64) -> Value {
        self.get(&format!("/sessions/{id}"), Some(&account.access_token))
            .await
            .expect(200)
            .body
    }

    pub async fn chat(&self, account: &Account, body: &Value) -> Reply {
        self.post("/chat", Some(&account.access_token), body).await
    }

    /// POST /chat/stream, to be read event by event.
    pub async fn open_stream(&self, token: &str, body: &Value) -> Result<LiveStream, Reply> {
        let response = self
            .request(Method::POST, "/chat/stream", Some(token))
            .json(body)
            .send()
            .await
            .expect("send the stream request");
        LiveStream::open(response).await
    }

    /// GET /chat/stream/{generation_id} with `query`, sending `Last-Event-ID`
    /// when given: a reconnect, or a second client following.
    pub async fn follow(
        &self,
        token: Option<&str>,
        generation_id: &str,
        last_event_id: Option<&str>,
        query: &str,
    ) -> Result<LiveStream, Reply> {
        let mut request = self.request(
            Method::GET,
            &format!("/chat/stream/{generation_id}{query}"),
            token,
        );
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        LiveStream::open(request.send().await.expect("send the follow request")).await
    }

    /// POST /chat/stream/{generation_id}/stop.
    pub async fn stop(&self, token: &str, generation_id: &str) -> Reply {
        let path = format!("/chat/stream/{generation_id}/stop");
        self.send(self.request(Method::POST, &path, Some(token)))
            .await
    }

    /// POST /chat/stream, read to the end. A non-SSE answer (an error before the
    /// stream starts) comes back as `Err` with its reply.
    pub async fn stream(&self, token: &str, body: &Value) -> Result<Stream, Reply> {
        let live = self.open_stream(token, body).await?;
        let (status, headers) = (live.status, live.headers.clone());
        Ok(Stream {
            status,
            headers,
            events: live.rest().await,
        })
    }
}
