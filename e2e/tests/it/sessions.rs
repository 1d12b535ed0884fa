//! Sessions: CRUD, ordering and paging, validation, privacy.

use serde_json::{Value, json};

use crate::harness::Target;

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        sessions_can_be_created_read_renamed_and_deleted,
        sessions_list_most_recently_active_first_with_paging,
        invalid_session_input_is_422_and_changes_nothing,
        another_users_session_is_a_404_like_a_missing_one,
        export_is_markdown_with_every_body_verbatim_or_json,
    );
}

async fn sessions_can_be_created_read_renamed_and_deleted(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());

    let untitled = api.create_session(&account, &json!({})).await;
    assert_eq!(untitled["title"], "New chat");
    assert_eq!(untitled["message_count"], 0);
    assert_eq!(untitled["system_prompt"], Value::Null);

    let created = api
        .create_session(
            &account,
            &json!({ "title": "  Python Help ", "system_prompt": "Answer briefly." }),
        )
        .await;
    assert_eq!(created["title"], "Python Help");
    assert_eq!(created["system_prompt"], "Answer briefly.");
    let id = created["id"].as_i64().unwrap();

    let shown = api.session(&account, id).await;
    assert_eq!(shown["messages"], json!([]));
    assert_eq!(shown["title"], "Python Help");

    let path = format!("/sessions/{id}");
    let renamed = api
        .patch(&path, token, &json!({ "title": "Rust Help" }))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (renamed["title"].as_str(), renamed["system_prompt"].as_str()),
        (Some("Rust Help"), Some("Answer briefly."))
    );
    let cleared = api
        .patch(&path, token, &json!({ "system_prompt": null }))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (cleared["title"].as_str(), &cleared["system_prompt"]),
        (Some("Rust Help"), &Value::Null)
    );
    let prompted = api
        .patch(&path, token, &json!({ "system_prompt": "Use examples." }))
        .await
        .expect(200)
        .body;
    assert_eq!(prompted["system_prompt"], "Use examples.");

    api.delete(&path, token).await.expect(204);
    api.get(&path, token)
        .await
        .expect_problem(404, "session_not_found");
    api.delete(&path, token)
        .await
        .expect_problem(404, "session_not_found");
    let listed = api.get("/sessions", token).await.expect(200).body;
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [untitled["id"].as_i64().unwrap()]);
}

async fn sessions_list_most_recently_active_first_with_paging(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let older = api
        .create_session(&account, &json!({ "title": "older" }))
        .await;
    let newer = api
        .create_session(&account, &json!({ "title": "newer" }))
        .await;
    let titles = |body: Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|s| s["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        titles(api.get("/sessions", token).await.expect(200).body),
        ["newer", "older"]
    );

    // Chatting in the older session makes it the most recently active.
    api.chat(
        &account,
        &json!({ "session_id": older["id"], "message": "hello" }),
    )
    .await
    .expect(200);
    assert_eq!(
        titles(api.get("/sessions", token).await.expect(200).body),
        ["older", "newer"]
    );
    assert_eq!(
        titles(api.get("/sessions?limit=1", token).await.expect(200).body),
        ["older"]
    );
    assert_eq!(
        titles(
            api.get("/sessions?limit=1&offset=1", token)
                .await
                .expect(200)
                .body
        ),
        ["newer"]
    );
    assert!(titles(api.get("/sessions?offset=2", token).await.expect(200).body).is_empty());
    let _ = newer;

    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=abc",
        "limit=1.5",
        "page=2",
    ] {
        api.get(&format!("/sessions?{bad}"), token)
            .await
            .expect_problem(422, "validation_failed");
    }
    api.get("/sessions?limit=100", token).await.expect(200);
}

async fn invalid_session_input_is_422_and_changes_nothing(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let session = api
        .create_session(
            &account,
            &json!({ "title": "kept", "system_prompt": "kept" }),
        )
        .await;
    let path = format!("/sessions/{}", session["id"]);

    let invalid = [
        json!({ "title": "" }),
        json!({ "title": "   " }),
        json!({ "title": "x".repeat(201) }),
        json!({ "title": 7 }),
        json!({ "system_prompt": "x".repeat(8001) }),
        json!({ "titel": "typo" }),
        json!({ "title": "nul \u{0}" }),
        json!({ "model": "gpt-5-ultra" }),
    ];
    for body in &invalid {
        api.post("/sessions", token, body)
            .await
            .expect_problem(422, "validation_failed");
        api.patch(&path, token, body)
            .await
            .expect_problem(422, "validation_failed");
    }
    let unchanged = api.session(&account, session["id"].as_i64().unwrap()).await;
    assert_eq!(
        (
            unchanged["title"].as_str(),
            unchanged["system_prompt"].as_str()
        ),
        (Some("kept"), Some("kept"))
    );
    assert_eq!(
        api.get("/sessions", token)
            .await
            .expect(200)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    for bad_id in ["abc", "1.5", "99999999999999999999999"] {
        api.get(&format!("/sessions/{bad_id}"), token)
            .await
            .expect_problem(422, "validation_failed");
    }
    api.get("/sessions/-1", token)
        .await
        .expect_problem(404, "session_not_found");
}

async fn another_users_session_is_a_404_like_a_missing_one(target: &Target) {
    let api = &target.api;
    let owner = api.account().await;
    let intruder = api.account().await;
    let session = api
        .create_session(&owner, &json!({ "title": "private" }))
        .await;
    let id = session["id"].as_i64().unwrap();
    api.chat(
        &owner,
        &json!({ "session_id": id, "message": "secret question" }),
    )
    .await
    .expect(200);

    let token = Some(intruder.access_token.as_str());
    let missing = i64::MAX;
    for probe in [id, missing] {
        let path = format!("/sessions/{probe}");
        let replies = [
            api.get(&path, token).await,
            api.patch(&path, token, &json!({ "title": "mine now" }))
                .await,
            api.delete(&path, token).await,
            api.chat(&intruder, &json!({ "session_id": probe, "message": "hi" }))
                .await,
            api.stream(
                &intruder.access_token,
                &json!({ "session_id": probe, "message": "hi" }),
            )
            .await
            .expect_err("no stream"),
        ];
        for reply in replies {
            let reply = reply.expect_problem(404, "session_not_found");
            assert_eq!(reply.body["detail"], "session not found");
        }
    }
    assert!(
        api.get("/sessions", token)
            .await
            .expect(200)
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );

    let intact = api.session(&owner, id).await;
    assert_eq!(intact["title"], "private");
    assert_eq!(intact["message_count"], 2);
    assert_eq!(intact["messages"].as_array().unwrap().len(), 2);
}

async fn export_is_markdown_with_every_body_verbatim_or_json(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let token = Some(account.access_token.as_str());
    let session = api
        .create_session(
            &account,
            &json!({ "title": "Décorateurs & closures", "system_prompt": "Réponds en 🇫🇷." }),
        )
        .await;
    let id = session["id"].as_i64().unwrap();
    let question = "Why does this fail?\n\n```python\ndef f(x):\n    return x  # ✓ naïve\n```\n\nIt says `TypeError`.";
    api.chat(&account, &json!({ "session_id": id, "message": question }))
        .await
        .expect(200);
    let stored = api.session(&account, id).await;

    let markdown = api
        .get(&format!("/sessions/{id}/export"), token)
        .await
        .expect(200);
    assert_eq!(
        markdown.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    let disposition = markdown.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with(&format!("attachment; filename=\"session-{id}-"))
            && disposition.ends_with(".md\""),
        "{disposition}"
    );
    let doc = markdown.body.as_str().unwrap();
    assert!(doc.starts_with("# Décorateurs & closures\n"), "{doc}");
    // Each section is a heading, a blank line and the body exactly as stored.
    let sections: Vec<&str> = doc.split("\n## ").skip(1).collect();
    let mut expected = vec![("System prompt".to_owned(), stored["system_prompt"].clone())];
    for message in stored["messages"].as_array().unwrap() {
        let role = if message["role"] == "user" {
            "User"
        } else {
            "Assistant"
        };
        expected.push((role.to_owned(), message["content"].clone()));
    }
    assert_eq!(sections.len(), expected.len(), "{doc}");
    for (section, (role, body)) in sections.iter().zip(&expected) {
        let (heading, rest) = section.split_once("\n\n").unwrap();
        assert!(heading.starts_with(role.as_str()), "{heading}");
        let body = body.as_str().unwrap();
        assert_eq!(rest.strip_suffix('\n').unwrap(), body);
    }
    assert_eq!(stored["messages"][0]["content"], question);

    let json = api
        .get(&format!("/sessions/{id}/export?format=json"), token)
        .await
        .expect(200);
    assert!(
        json.header("content-disposition")
            .unwrap()
            .ends_with(".json\"")
    );
    assert_eq!(json.body, stored);

    api.get(&format!("/sessions/{id}/export?format=pdf"), token)
        .await
        .expect_problem(422, "validation_failed");
    let stranger = api.account().await;
    api.get(
        &format!("/sessions/{id}/export"),
        Some(&stranger.access_token),
    )
    .await
    .expect_problem(404, "session_not_found");
}
