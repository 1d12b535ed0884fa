//! One generation served by three instances of the API that share a database,
//! a JWT key and Redis: server processes, or the Lambda functions of separate
//! execution environments. Started on the first, it is found, resumed and
//! followed through the second, and stopped through the third (a Lambda
//! environment serves one request at a time, and the second is busy
//! streaming). Their mock should answer slowly enough (tens of milliseconds a
//! word) that the generation still runs while the others are asked about it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Api, LiveStream, SseEvent, deltas_text};

/// Runs the whole scenario; panics with what went wrong.
pub async fn resumed_followed_and_stopped_elsewhere([first, second, third]: [&Api; 3]) {
    let account = first.account().await;
    let token = account.access_token.as_str();

    // Started on the first instance; the client drops after 3 deltas.
    let (mut dropped, start) = started(first, token, "Tell me about iterators").await;
    let generation = generation_of(&start);
    let session_id = start.data["session_id"].as_i64().expect("session_id");
    let mut received = vec![start];
    for _ in 0..3 {
        received.push(dropped.next().await.expect("a delta"));
    }
    drop(dropped);
    let session = second.session(&account, session_id).await;
    assert_eq!(
        session["generation_in_progress"], generation,
        "the second instance sees the generation running"
    );

    // Resumed through the second: exactly the events missed.
    let last = received.last().expect("events").id.clone();
    let rest = opened(
        second
            .follow(Some(token), &generation, Some(&last), "")
            .await,
    )
    .rest()
    .await;
    assert_eq!(
        rest.first().expect("events").event,
        "delta",
        "no start again"
    );
    received.extend(rest);
    let sequences: Vec<usize> = received
        .iter()
        .map(|event| sequence(event, &generation))
        .collect();
    assert_eq!(
        sequences,
        (1..=received.len()).collect::<Vec<_>>(),
        "none twice, none lost"
    );
    let done = received.last().expect("events");
    assert_eq!(done.event, "done");
    assert_eq!(deltas_text(&received), done.data["message"]["content"]);
    let session = second.session(&account, session_id).await;
    assert_eq!(session["messages"][1], done.data["message"]);
    assert_eq!(session["generation_in_progress"], Value::Null);
    // An EventSource reconnects even after `done`: that stream ends at once, empty.
    let after_done = opened(
        second
            .follow(Some(token), &generation, Some(&done.id), "")
            .await,
    );
    let nothing = tokio::time::timeout(Duration::from_secs(10), after_done.rest())
        .await
        .expect("a reconnect after the last event ends at once");
    assert!(nothing.is_empty(), "{nothing:?}");

    // Followed from the second while it runs on the first, stopped from the third.
    let (mut origin, start) = started(first, token, "Tell me a long story").await;
    let generation = generation_of(&start);
    let follower = opened(second.follow(Some(token), &generation, None, "").await);
    let mut at_origin = vec![start];
    for _ in 0..3 {
        at_origin.push(origin.next().await.expect("a delta"));
    }
    let stopped = third.stop(token, &generation).await.expect(200).body;
    assert_eq!(stopped["message"]["status"], "stopped", "{stopped}");
    assert!(stopped["usage"]["completion_tokens"].as_i64() > Some(0));
    at_origin.extend(origin.rest().await);
    let followed = follower.rest().await;
    assert_eq!(
        identities(&at_origin),
        identities(&followed),
        "both clients receive the same events"
    );
    let done = followed.last().expect("events");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["message"], stopped["message"]);
    assert_eq!(deltas_text(&followed), stopped["message"]["content"]);
    let session = first.session(&account, start_session(&at_origin)).await;
    assert_eq!(session["messages"][1], stopped["message"]);
    // Stopping again, here or elsewhere, answers how it ended.
    for api in [first, second] {
        assert_eq!(api.stop(token, &generation).await.expect(200).body, stopped);
    }

    // Another user's generation, or none, is the same 404 on the second.
    let other = second.account().await;
    for (token, id) in [
        (other.access_token.as_str(), generation.as_str()),
        (token, "00000000000000000000000000000000"),
    ] {
        second
            .follow(Some(token), id, None, "")
            .await
            .err()
            .expect("not a stream")
            .expect_problem(404, "generation_not_found");
        second
            .stop(token, id)
            .await
            .expect_problem(404, "generation_not_found");
    }
}

async fn started(api: &Api, token: &str, message: &str) -> (LiveStream, SseEvent) {
    let mut stream = opened(api.open_stream(token, &json!({ "message": message })).await);
    let start = stream.next().await.expect("a start event");
    assert_eq!(start.event, "start");
    (stream, start)
}

fn opened(stream: Result<LiveStream, crate::Reply>) -> LiveStream {
    stream.unwrap_or_else(|reply| panic!("no stream: {} {}", reply.status, reply.body))
}

fn generation_of(start: &SseEvent) -> String {
    start.data["generation_id"]
        .as_str()
        .expect("generation_id")
        .to_owned()
}

fn start_session(events: &[SseEvent]) -> i64 {
    events[0].data["session_id"].as_i64().expect("session_id")
}

/// The sequence number of an event's `GENERATION:SEQUENCE` id.
fn sequence(event: &SseEvent, generation_id: &str) -> usize {
    let (generation, sequence) = event.id.split_once(':').expect("GENERATION:SEQUENCE");
    assert_eq!(generation, generation_id);
    sequence.parse().expect("a sequence number")
}

fn identities(events: &[SseEvent]) -> Vec<(&str, &str, &Value)> {
    events
        .iter()
        .map(|event| (event.event.as_str(), event.id.as_str(), &event.data))
        .collect()
}
