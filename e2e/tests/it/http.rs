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
        hostile_ids_queries_and_headers_are_answered_cleanly,
        wrong_types_and_unknown_fields_change_nothing,
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

/// Whatever a path segment, query or header holds: a 4xx problem, never a
/// 5xx, and nothing changes.
async fn hostile_ids_queries_and_headers_are_answered_cleanly(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let session = api
        .create_session(&account, &json!({ "title": "kept" }))
        .await;
    let before = api.get("/sessions", token).await.expect(200).body;

    let huge = "9".repeat(40);
    for id in [
        "-1",
        "0",
        "9223372036854775807",
        huge.as_str(),
        "abc",
        "1.5",
        "%00",
        "1%20OR%201=1",
    ] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let mut request = api.request(method.clone(), &format!("/sessions/{id}"), token);
            if method == Method::PATCH {
                request = request.json(&json!({ "title": "changed" }));
            }
            let reply = api.send(request).await;
            let status = reply.status.as_u16();
            assert!(
                matches!(status, 400 | 404 | 422),
                "{method} /sessions/{id}: {status} {}",
                reply.body
            );
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json")
            );
        }
        let export = api.get(&format!("/sessions/{id}/export"), token).await;
        assert!(
            matches!(export.status.as_u16(), 400 | 404 | 422),
            "{id}: {}",
            export.body
        );
        let chat = api
            .chat(&account, &json!({ "session_id": id, "message": "hi" }))
            .await;
        assert!(
            matches!(chat.status.as_u16(), 400 | 404 | 422),
            "{id}: {}",
            chat.body
        );
    }
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "offset=-1",
        "offset=x",
        &format!("limit={huge}"),
    ] {
        let reply = api.get(&format!("/sessions?{query}"), token).await;
        let status = reply.status.as_u16();
        assert!(
            matches!(status, 400 | 422),
            "?{query}: {status} {}",
            reply.body
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
    }
    api.get("/sessions?limit=100&offset=0", token)
        .await
        .expect(200);

    // Header values far past any real token.
    let long = format!("Bearer {}", "a".repeat(6 * 1024));
    let reply = api
        .send(
            api.request(Method::GET, "/sessions", None)
                .header("authorization", long),
        )
        .await;
    assert!(
        matches!(reply.status.as_u16(), 401 | 431),
        "{}",
        reply.status
    );

    // Nothing above changed the session or created another.
    assert_eq!(api.get("/sessions", token).await.expect(200).body, before);
    let kept = api.session(&account, session["id"].as_i64().unwrap()).await;
    assert_eq!(
        (kept["title"].clone(), kept["message_count"].clone()),
        (json!("kept"), json!(0))
    );
}

async fn wrong_types_and_unknown_fields_change_nothing(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let session = api
        .create_session(&account, &json!({ "title": "kept" }))
        .await;
    let id = session["id"].as_i64().unwrap();

    let bad_sessions = [
        json!({ "title": 5 }),
        json!({ "title": ["a"] }),
        json!({ "title": null, "system_prompt": 7 }),
        json!({ "title": "x", "owner": 1 }),
        json!([]),
        json!("title"),
    ];
    for body in &bad_sessions {
        let created = api.post("/sessions", token, body).await;
        assert!(
            matches!(created.status.as_u16(), 400 | 422),
            "{body}: {}",
            created.body
        );
        let patched = api.patch(&format!("/sessions/{id}"), token, body).await;
        assert!(
            matches!(patched.status.as_u16(), 400 | 422),
            "{body}: {}",
            patched.body
        );
    }
    let bad_chats = [
        json!({ "message": 5 }),
        json!({ "message": "" }),
        json!({ "message": "   " }),
        json!({ "message": "x".repeat(32_001) }),
        json!({ "session_id": "1", "message": "hi" }),
        json!({ "session_id": id, "message": "hi", "role": "system" }),
        json!({ "session_id": id, "message": "hi", "model": 1 }),
    ];
    for body in &bad_chats {
        let reply = api.chat(&account, body).await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 422),
            "{body}: {}",
            reply.body
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
    }
    let register = api
        .post(
            "/auth/register",
            None,
            &json!({ "email": "a@b.co", "password": "secret123", "admin": true }),
        )
        .await;
    assert!(
        matches!(register.status.as_u16(), 400 | 422),
        "{}",
        register.body
    );

    let sessions = api.get("/sessions", token).await.expect(200).body;
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    let kept = api.session(&account, id).await;
    assert_eq!(
        (kept["title"].clone(), kept["message_count"].clone()),
        (json!("kept"), json!(0))
    );
    api.login_json("a@b.co", "secret123")
        .await
        .expect_problem(401, "invalid_credentials");
}
