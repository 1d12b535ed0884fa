//! POST /chat: the seed's scenario, new sessions, validation, history, concurrency.

use std::collections::HashSet;

use e2e::PASSWORD;
use futures::future::join_all;
use serde_json::json;

use crate::harness::Target;

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        the_seed_curl_scenario_works,
        chat_without_a_session_starts_one_titled_from_the_message,
        answers_use_the_history_and_count_tokens,
        invalid_chat_requests_are_422_and_store_nothing,
        concurrent_chats_into_one_session_lose_nothing,
        usage_adds_up_each_exchange_of_the_month,
    );
}

/// The README's four curl calls, in order, with the form login.
async fn the_seed_curl_scenario_works(target: &Target) {
    let api = &target.api;
    let email = e2e::unique_email("test");
    api.register(&email, PASSWORD).await.expect(201);
    let login = api.login_form(&email, PASSWORD).await.expect(200).body;
    let token = login["access_token"].as_str().unwrap();

    let session = api
        .post("/sessions", Some(token), &json!({ "title": "Python Help" }))
        .await
        .expect(201)
        .body;
    assert_eq!(session["title"], "Python Help");
    let id = session["id"].as_i64().unwrap();

    let reply = api
        .post(
            "/chat",
            Some(token),
            &json!({ "session_id": id, "message": "What is a decorator?" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(reply["session_id"], id);
    let message = &reply["message"];
    assert_eq!(
        (message["role"].as_str(), message["status"].as_str()),
        (Some("assistant"), Some("complete"))
    );
    assert!(
        message["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count()
            >= 20
    );
    assert!(message["created_at"].as_str().unwrap().ends_with('Z'));
    let usage = &reply["usage"];
    assert!(
        usage["prompt_tokens"].as_i64().unwrap() > 0
            && usage["completion_tokens"].as_i64().unwrap() > 0
    );

    let stored = api
        .get(&format!("/sessions/{id}"), Some(token))
        .await
        .expect(200)
        .body;
    assert_eq!(stored["message_count"], 2);
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "What is a decorator?");
    assert_eq!(&messages[1], message);
}

async fn chat_without_a_session_starts_one_titled_from_the_message(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let reply = api
        .chat(
            &account,
            &json!({ "message": "How do Python decorators work with arguments?" }),
        )
        .await
        .expect(200)
        .body;
    let session = api
        .session(&account, reply["session_id"].as_i64().unwrap())
        .await;
    assert_eq!(
        session["title"],
        "How do Python decorators work with arguments?"
    );
    assert_eq!(session["message_count"], 2);

    let long = "word ".repeat(50);
    let reply = api
        .chat(&account, &json!({ "message": long }))
        .await
        .expect(200)
        .body;
    let session = api
        .session(&account, reply["session_id"].as_i64().unwrap())
        .await;
    let title = session["title"].as_str().unwrap();
    assert!(
        title.starts_with("word word") && title.ends_with('…') && title.chars().count() <= 61,
        "{title}"
    );
}

async fn answers_use_the_history_and_count_tokens(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let first = api
        .chat(&account, &json!({ "message": "What is a decorator?" }))
        .await
        .expect(200)
        .body;
    let id = first["session_id"].clone();
    // The mock says how many messages of context it was given.
    assert!(
        first["message"]["content"]
            .as_str()
            .unwrap()
            .contains("with 1 message of context")
    );
    let second = api
        .chat(
            &account,
            &json!({ "session_id": id, "message": "And a closure?" }),
        )
        .await
        .expect(200)
        .body;
    assert!(
        second["message"]["content"]
            .as_str()
            .unwrap()
            .contains("with 3 messages of context")
    );
    assert!(second["usage"]["prompt_tokens"].as_i64() > first["usage"]["prompt_tokens"].as_i64());

    for reply in [&first, &second] {
        let usage = &reply["usage"];
        let total =
            usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap();
        assert_eq!(usage["total_tokens"], total);
        assert_eq!(reply["message"]["tokens"], usage["completion_tokens"]);
    }
    let session = api.session(&account, id.as_i64().unwrap()).await;
    for message in session["messages"].as_array().unwrap() {
        assert!(message["tokens"].as_i64().unwrap() > 0, "{message}");
    }
    // The same history gives the same answer: the mock is deterministic.
    let again = api
        .chat(&account, &json!({ "message": "What is a decorator?" }))
        .await
        .expect(200)
        .body;
    assert_eq!(again["message"]["content"], first["message"]["content"]);
}

async fn invalid_chat_requests_are_422_and_store_nothing(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let session = api.create_session(&account, &json!({ "title": "t" })).await;
    let id = session["id"].clone();
    let invalid = [
        json!({ "session_id": id, "message": "" }),
        json!({ "session_id": id, "message": " \n\t " }),
        json!({ "session_id": id, "message": "x".repeat(32_001) }),
        json!({ "session_id": id }),
        json!({ "session_id": id, "message": 42 }),
        json!({ "session_id": "one", "message": "hi" }),
        json!({ "session_id": id, "message": "hi", "model": "gpt-5-ultra" }),
        json!({ "session_id": id, "message": "hi", "temperature": 2 }),
        json!({ "session_id": id, "message": "nul \u{0} inside" }),
    ];
    for body in &invalid {
        api.chat(&account, body)
            .await
            .expect_problem(422, "validation_failed");
        let streamed = api
            .stream(&account.access_token, body)
            .await
            .expect_err("no stream");
        streamed.expect_problem(422, "validation_failed");
    }
    let model = api
        .chat(
            &account,
            &json!({ "session_id": id, "message": "hi", "model": "gpt-5-ultra" }),
        )
        .await
        .body;
    assert_eq!(model["errors"][0]["field"], "model");
    assert_eq!(
        api.session(&account, id.as_i64().unwrap()).await["message_count"],
        0
    );
    let sessions = api
        .get("/sessions", Some(&account.access_token))
        .await
        .expect(200)
        .body;
    assert_eq!(
        sessions.as_array().unwrap().len(),
        1,
        "no session was created by a rejected chat"
    );
    // The configured model by name is accepted.
    api.chat(
        &account,
        &json!({ "session_id": id, "message": "hi", "model": "mock" }),
    )
    .await
    .expect(200);
}

async fn concurrent_chats_into_one_session_lose_nothing(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let session = api
        .create_session(&account, &json!({ "title": "busy" }))
        .await;
    let id = session["id"].as_i64().unwrap();
    let chats = (0..50).map(|n| {
        let (api, account) = (api.clone(), account.clone());
        tokio::spawn(async move {
            let body = json!({ "session_id": id, "message": format!("question {n}") });
            (n, api.chat(&account, &body).await.expect(200).body)
        })
    });
    for reply in join_all(chats).await {
        // Each answer is to its own question, whatever was stored meanwhile.
        let (n, reply) = reply.unwrap();
        let answer = reply["message"]["content"].as_str().unwrap();
        assert!(
            answer.contains(&format!("answering \"question {n}\"")),
            "{answer}"
        );
    }
    let stored = api.session(&account, id).await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(stored["message_count"], 100);
    assert_eq!(messages.len(), 100);
    let ids: HashSet<i64> = messages.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 100, "duplicate message ids");
    let questions: HashSet<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(questions.len(), 50, "every question stored exactly once");
    let answers = messages.iter().filter(|m| m["role"] == "assistant").count();
    assert_eq!(answers, 50);
}

async fn usage_adds_up_each_exchange_of_the_month(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let fresh = api.get("/usage", token).await.expect(200).body;
    let month = fresh["months"][0]["month"].as_str().unwrap().to_owned();
    assert_eq!(month.len(), 7, "YYYY-MM: {month}");
    assert_eq!(fresh["months"][0]["requests"], 0);
    assert_eq!(fresh["months"].as_array().unwrap().len(), 1);

    let (mut prompt, mut completion) = (0, 0);
    for message in ["first question", "second question"] {
        let reply = api
            .chat(&account, &json!({ "message": message }))
            .await
            .expect(200)
            .body;
        prompt += reply["usage"]["prompt_tokens"].as_i64().unwrap();
        completion += reply["usage"]["completion_tokens"].as_i64().unwrap();
    }
    let usage = api.get("/usage", token).await.expect(200).body;
    let current = &usage["months"][0];
    assert_eq!(current["month"], month.as_str());
    assert_eq!(current["requests"], 2);
    assert_eq!(current["prompt_tokens"], prompt);
    assert_eq!(current["completion_tokens"], completion);
    assert_eq!(current["total_tokens"], prompt + completion);
    assert_eq!(current["models"][0]["model"], "mock");
    assert_eq!(current["models"][0]["requests"], 2);

    // Usage is private: a newcomer sees none of it.
    let other = api.account().await;
    let theirs = api
        .get("/usage", Some(&other.access_token))
        .await
        .expect(200)
        .body;
    assert_eq!(theirs["months"][0]["requests"], 0);
    api.get("/usage", None)
        .await
        .expect_problem(401, "unauthorized");
}
