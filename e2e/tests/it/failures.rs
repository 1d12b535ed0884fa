//! A failing provider: the user's message survives and the error is a problem.

use serde_json::json;

use crate::harness::Target;

mod fails_always {
    crate::scenarios!(crate::harness::Mock::FailsAlways =>
        a_provider_failure_is_a_502_and_keeps_the_question,
        a_stream_whose_provider_fails_ends_with_an_error_event,
    );
}

mod fails_mid_stream {
    crate::scenarios!(crate::harness::Mock::FailsMidStream =>
        a_stream_broken_mid_way_stores_the_partial_answer_as_incomplete,
    );
}

async fn a_provider_failure_is_a_502_and_keeps_the_question(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let session = api.create_session(&account, &json!({ "title": "t" })).await;
    let id = session["id"].as_i64().unwrap();

    let reply = api
        .chat(
            &account,
            &json!({ "session_id": id, "message": "Will this survive?" }),
        )
        .await
        .expect_problem(502, "provider_unavailable");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("panicked") && !detail.contains("sqlx"),
        "{detail}"
    );

    assert_eq!(reply.body["session_id"], id);
    let stored = api.session(&account, id).await;
    assert_eq!(stored["message_count"], 1);
    assert_eq!(stored["messages"][0]["role"], "user");
    assert_eq!(stored["messages"][0]["content"], "Will this survive?");

    // Without a session id, the problem names the session that now holds the question.
    let reply = api
        .chat(&account, &json!({ "message": "And this one?" }))
        .await
        .expect_problem(502, "provider_unavailable");
    let new_id = reply.body["session_id"]
        .as_i64()
        .expect("the problem names the session");
    let stored = api.session(&account, new_id).await;
    assert_eq!(stored["messages"][0]["content"], "And this one?");
}

async fn a_stream_whose_provider_fails_ends_with_an_error_event(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let stream = api
        .stream(
            &account.access_token,
            &json!({ "message": "Will this survive too?" }),
        )
        .await
        .expect("an SSE stream");
    assert_eq!(stream.names(), ["start", "error"]);
    let error = &stream.last().data;
    assert_eq!(
        (error["status"].as_i64(), error["code"].as_str()),
        (Some(502), Some("provider_unavailable"))
    );

    let id = stream.events[0].data["session_id"].as_i64().unwrap();
    let stored = api.session(&account, id).await;
    assert_eq!(stored["message_count"], 1);
    assert_eq!(stored["messages"][0]["content"], "Will this survive too?");
}

async fn a_stream_broken_mid_way_stores_the_partial_answer_as_incomplete(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let stream = api
        .stream(
            &account.access_token,
            &json!({ "message": "Tell me a long story" }),
        )
        .await
        .expect("an SSE stream");
    let names = stream.names();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert!(
        names.contains(&"delta") && !names.contains(&"done"),
        "{names:?}"
    );
    assert_eq!(stream.last().data["code"], "provider_interrupted");

    let id = stream.events[0].data["session_id"].as_i64().unwrap();
    let stored = api.session(&account, id).await;
    assert_eq!(stored["message_count"], 2);
    let partial = &stored["messages"][1];
    assert_eq!(partial["status"], "incomplete");
    assert_eq!(partial["content"], stream.text());
    assert!(partial["tokens"].as_i64().unwrap() > 0);

    // The non-streaming route fails cleanly too and keeps the question.
    let reply = api
        .chat(&account, &json!({ "session_id": id, "message": "Again?" }))
        .await
        .expect_problem(502, "provider_interrupted");
    let _ = reply;
    assert_eq!(api.session(&account, id).await["message_count"], 3);
}
