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
