//! Resumable streams: reconnecting with `Last-Event-ID`, following a
//! generation from a second client, stopping it, and the 404s and 422s around
//! them. In process, on one instance (the mock answering a word every 30 ms).

use chat_core::testing;
use e2e::{Account, Api, LiveStream, SseEvent, deltas_text};
use serde_json::{Value, json};

use crate::harness::spawn_with;

async fn api() -> Api {
    spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[("MOCK_TOKEN_DELAY_MS", "30")],
    )
    .await
    .api
}

/// Opens a stream and reads its `start` event.
async fn started(api: &Api, account: &Account, message: &str) -> (LiveStream, SseEvent) {
    let mut stream = api
        .open_stream(&account.access_token, &json!({ "message": message }))
        .await
        .unwrap_or_else(|reply| panic!("no stream: {} {}", reply.status, reply.body));
    let start = stream.next().await.expect("a start event");
    assert_eq!(start.event, "start");
    (stream, start)
}

fn generation_of(start: &SseEvent) -> String {
    start.data["generation_id"].as_str().unwrap().to_owned()
}

/// The sequence number of an event's `GENERATION:SEQUENCE` id.
fn sequence(event: &SseEvent, generation_id: &str) -> usize {
    let (generation, sequence) = event.id.split_once(':').expect("GENERATION:SEQUENCE");
    assert_eq!(generation, generation_id);
    sequence.parse().unwrap()
}

fn stored_answer(session: &Value) -> &Value {
    &session["messages"][1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_gets_exactly_the_events_missed() {
    let api = api().await;
    let account = api.account().await;
    let (mut first, start) = started(&api, &account, "Tell me about iterators").await;
    let generation = generation_of(&start);
    assert_eq!(sequence(&start, &generation), 1);
    let mut received = vec![start.clone()];
    for _ in 0..3 {
        received.push(first.next().await.unwrap());
    }
    let last = received.last().unwrap().id.clone();
    drop(first); // the connection drops mid-answer

    let rest = api
        .follow(Some(&account.access_token), &generation, Some(&last), "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
        .rest()
        .await;
    assert_eq!(rest.first().unwrap().event, "delta", "no start again");
    assert_eq!(rest.last().unwrap().event, "done");
    received.extend(rest);
    let sequences: Vec<usize> = received
        .iter()
        .map(|event| sequence(event, &generation))
        .collect();
    let expected: Vec<usize> = (1..=received.len()).collect();
    assert_eq!(sequences, expected, "none twice, none lost");

    let done = &received.last().unwrap().data;
    assert_eq!(deltas_text(&received), done["message"]["content"]);
    let session_id = start.data["session_id"].as_i64().unwrap();
    let session = api.session(&account, session_id).await;
    assert_eq!(stored_answer(&session), &done["message"]);
    assert_eq!(session["generation_in_progress"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_following_one_generation_receive_identical_events() {
    let api = api().await;
    let account = api.account().await;
    let (mut first, start) = started(&api, &account, "Explain closures").await;
    let generation = generation_of(&start);
    let session_id = start.data["session_id"].as_i64().unwrap();
    // A client opening the session sees the generation and attaches to it.
    let session = api.session(&account, session_id).await;
    assert_eq!(session["generation_in_progress"], generation.as_str());
    let second = api
        .follow(Some(&account.access_token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body));

    let (first_rest, second_events) = tokio::join!(
        async {
            let mut events = vec![start.clone()];
            while let Some(event) = first.next().await {
                events.push(event);
            }
            events
        },
        second.rest()
    );
    let key = |events: &[SseEvent]| -> Vec<(String, String, Value)> {
        events
            .iter()
            .map(|event| (event.event.clone(), event.id.clone(), event.data.clone()))
            .collect()
    };
    assert!(first_rest.len() > 3, "{}", first_rest.len());
    assert_eq!(key(&first_rest), key(&second_events));
    assert_eq!(second_events.last().unwrap().event, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_generation_is_replayed_whole_and_its_stream_ends() {
    let api = api().await;
    let account = api.account().await;
    let (first, start) = started(&api, &account, "What is a monad?").await;
    let generation = generation_of(&start);
    let mut original = vec![start];
    original.extend(first.rest().await);

    let replay = api
        .follow(Some(&account.access_token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
        .rest()
        .await;
    let ids = |events: &[SseEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&replay), ids(&original));
    assert_eq!(replay.last().unwrap().data, original.last().unwrap().data);

    // `after` names where to start when there is no Last-Event-ID.
    let tail = api
        .follow(Some(&account.access_token), &generation, None, "?after=2")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
        .rest()
        .await;
    assert_eq!(ids(&tail), ids(&original[2..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_authenticates_with_the_access_token_in_the_query() {
    let api = api().await;
    let account = api.account().await;
    let (_first, start) = started(&api, &account, "Hello").await;
    let generation = generation_of(&start);
    let query = format!("?access_token={}", account.access_token);
    let events = api
        .follow(None, &generation, None, &query)
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
        .rest()
        .await;
    assert_eq!(events.first().unwrap().event, "start");
    assert_eq!(events.last().unwrap().event, "done");
    api.follow(None, &generation, None, "?access_token=forged")
        .await
        .err()
        .expect("a forged token is refused")
        .expect_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_other_users_generations_are_404_and_a_foreign_last_event_id_is_422() {
    let api = api().await;
    let owner = api.account().await;
    let other = api.account().await;
    let (_stream, start) = started(&api, &owner, "Mine").await;
    let generation = generation_of(&start);

    for (token, id) in [
        (&other.access_token, generation.as_str()),
        (&owner.access_token, "00000000000000000000000000000000"),
        (&owner.access_token, "not-a-generation"),
    ] {
        api.follow(Some(token), id, None, "")
            .await
            .err()
            .expect("not a stream")
            .expect_problem(404, "generation_not_found");
        api.stop(token, id)
            .await
            .expect_problem(404, "generation_not_found");
    }
    api.follow(None, &generation, None, "")
        .await
        .err()
        .expect("not a stream")
        .expect_problem(401, "unauthorized");
    for last in ["someone-else:3", "garbage", &format!("{generation}:x")] {
        api.follow(Some(&owner.access_token), &generation, Some(last), "")
            .await
            .err()
            .expect("not a stream")
            .expect_problem(422, "validation_failed");
    }
    // Nothing above touched the generation: it still ends as it should.
    let events = api
        .follow(Some(&owner.access_token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
        .rest()
        .await;
    assert_eq!(events.last().unwrap().data["message"]["status"], "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_every_follower_with_done_and_stores_the_part_generated() {
    let api = api().await;
    let account = api.account().await;
    let (mut first, start) = started(&api, &account, "Tell me a long story").await;
    let generation = generation_of(&start);
    let second = api
        .follow(Some(&account.access_token), &generation, None, "")
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body));
    let mut received = vec![start.clone()];
    for _ in 0..3 {
        received.push(first.next().await.unwrap());
    }

    let stopped = api
        .stop(&account.access_token, &generation)
        .await
        .expect(200)
        .body;
    assert_eq!(stopped["message"]["status"], "stopped");
    let content = stopped["message"]["content"].as_str().unwrap();
    assert!(content.split_whitespace().count() >= 3, "{content}");
    assert!(stopped["usage"]["completion_tokens"].as_i64().unwrap() > 0);

    received.extend(first.rest().await);
    let followed = second.rest().await;
    for events in [&received, &followed] {
        let done = events.last().unwrap();
        assert_eq!(done.event, "done");
        assert_eq!(done.data["message"], stopped["message"]);
        assert_eq!(deltas_text(events), content);
    }
    let session_id = start.data["session_id"].as_i64().unwrap();
    let session = api.session(&account, session_id).await;
    assert_eq!(stored_answer(&session), &stopped["message"]);
    // Stopping again answers how it ended.
    let again = api
        .stop(&account.access_token, &generation)
        .await
        .expect(200)
        .body;
    assert_eq!(again, stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_its_own_instance_still_serves_a_generation() {
    // Nothing listens on port 1: every Redis call fails at once.
    let api = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[
            ("MOCK_TOKEN_DELAY_MS", "30"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    )
    .await
    .api;
    let account = api.account().await;
    let (mut first, start) = started(&api, &account, "Tell me about iterators").await;
    let generation = generation_of(&start);
    let session_id = start.data["session_id"].as_i64().unwrap();
    let session = api.session(&account, session_id).await;
    assert_eq!(session["generation_in_progress"], generation.as_str());
    let mut received = vec![start];
    for _ in 0..2 {
        received.push(first.next().await.unwrap());
    }
    drop(first);

    let last = received.last().unwrap().id.clone();
    received.extend(
        api.follow(Some(&account.access_token), &generation, Some(&last), "")
            .await
            .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body))
            .rest()
            .await,
    );
    let sequences: Vec<usize> = received
        .iter()
        .map(|event| sequence(event, &generation))
        .collect();
    assert_eq!(sequences, (1..=received.len()).collect::<Vec<_>>());
    let done = &received.last().unwrap().data;
    assert_eq!(deltas_text(&received), done["message"]["content"]);
    let stopped = api
        .stop(&account.access_token, &generation)
        .await
        .expect(200)
        .body;
    assert_eq!(&stopped, done);
}
