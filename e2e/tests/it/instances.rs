//! A generation started on one instance, resumed, followed and stopped through
//! others that share its database and Redis (`e2e::instances`). In process:
//! three servers on one Postgres database. Remote: the three base URLs in
//! `E2E_INSTANCE_BASE_URLS` (the Lambda functions of three `cargo lambda
//! watch` processes; the server binary's own test runs three processes).

use chat_core::testing;
use e2e::{Api, deltas_text};
use serde_json::json;

use crate::harness::spawn_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_is_resumed_followed_and_stopped_through_another_instance() {
    let Some([first, second, third]) = instances().await else {
        return;
    };
    e2e::instances::resumed_followed_and_stopped_elsewhere([&first, &second, &third]).await;
}

async fn instances() -> Option<[Api; 3]> {
    let in_ci = std::env::var_os("CI").is_some();
    if std::env::var_os("E2E_BASE_URL").is_some() {
        let urls = std::env::var("E2E_INSTANCE_BASE_URLS").unwrap_or_default();
        let urls: Vec<&str> = urls.split_whitespace().collect();
        let Ok([first, second, third]) = <[&str; 3]>::try_from(urls) else {
            let missing =
                "E2E_INSTANCE_BASE_URLS does not name three instances; this scenario did not run";
            assert!(!in_ci, "{missing}");
            eprintln!("note: {missing}");
            return None;
        };
        return Some([Api::new(first), Api::new(second), Api::new(third)]);
    }
    spawn_instances(&[]).await.try_into().ok()
}

/// Three servers in this process sharing one Postgres database, a JWT key and
/// Redis, with `extra` settings; none when Redis or Postgres is missing.
async fn spawn_instances(extra: &[(&str, &str)]) -> Vec<Api> {
    let (Some(redis), Some(admin)) = (
        testing::redis_test_url().expect("Redis is required when CI is set"),
        testing::postgres_admin_url().expect("Postgres is required when CI is set"),
    ) else {
        eprintln!("note: TEST_REDIS_URL or TEST_DATABASE_URL is not set; did not run");
        return Vec::new();
    };
    let database = testing::fresh_postgres_database(&admin)
        .await
        .expect("a Postgres test database");
    let prefix = testing::unique_redis_prefix();
    let mut settings = vec![
        ("JWT_SECRET", "instances-share-this-secret-0123456789"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("MOCK_TOKEN_DELAY_MS", "40"),
    ];
    settings.splice(0..0, extra.iter().copied());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            spawn_with("postgres", database.clone(), &settings)
                .await
                .api,
        );
    }
    instances
}

/// With `STREAM_ON_DISCONNECT=cancel`, a generation is cancelled when nobody
/// follows it: a follower on another instance counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_another_instance_keeps_a_cancellable_generation_running() {
    if std::env::var_os("E2E_BASE_URL").is_some() {
        return; // In process only: remote instances have their own settings.
    }
    let instances = spawn_instances(&[("STREAM_ON_DISCONNECT", "cancel")]).await;
    let [first, second, _] = instances.as_slice() else {
        return;
    };
    let account = first.account().await;
    let token = account.access_token.as_str();
    let mut origin = first
        .open_stream(token, &json!({ "message": "Tell me about iterators" }))
        .await
        .unwrap_or_else(|reply| panic!("no stream: {} {}", reply.status, reply.body));
    let start = origin.next().await.expect("a start event");
    let generation = start.data["generation_id"].as_str().unwrap().to_owned();
    let follower = second
        .follow(Some(token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body));
    // A few events later the first instance has read the count from Redis.
    for _ in 0..4 {
        origin.next().await.expect("a delta");
    }
    drop(origin);

    let followed = follower.rest().await;
    let done = followed.last().expect("events");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["message"]["status"], "complete", "{}", done.data);
    assert_eq!(deltas_text(&followed), done.data["message"]["content"]);
}
