//! HTTP hygiene: every error is problem+json, requests carry ids, health answers.

use reqwest::Method;
use serde_json::json;

use crate::harness::Target;

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        health_reports_the_store,
        unknown_routes_and_methods_are_problems,
        bodies_that_are_too_large_malformed_or_not_json_are_rejected,
        every_response_carries_a_request_id,
    );
}

async fn health_reports_the_store(target: &Target) {
    let health = target.api.get("/health", None).await.expect(200).body;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["checks"]["store"], "ok");
    assert!(health["version"].is_string());
}

async fn unknown_routes_and_methods_are_problems(target: &Target) {
    let api = &target.api;
    api.get("/no/such/route", None)
        .await
        .expect_problem(404, "not_found");
    let reply = api
        .delete("/health", None)
        .await
        .expect_problem(405, "method_not_allowed");
    assert!(
        reply
            .header("allow")
            .is_some_and(|allow| allow.contains("GET"))
    );
    api.send(api.request(Method::PUT, "/sessions", None))
        .await
        .expect_problem(405, "method_not_allowed");
}

async fn bodies_that_are_too_large_malformed_or_not_json_are_rejected(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());

    let huge = json!({ "message": "x".repeat(1024 * 1024) });
    api.chat(&account, &huge)
        .await
        .expect_problem(413, "payload_too_large");

    let text = api
        .request(Method::POST, "/sessions", token)
        .header("content-type", "text/plain")
        .body("{\"title\": \"x\"}");
    api.send(text)
        .await
        .expect_problem(415, "unsupported_media_type");
    let missing_type = api
        .request(Method::POST, "/chat", token)
        .body("{\"message\": \"x\"}");
    api.send(missing_type)
        .await
        .expect_problem(415, "unsupported_media_type");

    for malformed in ["{\"title\": ", "{title: 1}", "{\"title\": \"x\",}", "\u{0}"] {
        let request = api
            .request(Method::POST, "/sessions", token)
            .header("content-type", "application/json")
            .body(malformed);
        api.send(request)
            .await
            .expect_problem(400, "malformed_body");
    }
    if api.is_lambda() {
        // cargo lambda's emulator cannot carry a non-UTF-8 JSON body into a
        // Lambda event: it answers 500 itself, before any function runs.
        eprintln!("note: the invalid UTF-8 body check does not run under the Lambda emulator");
    } else {
        let invalid_utf8 = api
            .request(Method::POST, "/sessions", token)
            .header("content-type", "application/json")
            .body(vec![b'{', b'"', b't', 0xff, 0xfe, b'"', b':', b'1', b'}']);
        api.send(invalid_utf8)
            .await
            .expect_problem(400, "malformed_body");
    }
    let login = api
        .request(Method::POST, "/auth/login", None)
        .header("content-type", "text/plain")
        .body("username=a&password=b");
    api.send(login)
        .await
        .expect_problem(415, "unsupported_media_type");

    // None of it created anything.
    let sessions = api.get("/sessions", token).await.expect(200).body;
    assert_eq!(sessions, json!([]));
}

async fn every_response_carries_a_request_id(target: &Target) {
    let api = &target.api;
    let generated = api.get("/health", None).await;
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 32)
    );
    let failed = api.get("/sessions", None).await;
    assert!(failed.header("x-request-id").is_some());
    let echoed = api
        .send(
            api.request(Method::GET, "/health", None)
                .header("x-request-id", "trace-me-123"),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-me-123"));
}
