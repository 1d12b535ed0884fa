//! What only DynamoDB can do wrong: throttle. The emulator never throttles, so
//! a stand-in speaks DynamoDB's wire protocol (JSON 1.0 over POST) and answers
//! every request with the error a table over its capacity returns.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::post};
use chat_core::testing;
use e2e::PASSWORD;

use crate::harness::spawn_with;

/// Starts the stand-in; returns its URL and how many requests it has had.
async fn always_throttling_dynamodb() -> (String, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let app = Router::new().route(
        "/",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;
                (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.0")],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_then_answered_503() {
    // The SDK needs a region and credentials; the emulator's environment has them.
    if testing::dynamodb_test_url()
        .expect("the DynamoDB emulator is required when CI is set")
        .is_none()
    {
        eprintln!("note: AWS_ENDPOINT_URL is not set; this check did not run");
        return;
    }
    let (endpoint, requests) = always_throttling_dynamodb().await;
    let target = spawn_with(
        "dynamodb-throttled",
        format!("dynamodb://throttled?endpoint={endpoint}"),
        &[
            ("DYNAMODB_CREATE_TABLE", "false"),
            ("DYNAMODB_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;

    let reply = target
        .api
        .register(&e2e::unique_email("throttled"), PASSWORD)
        .await
        .expect_problem(503, "store_unavailable");
    // Three tries of the first DynamoDB request, then the answer.
    assert_eq!(requests.load(Ordering::SeqCst), 3, "{}", reply.body);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("Throughput"), "{detail}");

    target
        .api
        .get("/health", None)
        .await
        .expect_problem(503, "store_unavailable");
}
