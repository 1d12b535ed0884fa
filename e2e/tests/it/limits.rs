//! Rate limits at a size a test can reach: in this process, in the shared
//! Redis (`TEST_REDIS_URL`), and through a Redis outage.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chat_core::testing;
use e2e::{Account, Api, Reply};
use serde_json::json;

use crate::harness::spawn_with;

fn number(reply: &Reply, header: &str) -> u64 {
    reply
        .header(header)
        .unwrap_or_else(|| panic!("no {header} header; body: {}", reply.body))
        .parse()
        .unwrap_or_else(|_| panic!("{header} is not a number"))
}

/// 4 sign-ins or registrations per minute per IP, 2 chats and 5 requests in
/// all per minute per user; `redis` shares them, if given.
async fn limited_api(redis: Option<&str>) -> Api {
    let prefix = testing::unique_redis_prefix();
    let mut settings = vec![
        ("RATE_LIMIT_AUTH", "4/min"),
        ("RATE_LIMIT_CHAT", "2/min"),
        ("RATE_LIMIT_REQUESTS", "5/min"),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    if let Some(url) = redis {
        settings.push(("REDIS_URL", url));
    }
    spawn_with("sqlite", testing::fresh_sqlite_url(), &settings)
        .await
        .api
}

#[track_caller]
fn assert_limited(reply: Reply, limit: u64) {
    let reply = reply.expect_problem(429, "rate_limited");
    assert_eq!(number(&reply, "ratelimit-limit"), limit);
    assert_eq!(number(&reply, "ratelimit-remaining"), 0);
    let retry_after = number(&reply, "retry-after");
    // A full minute's bucket refills one request per 60/limit seconds.
    assert!((1..=60 / limit).contains(&retry_after), "{retry_after}");
    assert_eq!(reply.body["retry_after"], retry_after);
    assert!(number(&reply, "ratelimit-reset") >= retry_after);
}

/// N allowed with the headers counting down, N+1 refused, for every limit;
/// a refused chat stores nothing, and other users keep their own budget.
async fn each_limit_holds_exactly(api: &Api) {
    // Per IP: two accounts are four requests (register and sign in each).
    let alice = api.account().await;
    let bob = api.account().await;
    assert_limited(api.login_json(&alice.email, e2e::PASSWORD).await, 4);

    let session = api
        .create_session(&alice, &json!({ "title": "limits" }))
        .await;
    let id = session["id"].as_i64().unwrap();
    let chat = async |n: u32| {
        api.chat(
            &alice,
            &json!({ "session_id": id, "message": format!("q{n}") }),
        )
        .await
    };
    // Headers describe the tightest limit: chat, 2 a minute.
    let first = chat(1).await.expect(200);
    assert_eq!(number(&first, "ratelimit-limit"), 2);
    assert_eq!(number(&first, "ratelimit-remaining"), 1);
    assert_eq!(number(&chat(2).await.expect(200), "ratelimit-remaining"), 0);
    assert_limited(chat(3).await, 2);

    // Requests in all: the session and two chats used 3 of 5; the refused chat none.
    let path = format!("/sessions/{id}");
    let read = async |account: &Account| api.get(&path, Some(&account.access_token)).await;
    let fourth = read(&alice).await.expect(200);
    assert_eq!(
        fourth.body["message_count"], 4,
        "the refused chat stored nothing"
    );
    assert_eq!(number(&fourth, "ratelimit-limit"), 5);
    assert_eq!(number(&fourth, "ratelimit-remaining"), 1);
    read(&alice).await.expect(200);
    assert_limited(read(&alice).await, 5);

    // Bob has his own budget (his session lookup is a 404, but counted).
    let other = read(&bob).await.expect_problem(404, "session_not_found");
    assert_eq!(number(&other, "ratelimit-remaining"), 4);
}

#[tokio::test]
async fn in_process_each_limit_holds_exactly() {
    each_limit_holds_exactly(&limited_api(None).await).await;
}

#[tokio::test]
async fn in_redis_each_limit_holds_exactly() {
    let Some(redis) = testing::redis_test_url().expect("TEST_REDIS_URL") else {
        eprintln!("skipped: TEST_REDIS_URL is not set");
        return;
    };
    each_limit_holds_exactly(&limited_api(Some(&redis)).await).await;
}

/// A private `redis-server`, so stopping it disturbs no other test.
struct RedisServer {
    port: u16,
    process: Option<Child>,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            port,
            process: None,
        };
        server.restart().then_some(server)
    }

    /// Starts it on its port again (empty: it keeps nothing on disk).
    fn restart(&mut self) -> bool {
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        match spawned {
            Ok(process) => self.process = Some(process),
            Err(_) if std::env::var_os("CI").is_none() => return false,
            Err(err) => panic!("CI is set but redis-server cannot start: {err}"),
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().ok();
            process.wait().ok();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn requests_are_served_while_redis_is_down_and_limited_again_once_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let prefix = testing::unique_redis_prefix();
    let api = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[
            ("REDIS_URL", url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
            ("RATE_LIMIT_REQUESTS", "3/min"),
        ],
    )
    .await
    .api;
    let alice = api.account().await;
    let list = || api.get("/sessions", Some(&alice.access_token));
    for _ in 0..3 {
        list().await.expect(200);
    }
    assert_limited(list().await, 3);

    redis.stop();
    // The default policy fails open: served, without limit headers, never a 500.
    for _ in 0..10 {
        let served = list().await.expect(200);
        assert_eq!(served.header("ratelimit-limit"), None);
    }

    assert!(redis.restart());
    // The limiter tries Redis again within a second of its last failure.
    let mut resumed = None;
    for _ in 0..50 {
        let reply = list().await.expect(200);
        if reply.header("ratelimit-limit").is_some() {
            resumed = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.expect("limiting resumed after Redis came back");
    // The restarted Redis is empty: a full bucket again, counted from there.
    assert_eq!(number(&resumed, "ratelimit-remaining"), 2);
    list().await.expect(200);
    list().await.expect(200);
    assert_limited(list().await, 3);
}
