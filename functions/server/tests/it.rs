//! The server binary itself, as separate processes: what only processes show.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chat_core::testing;
use e2e::Api;

/// One `server` process; killed when dropped.
struct Server {
    process: Child,
    api: Api,
}

impl Server {
    /// Starts the binary with test defaults plus `env`, and waits for /health.
    async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new(env!("CARGO_BIN_EXE_server"))
            .env_clear()
            .env("PORT", port.to_string())
            .env("BCRYPT_COST", "4")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the server binary");
        let server = Self {
            process,
            api: Api::new(&format!("http://127.0.0.1:{port}")),
        };
        for _ in 0..200 {
            if let Ok(response) = reqwest::get(server.api.url("/health")).await
                && response.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not answer /health on port {port}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
    }
}

#[tokio::test]
async fn two_processes_sharing_one_redis_enforce_one_limit() {
    let Some(redis) = testing::redis_test_url().expect("TEST_REDIS_URL") else {
        eprintln!("skipped: TEST_REDIS_URL is not set");
        return;
    };
    let database = testing::fresh_sqlite_url();
    let prefix = testing::unique_redis_prefix();
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("JWT_SECRET", "two-processes-share-this-secret-0123456789"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("RATE_LIMIT_REQUESTS", "6/min"),
    ];
    // One after the other, so that only the first migrates the new database.
    let first = Server::start(&env).await;
    let second = Server::start(&env).await;
    let account = first.api.account().await;
    let token = Some(account.access_token.as_str());
    // Alternating between the processes, six requests in all are allowed...
    for n in 0..6 {
        let server = if n % 2 == 0 { &first } else { &second };
        let reply = server.api.get("/sessions", token).await.expect(200);
        assert_eq!(
            reply.header("ratelimit-remaining"),
            Some(&*(5 - n).to_string())
        );
    }
    // ...and the seventh is refused by both.
    for server in [&first, &second] {
        let refused = server
            .api
            .get("/sessions", token)
            .await
            .expect_problem(429, "rate_limited");
        assert!(refused.header("retry-after").is_some());
    }
}

#[tokio::test]
async fn a_generation_started_in_one_process_is_resumed_followed_and_stopped_in_others() {
    let Some([first, second, third]) = sharing_redis_and_postgres("40").await else {
        return;
    };
    e2e::instances::resumed_followed_and_stopped_elsewhere([&first.api, &second.api, &third.api])
        .await;
}

#[tokio::test]
async fn when_the_process_running_a_generation_dies_the_others_stop_waiting_for_it() {
    let Some([mut first, second, _]) = sharing_redis_and_postgres("200").await else {
        return;
    };
    let account = first.api.account().await;
    let token = account.access_token.as_str();
    let mut origin = first
        .api
        .open_stream(
            token,
            &serde_json::json!({ "message": "Tell me a long story" }),
        )
        .await
        .unwrap_or_else(|reply| panic!("no stream: {} {}", reply.status, reply.body));
    let start = origin.next().await.expect("a start event");
    let generation = start.data["generation_id"].as_str().unwrap().to_owned();
    let session_id = start.data["session_id"].as_i64().unwrap();
    let mut follower = second
        .api
        .follow(Some(token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body));
    assert_eq!(follower.next().await.expect("start").event, "start");
    assert_eq!(follower.next().await.expect("a delta").event, "delta");

    first.process.kill().expect("kill the first server");
    first.process.wait().expect("reap it");
    // Its heartbeat lapses within seconds: the follower's stream ends, without `done`.
    let rest = tokio::time::timeout(Duration::from_secs(20), follower.rest())
        .await
        .expect("the follower stops waiting");
    assert!(rest.iter().all(|event| event.event == "delta"), "{rest:?}");
    let session = second.api.session(&account, session_id).await;
    assert_eq!(session["generation_in_progress"], serde_json::Value::Null);
    second
        .api
        .stop(token, &generation)
        .await
        .expect_problem(404, "generation_not_found");
}

/// Three `server` processes sharing a fresh Postgres database, a JWT key and
/// Redis, their mock answering a word every `token_delay_ms` (slow enough that
/// a generation still runs while another process is asked about it).
async fn sharing_redis_and_postgres(token_delay_ms: &str) -> Option<[Server; 3]> {
    let (Some(redis), Some(admin)) = (
        testing::redis_test_url().expect("TEST_REDIS_URL"),
        testing::postgres_admin_url().expect("TEST_DATABASE_URL"),
    ) else {
        eprintln!("skipped: TEST_REDIS_URL or TEST_DATABASE_URL is not set");
        return None;
    };
    let database = testing::fresh_postgres_database(&admin)
        .await
        .expect("a Postgres test database");
    let prefix = testing::unique_redis_prefix();
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("JWT_SECRET", "processes-share-this-secret-0123456789"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("MOCK_TOKEN_DELAY_MS", token_delay_ms),
    ];
    // One after the other, so that only the first migrates the new database.
    let first = Server::start(&env).await;
    let second = Server::start(&env).await;
    let third = Server::start(&env).await;
    Some([first, second, third])
}

/// `server promote-admin EMAIL` / `demote-admin EMAIL`, against the store a
/// running server uses.
fn admin_command(database: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_server"))
        .env_clear()
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .expect("run the server binary")
}

#[tokio::test]
async fn the_cli_promotes_and_demotes_administrators() {
    let database = testing::fresh_sqlite_url();
    let server = Server::start(&[
        ("DATABASE_URL", database.as_str()),
        ("JWT_SECRET", "the-cli-test-secret-0123456789abcdefgh"),
    ])
    .await;
    let account = server.api.account().await;
    let token = Some(account.access_token.as_str());
    server
        .api
        .get("/admin/users", token)
        .await
        .expect_problem(403, "forbidden");

    // Emails are matched as stored: trimmed and lower-cased.
    let shouted = account.email.to_uppercase();
    let promoted = admin_command(&database, &["promote-admin", &shouted]);
    assert!(promoted.status.success(), "{promoted:?}");
    assert!(String::from_utf8_lossy(&promoted.stdout).contains("is now an administrator"));
    let page = server.api.get("/admin/users", token).await.expect(200).body;
    assert_eq!(page["users"][0]["is_admin"], true);

    let demoted = admin_command(&database, &["demote-admin", &account.email]);
    assert!(demoted.status.success(), "{demoted:?}");
    server
        .api
        .get("/admin/users", token)
        .await
        .expect_problem(403, "forbidden");

    let unknown = admin_command(&database, &["promote-admin", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account"));
    for wrong in [
        &["promote-admin"][..],
        &["promote-admin", "not-an-email"],
        &["frobnicate", "x"],
    ] {
        assert_eq!(
            admin_command(&database, wrong).status.code(),
            Some(2),
            "{wrong:?}"
        );
    }
}

#[tokio::test]
async fn healthcheck_reports_whether_the_server_on_port_answers() {
    let database = testing::fresh_sqlite_url();
    let server = Server::start(&[("DATABASE_URL", database.as_str())]).await;
    let port = server.api.url("").rsplit(':').next().unwrap().to_owned();
    let check = |port: &str| {
        Command::new(env!("CARGO_BIN_EXE_server"))
            .env_clear()
            .env("PORT", port)
            .arg("healthcheck")
            .output()
            .expect("run the healthcheck")
    };
    assert!(check(&port).status.success());
    drop(server);
    let down = check(&port);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("no answer"));
}

/// `server openapi` needs no configuration and prints what GET /openapi.json serves.
#[tokio::test]
async fn openapi_prints_the_document_the_server_serves() {
    let printed = Command::new(env!("CARGO_BIN_EXE_server"))
        .env_clear()
        .arg("openapi")
        .output()
        .expect("run server openapi");
    assert!(printed.status.success(), "{printed:?}");
    let printed: serde_json::Value =
        serde_json::from_slice(&printed.stdout).expect("the document is JSON");
    let database = testing::fresh_sqlite_url();
    let server = Server::start(&[("DATABASE_URL", database.as_str())]).await;
    let served = server.api.get("/openapi.json", None).await.expect(200).body;
    assert_eq!(printed, served);
    assert_eq!(printed["openapi"], "3.1.0");
}

/// Answers every request as OpenAI does a wrong key: 401 with its error body.
async fn rejecting_provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let body = r#"{"error":{"message":"Incorrect API key provided: sk-te****************0000.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/v1")
}

/// Every secret the server handles, through a whole scenario with logging at
/// debug (trace for our own code): none of them may appear in what it logs
/// or in what it answers.
#[tokio::test]
async fn secrets_appear_in_no_log_line_and_no_response() {
    const JWT_SECRET: &str = "log-test-jwt-secret-4f9a1c7e2b8d6053aa";
    const API_KEY: &str = "sk-test-log-capture-9b7e3d1f5a2c4e6b8d0f";
    const PASSWORD: &str = "correct horse battery staple 42";
    let database = testing::fresh_sqlite_url();
    let provider = rejecting_provider().await;
    let log = std::env::temp_dir().join(format!("chat_test_log_{}.txt", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let mut process = Command::new(env!("CARGO_BIN_EXE_server"))
        .env_clear()
        .envs([
            ("PORT", port.to_string()),
            ("DATABASE_URL", database.clone()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("LLM_PROVIDER", "openai".to_owned()),
            ("OPENAI_API_KEY", API_KEY.to_owned()),
            ("OPENAI_BASE_URL", provider),
            ("LLM_MAX_RETRIES", "0".to_owned()),
            ("BCRYPT_COST", "4".to_owned()),
            ("ADMIN_EMAILS", "logged@example.com".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "debug,chat_core=trace,server=trace".to_owned()),
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    for _ in 0..200 {
        if reqwest::get(api.url("/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut answers = Vec::new();
    let email = "logged@example.com";
    answers.push(api.register(email, PASSWORD).await.expect(201).body);
    answers.push(
        api.login_json(email, "a wrong password")
            .await
            .expect(401)
            .body,
    );
    let tokens = api.login_form(email, PASSWORD).await.expect(200).body;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let token = Some(access.as_str());
    answers.push(api.get("/auth/me", token).await.expect(200).body);
    let session = api
        .post(
            "/sessions",
            token,
            &serde_json::json!({ "title": "t", "system_prompt": "be brief" }),
        )
        .await
        .expect(201)
        .body;
    let chat = serde_json::json!({ "session_id": session["id"], "message": "hello?" });
    // The provider refuses the key: a 502 here, an error event on the stream.
    answers.push(
        api.chat(&chat_account(email, &access, &refresh), &chat)
            .await
            .body,
    );
    match api.stream(&access, &chat).await {
        Ok(stream) => answers.extend(stream.events.into_iter().map(|event| event.data)),
        Err(reply) => answers.push(reply.body),
    }
    for path in ["/sessions", "/usage", "/admin/users", "/admin/usage"] {
        answers.push(api.get(path, token).await.expect(200).body);
    }
    let id = session["id"].as_i64().unwrap();
    answers.push(
        api.get(&format!("/sessions/{id}/export"), token)
            .await
            .expect(200)
            .body,
    );
    answers.push(
        api.get("/auth/me", Some(&format!("{access}x")))
            .await
            .expect(401)
            .body,
    );
    let pair = api
        .post(
            "/auth/refresh",
            None,
            &serde_json::json!({ "refresh_token": refresh }),
        )
        .await
        .expect(200)
        .body;
    answers.push(
        api.post(
            "/auth/refresh",
            None,
            &serde_json::json!({ "refresh_token": refresh }),
        )
        .await
        .expect(401)
        .body,
    );
    answers.push(
        api.post(
            "/auth/logout",
            None,
            &serde_json::json!({ "refresh_token": pair["refresh_token"] }),
        )
        .await
        .body,
    );

    process.kill().ok();
    process.wait().ok();
    let logged = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).ok();
    assert!(
        logged.lines().count() > 20,
        "the log was captured: {logged}"
    );
    let settings = chat_core::config::Settings::from_lookup(|name| {
        (name == "DATABASE_URL").then(|| database.clone())
    })
    .unwrap();
    let store = chat_core::store::connect(&settings.db).await.unwrap();
    let hash = store
        .find_user_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    let answered = serde_json::to_string(&answers).unwrap();
    let secrets = [
        ("the JWT secret", JWT_SECRET),
        ("the provider key", API_KEY),
        ("the password", PASSWORD),
        ("the password hash", hash.as_str()),
        ("the refresh token", refresh.as_str()),
        ("the access token", access.as_str()),
    ];
    for (what, secret) in secrets {
        assert!(!logged.contains(secret), "{what} is in the log");
        assert!(
            !answered.contains(secret) || what.ends_with("token"),
            "{what} is in a response"
        );
    }
    // The bcrypt salt and digest on their own, in case a log escaped the `$`s.
    assert!(
        !logged.contains(&hash[7..]),
        "the password hash is in the log"
    );
}

fn chat_account(email: &str, access: &str, refresh: &str) -> e2e::Account {
    e2e::Account {
        id: 0,
        email: email.to_owned(),
        access_token: access.to_owned(),
        refresh_token: refresh.to_owned(),
    }
}
