//! POST /chat/stream, read with an SSE client library.

use serde_json::json;

use crate::harness::Target;

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        a_stream_is_start_deltas_done_and_matches_what_is_stored,
        a_stream_without_a_session_starts_one,
        a_stream_arrives_while_the_answer_is_being_generated,
    );
}

async fn a_stream_is_start_deltas_done_and_matches_what_is_stored(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let session = api
        .create_session(&account, &json!({ "title": "streamed" }))
        .await;
    let id = session["id"].as_i64().unwrap();

    let stream = api
        .stream(
            &account.access_token,
            &json!({ "session_id": id, "message": "Explain closures\nwith an example." }),
        )
        .await
        .expect("an SSE stream");
    assert_eq!(stream.status, 200);
    let header = |name: &str| stream.headers.get(name).and_then(|v| v.to_str().ok());
    assert!(
        header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(header("cache-control"), Some("no-cache"));
    assert_eq!(header("x-accel-buffering"), Some("no"));

    let names = stream.names();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"done"));
    let deltas = names.iter().filter(|name| **name == "delta").count();
    assert!(deltas >= 2, "{names:?}");
    assert_eq!(
        deltas,
        names.len() - 2,
        "only deltas between start and done: {names:?}"
    );

    let start = &stream.events[0].data;
    assert_eq!(start["session_id"], id);
    assert_eq!(start["user_message"]["role"], "user");
    assert_eq!(
        start["user_message"]["content"],
        "Explain closures\nwith an example."
    );

    let done = &stream.last().data;
    let text = stream.text();
    assert_eq!(done["message"]["content"], text);
    assert_eq!(done["message"]["status"], "complete");
    assert_eq!(
        done["usage"]["completion_tokens"],
        done["message"]["tokens"]
    );

    // The answer was stored before `done` was sent, exactly as streamed.
    let stored = api.session(&account, id).await;
    assert_eq!(stored["message_count"], 2);
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages[0], start["user_message"]);
    assert_eq!(messages[1], done["message"]);
    assert_eq!(messages[1]["content"], text);
}

async fn a_stream_without_a_session_starts_one(target: &Target) {
    let api = &target.api;
    let account = api.account().await;
    let stream = api
        .stream(
            &account.access_token,
            &json!({ "message": "Tell me about iterators" }),
        )
        .await
        .expect("an SSE stream");
    assert_eq!(stream.names().last(), Some(&"done"));
    let id = stream.events[0].data["session_id"].as_i64().unwrap();
    let session = api.session(&account, id).await;
    assert_eq!(session["title"], "Tell me about iterators");
    assert_eq!(session["messages"][1]["content"], stream.text());
}

/// The first `delta` reaches the client while the rest is still being
/// generated: the answer is not stored yet when it arrives. (A buffering
/// proxy or runtime would deliver everything only after the answer was stored.)
async fn a_stream_arrives_while_the_answer_is_being_generated(target: &Target) {
    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    let api = &target.api;
    let account = api.account().await;
    let session = api
        .create_session(&account, &json!({ "title": "live" }))
        .await;
    let id = session["id"].as_i64().unwrap();
    let response = api
        .request(
            reqwest::Method::POST,
            "/chat/stream",
            Some(&account.access_token),
        )
        .json(&json!({ "session_id": id, "message": "Stream this, please" }))
        .send()
        .await
        .unwrap();
    let mut events = response.bytes_stream().eventsource();
    assert_eq!(events.next().await.unwrap().unwrap().event, "start");
    assert_eq!(events.next().await.unwrap().unwrap().event, "delta");
    assert_eq!(
        api.session(&account, id).await["message_count"],
        1,
        "the first delta arrived only after the whole answer was generated and stored"
    );
    let mut last = String::new();
    while let Some(event) = events.next().await {
        last = event.unwrap().event;
    }
    assert_eq!(last, "done");
    assert_eq!(api.session(&account, id).await["message_count"], 2);
}
