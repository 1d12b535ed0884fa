//! A real Postgres restarted under a burst of chats: a private instance this
//! test starts (initdb, pg_ctl), so the restart disturbs no other test.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    time::Duration,
};

use e2e::Api;
use futures::{StreamExt as _, stream};
use serde_json::json;

use crate::harness::spawn_with;

/// A Postgres cluster of this test's own, on a free port, trusting local users.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|version| version.path().join("bin"))
                    .filter(|bin| bin.join("pg_ctl").exists())
                    .max()
            });
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are missing"
            );
            eprintln!("skipped: no PostgreSQL server binaries to start a private instance");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let data = std::env::temp_dir().join(format!("chat_test_pg_{}_{port}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let postgres = Self { bin, data, port };
        if running_as_root() {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&postgres.data)
                .status()
                .unwrap();
            assert!(owned.success());
        }
        postgres.run(
            "initdb",
            &[
                "-D",
                &postgres.data_dir(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        postgres.pg_ctl("start");
        Some(postgres)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> String {
        self.data.display().to_string()
    }

    /// Down for longer than a request waits for a connection (5 s), then up
    /// again: the chats in flight and those arriving meanwhile are refused,
    /// the later ones find the database back.
    fn restart(&self) {
        self.pg_ctl("stop");
        std::thread::sleep(DOWN_FOR);
        self.pg_ctl("start");
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data_dir()
        );
        let log = self.data.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                action,
                "-w",
                "-m",
                "fast",
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
            ],
        );
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let status = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new(&path)
                .args(args)
                .stdout(Stdio::null())
                .status()
        }
        .unwrap_or_else(|err| panic!("{program}: {err}"));
        assert!(status.success(), "{program} {args:?} failed");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new(if running_as_root() { "runuser" } else { "sh" })
            .args(if running_as_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec!["-c", "exec \"$0\" \"$@\""]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D", &self.data_dir()])
            .stdout(Stdio::null())
            .status();
        std::fs::remove_dir_all(&self.data).ok();
    }
}

fn running_as_root() -> bool {
    Path::new("/proc/self")
        .metadata()
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// Chats answered before Postgres goes down, and chats started once it is
/// back up: the burst runs until both have happened, however long the
/// restart takes on a loaded machine.
const BEFORE_RESTART: usize = 10;
const AFTER_RESTART: usize = 12;
const DOWN_FOR: Duration = Duration::from_secs(6);
const IN_FLIGHT: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_burst_loses_and_duplicates_no_message() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    // Answers streamed over ~0.4 s keep chats in flight when the restart lands.
    let target = spawn_with(
        "postgres",
        postgres.url(),
        &[("DB_MAX_CONNECTIONS", "4"), ("MOCK_TOKEN_DELAY_MS", "20")],
    )
    .await;
    let api = &target.api;
    let account = api.account().await;
    let session = api
        .create_session(&account, &json!({ "title": "burst" }))
        .await;
    let session_id = session["id"].as_i64().unwrap();

    // The burst; once BEFORE_RESTART chats are answered, Postgres goes down
    // with chats in flight.
    let done = AtomicUsize::new(0);
    let (restarted, started_after) = (AtomicBool::new(false), AtomicUsize::new(0));
    let restart_now = tokio::sync::Notify::new();
    let burst = stream::iter(0..)
        .take_while(|_| {
            let more =
                !restarted.load(SeqCst) || started_after.fetch_add(1, SeqCst) < AFTER_RESTART;
            std::future::ready(more)
        })
        .map(|n| {
            let (api, account, done, restart_now) =
                (api.clone(), account.clone(), &done, &restart_now);
            async move {
                let body = json!({ "session_id": session_id, "message": format!("burst {n}") });
                let reply = api.chat(&account, &body).await;
                if done.fetch_add(1, SeqCst) + 1 == BEFORE_RESTART {
                    restart_now.notify_one();
                }
                (n, reply)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>();
    let restart = async {
        restart_now.notified().await;
        let (bin, data, port) = (postgres.bin.clone(), postgres.data.clone(), postgres.port);
        tokio::task::spawn_blocking(move || {
            PrivatePostgres { bin, data, port }.restart_and_forget()
        })
        .await
        .unwrap();
        restarted.store(true, SeqCst);
    };
    let (replies, ()) = tokio::join!(burst, restart);

    let mut answered = Vec::new();
    let mut failed = 0;
    for (n, reply) in &replies {
        match reply.status.as_u16() {
            200 => answered.push((*n, reply.body["message"]["id"].as_i64().unwrap())),
            503 => {
                assert_eq!(
                    reply.header("content-type"),
                    Some("application/problem+json")
                );
                assert_eq!(reply.body["code"], "store_unavailable", "{}", reply.body);
                failed += 1;
            }
            other => panic!("chat {n}: {other} {}", reply.body),
        }
    }
    eprintln!(
        "{} answered, {failed} refused with 503 during the restart",
        answered.len()
    );
    assert!(
        failed >= IN_FLIGHT,
        "chats were in flight while Postgres was down"
    );

    // The pool finds its feet without a restart of the server.
    wait_until_healthy(api).await;
    api.chat(
        &account,
        &json!({ "session_id": session_id, "message": "after" }),
    )
    .await
    .expect(200);

    let stored = api.session(&account, session_id).await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(
        stored["message_count"].as_u64().unwrap() as usize,
        messages.len()
    );
    let ids: std::collections::HashSet<i64> =
        messages.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), messages.len(), "a message is stored twice");
    let questions: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    for (n, answer_id) in &answered {
        let question = format!("burst {n}");
        assert_eq!(
            questions.iter().filter(|q| **q == question).count(),
            1,
            "{question} is not stored exactly once"
        );
        assert!(ids.contains(answer_id), "the answer to {question} was lost");
    }
    // Each question is stored at most once, answered or not.
    let distinct: std::collections::HashSet<&&str> = questions.iter().collect();
    assert_eq!(distinct.len(), questions.len());
    let answers = messages.iter().filter(|m| m["role"] == "assistant").count();
    assert_eq!(
        answers,
        answered.len() + 1,
        "answers that no reply reported"
    );
}

async fn wait_until_healthy(api: &Api) {
    for _ in 0..100 {
        if api.get("/health", None).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not recover after Postgres came back");
}

impl PrivatePostgres {
    /// `restart` for a copy that must not stop the cluster when dropped.
    fn restart_and_forget(self) {
        self.restart();
        std::mem::forget(self);
    }
}
