//! Where the scenarios run. In-process targets are the real `Application`
//! (Router, middleware, store) on an ephemeral port, one fresh database each:
//! SQLite, Postgres (`TEST_DATABASE_URL`) and DynamoDB (the emulator at
//! `AWS_ENDPOINT_URL`).
//!
//! Remote targets come from the environment (a URL, or `lambda+URL` for the
//! Lambda functions under `cargo lambda watch`, e.g.
//! `lambda+http://127.0.0.1:9000/lambda-url`):
//! - `E2E_BASE_URL`: an API with the mock provider answering normally;
//! - `E2E_FAILING_BASE_URL`: one whose mock fails (`MOCK_FAIL=always`);
//! - `E2E_MIDSTREAM_BASE_URL`: one whose mock breaks off (`MOCK_FAIL=midstream`);
//! - `E2E_JWT_SECRET`: the target's JWT key, for the forged-token scenarios.
//!
//! With `CI` set, a target a scenario needs but cannot get is a failure.

use chat_core::{config::Settings, server::Application, testing};
use e2e::{Account, Api};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mock {
    Answers,
    FailsAlways,
    FailsMidStream,
}

impl Mock {
    fn setting(self) -> &'static str {
        match self {
            Self::Answers => "never",
            Self::FailsAlways => "always",
            Self::FailsMidStream => "midstream",
        }
    }

    fn remote_variable(self) -> &'static str {
        match self {
            Self::Answers => "E2E_BASE_URL",
            Self::FailsAlways => "E2E_FAILING_BASE_URL",
            Self::FailsMidStream => "E2E_MIDSTREAM_BASE_URL",
        }
    }
}

pub struct Target {
    pub name: String,
    pub api: Api,
    /// The target's JWT key, when known, to forge tokens with.
    pub jwt_secret: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Every target this scenario should run on.
pub async fn targets(mock: Mock) -> Vec<Target> {
    if env("E2E_BASE_URL").is_some() {
        return match env(mock.remote_variable()) {
            Some(url) => vec![Target {
                name: url.clone(),
                api: Api::new(&url),
                jwt_secret: env("E2E_JWT_SECRET"),
            }],
            None => {
                let missing = format!(
                    "{} is not set; this scenario did not run",
                    mock.remote_variable()
                );
                assert!(!in_ci(), "{missing}");
                eprintln!("note: {missing}");
                Vec::new()
            }
        };
    }
    let mut targets = vec![spawn("sqlite", testing::fresh_sqlite_url(), mock).await];
    match testing::postgres_admin_url().expect("Postgres is required when CI is set") {
        Some(admin) => {
            let url = testing::fresh_postgres_database(&admin)
                .await
                .expect("create a Postgres test database");
            targets.push(spawn("postgres", url, mock).await);
        }
        None => eprintln!("note: TEST_DATABASE_URL is not set; did not run on Postgres"),
    }
    match testing::dynamodb_test_url().expect("the DynamoDB emulator is required when CI is set") {
        Some(url) => targets.push(spawn("dynamodb", url, mock).await),
        None => eprintln!("note: AWS_ENDPOINT_URL is not set; did not run on DynamoDB"),
    }
    targets
}

async fn spawn(name: &str, database_url: String, mock: Mock) -> Target {
    spawn_with(name, database_url, &[("MOCK_FAIL", mock.setting())]).await
}

/// The server in this process with test defaults, overridden by `extra`.
pub async fn spawn_with(name: &str, database_url: String, extra: &[(&str, &str)]) -> Target {
    let jwt_secret = format!("e2e-secret-{}", e2e::unique_email("key"));
    let defaults = [
        ("DATABASE_URL", database_url.as_str()),
        ("PORT", "0"),
        ("BCRYPT_COST", "4"),
        // Slow enough that a stream can be seen arriving incrementally.
        ("MOCK_TOKEN_DELAY_MS", "10"),
        ("JWT_SECRET", jwt_secret.as_str()),
        ("DB_MAX_CONNECTIONS", "5"),
        // A dynamodb:// target gets a fresh table on the emulator.
        ("DYNAMODB_CREATE_TABLE", "true"),
        // Out of the way of the scenarios; limits.rs tests them at their size.
        ("RATE_LIMIT_REQUESTS", "100000/min"),
        ("RATE_LIMIT_CHAT", "100000/min"),
        ("RATE_LIMIT_AUTH", "100000/min"),
        ("ADMIN_EMAILS", e2e::ADMIN_EMAIL),
    ];
    let settings = Settings::from_lookup(|key| {
        extra
            .iter()
            .chain(defaults.iter())
            .find(|(name, _)| *name == key)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("test settings");
    let app = Application::build(&settings).await.expect("build the app");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    Target {
        name: name.to_owned(),
        api: Api::new(&format!("http://127.0.0.1:{port}")),
        jwt_secret: Some(jwt_secret),
    }
}

/// Turns `async fn check(target: &Target)` functions into tests that run each
/// check on every target.
#[macro_export]
macro_rules! scenarios {
    ($mock:expr => $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                for target in $crate::harness::targets($mock).await {
                    eprintln!("[{}] {}", target.name, stringify!($check));
                    super::$check(&target).await;
                }
            }
        )*
    };
}

/// Opens POST /chat/stream, reads `start` and `deltas` deltas, then hangs up.
/// Returns the session id.
pub async fn hang_up_after(api: &Api, account: &Account, message: &str, deltas: usize) -> i64 {
    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    let response = api
        .request(
            reqwest::Method::POST,
            "/chat/stream",
            Some(&account.access_token),
        )
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("send the stream request");
    let mut events = response.bytes_stream().eventsource();
    let start = events.next().await.unwrap().unwrap();
    assert_eq!(start.event, "start");
    let session_id = serde_json::from_str::<Value>(&start.data).unwrap()["session_id"]
        .as_i64()
        .unwrap();
    for _ in 0..deltas {
        assert_eq!(events.next().await.unwrap().unwrap().event, "delta");
    }
    session_id
}

/// The answer stored in a session whose question was its first message,
/// waiting for it: a generation goes on (or stops) without its client.
pub async fn stored_answer(api: &Api, account: &Account, session_id: i64) -> Value {
    for _ in 0..200 {
        let session = api.session(account, session_id).await;
        if session["message_count"] == 2 {
            return session["messages"][1].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no answer was stored after the client hung up");
}
