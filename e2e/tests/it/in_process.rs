//! Checks that need to configure the server or break its database, so they
//! always run against a server spawned in this process.

use chat_core::testing;
use reqwest::Method;
use serde_json::json;

use crate::harness::{hang_up_after, spawn_with, stored_answer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_the_database_is_gone() {
    let Some(admin) = testing::postgres_admin_url().expect("Postgres is required when CI is set")
    else {
        eprintln!("note: TEST_DATABASE_URL is not set; this check did not run");
        return;
    };
    let url = testing::fresh_postgres_database(&admin).await.unwrap();
    let target = spawn_with("postgres", url.clone(), &[]).await;
    let api = &target.api;
    api.get("/health", None).await.expect(200);
    let account = api.account().await;

    // Take the database away under the running server.
    let name = url.rsplit('/').next().unwrap();
    let mut admin_conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin_conn)
    .await
    .unwrap();

    let health = api
        .get("/health", None)
        .await
        .expect_problem(503, "store_unavailable");
    assert_eq!(health.body["checks"]["store"], "unavailable");
    // Requests that need the store fail cleanly too: a problem, never a hang or a bare 500.
    let reply = api.get("/sessions", Some(&account.access_token)).await;
    assert!(reply.status.is_server_error(), "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let detail = reply.body["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        !detail.contains("database \"") && !detail.contains("sqlx"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let target = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[(
            "CORS_ORIGINS",
            "https://app.example.com, http://localhost:3000",
        )],
    )
    .await;
    let api = &target.api;
    let preflight = |origin: &'static str| {
        api.request(Method::OPTIONS, "/chat", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let allowed = api.send(preflight("https://app.example.com")).await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let allowed_headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let refused = api.send(preflight("https://evil.example.com")).await;
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let simple = api
        .send(
            api.request(Method::GET, "/health", None)
                .header("origin", "http://localhost:3000"),
        )
        .await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(allowed.header("access-control-allow-credentials"), None);

    // `*`: any page may call with the token it holds, never with credentials.
    let open = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[("CORS_ORIGINS", "*")],
    )
    .await;
    let preflight = open
        .api
        .request(Method::OPTIONS, "/chat", None)
        .header("origin", "https://anywhere.example.net")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        );
    let any = open.api.send(preflight).await;
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    assert_eq!(any.header("access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_window_is_bounded_by_message_count() {
    let target = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[("HISTORY_MAX_MESSAGES", "4")],
    )
    .await;
    let api = &target.api;
    let account = api.account().await;
    let first = api
        .chat(&account, &json!({ "message": "one" }))
        .await
        .expect(200)
        .body;
    let id = first["session_id"].clone();
    for (message, context) in [("two", 3), ("three", 4), ("four", 4)] {
        let reply = api
            .chat(&account, &json!({ "session_id": id, "message": message }))
            .await
            .expect(200)
            .body;
        let content = reply["message"]["content"].as_str().unwrap();
        assert!(
            content.contains(&format!("with {context} messages of context")),
            "{content}"
        );
    }
}

/// Opens a stream, reads `start` and three deltas, hangs up, and returns the
/// assistant message the server eventually stores.
async fn answer_stored_after_hanging_up(policy: &str) -> serde_json::Value {
    let extra = [
        ("STREAM_ON_DISCONNECT", policy),
        ("MOCK_TOKEN_DELAY_MS", "40"),
    ];
    let target = spawn_with("sqlite", testing::fresh_sqlite_url(), &extra).await;
    let api = &target.api;
    let account = api.account().await;
    let session_id = hang_up_after(api, &account, "Tell me about generators", 3).await;
    stored_answer(api, &account, session_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_still_gets_its_answer_stored_by_default() {
    let stored = answer_stored_after_hanging_up("finish").await;
    assert_eq!(stored["status"], "complete");
    let words = stored["content"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .count();
    assert!(words >= 20, "the whole answer is stored: {stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cancel_a_hang_up_stops_the_generation_and_stores_the_part_generated() {
    let stored = answer_stored_after_hanging_up("cancel").await;
    assert_eq!(stored["status"], "incomplete");
    let words = stored["content"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .count();
    assert!(
        (3..20).contains(&words),
        "only the part generated before the hang-up: {stored}"
    );
    assert!(
        stored["tokens"].as_i64().unwrap() > 0,
        "usage is counted either way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_priced_from_the_configured_table() {
    let target = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[("LLM_PRICES", "mock=1000/3000, gpt-4o=2.5/10")],
    )
    .await;
    let api = &target.api;
    let account = api.account().await;
    let reply = api
        .chat(&account, &json!({ "message": "price me" }))
        .await
        .expect(200)
        .body;
    let prompt = reply["usage"]["prompt_tokens"].as_f64().unwrap();
    let completion = reply["usage"]["completion_tokens"].as_f64().unwrap();
    let expected = (prompt * 1000.0 + completion * 3000.0) / 1e6;

    let usage = api
        .get("/usage", Some(&account.access_token))
        .await
        .expect(200)
        .body;
    let month = &usage["months"][0];
    let cost = month["cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");
    assert_eq!(month["models"][0]["cost_usd"], month["cost_usd"]);
}
