//! The real provider clients, through the public API, against test servers
//! that speak each provider's wire format (fake.rs).

mod fake;

use std::time::Duration;

use chat_core::testing;
use e2e::{Account, Api, Stream};
use fake::{FakeProvider, Script, Wire, answer, fail};
use serde_json::{Value, json};

use crate::harness::{Target, hang_up_after, spawn_with, stored_answer};

const TEXT: &str = "Decorators wrap a function to extend what it does without changing its code.";

/// Each check runs once against a fake OpenAI and once against a fake Anthropic.
macro_rules! for_both_wires {
    ($($check:ident),* $(,)?) => {
        mod openai {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Wire::OpenAi).await;
                }
            )*
        }
        mod anthropic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Wire::Anthropic).await;
                }
            )*
        }
    };
}

for_both_wires!(
    content_and_usage_are_what_the_upstream_sent,
    the_system_prompt_and_history_arrive_in_the_providers_shape,
    the_model_comes_from_the_request_then_the_session_then_the_default,
    transient_failures_are_retried_honouring_retry_after,
    server_errors_become_a_502_after_bounded_retries,
    overload_is_a_503_that_passes_retry_after_on,
    rejected_credentials_are_a_misconfiguration_and_not_retried,
    a_stream_cut_mid_way_stores_the_partial_answer_as_incomplete,
    an_error_event_mid_stream_stores_the_partial_answer_as_incomplete,
    a_stall_before_the_first_token_is_a_504,
    an_empty_answer_does_not_break_the_next_request,
    a_stall_mid_stream_ends_with_a_timeout_and_keeps_the_partial_answer,
    cancel_closes_the_upstream_connection_and_stores_what_arrived,
    finish_stores_the_whole_answer_after_the_client_left,
    stop_closes_the_upstream_connection_and_counts_what_was_generated,
    past_the_monthly_quota_nothing_is_sent_upstream,
);

struct Setup {
    fake: FakeProvider,
    api: Api,
    account: Account,
}

async fn setup(wire: Wire, extra: &[(&str, &str)]) -> Setup {
    let fake = FakeProvider::start(wire).await;
    let target = app(&[&fake], extra).await;
    let account = target.api.account().await;
    Setup {
        fake,
        api: target.api,
        account,
    }
}

/// The API pointed at `fakes` (a primary, and optionally a fallback).
async fn app(fakes: &[&FakeProvider], extra: &[(&str, &str)]) -> Target {
    // spawn_with takes the first value it finds for a name: the test's own come first.
    let mut env: Vec<(&str, String)> = extra
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    env.extend([
        ("LLM_RETRY_BASE_DELAY_MS", "10".to_owned()),
        ("LLM_FIRST_TOKEN_TIMEOUT_SECS", "2".to_owned()),
        ("LLM_TIMEOUT_SECS", "4".to_owned()),
    ]);
    for (index, fake) in fakes.iter().enumerate() {
        for (name, value) in fake.env() {
            if index > 0 && name == "LLM_PROVIDER" {
                env.push(("LLM_FALLBACK_PROVIDER", value));
            } else {
                env.push((name, value));
            }
        }
    }
    let pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    spawn_with("sqlite", testing::fresh_sqlite_url(), &pairs).await
}

impl Setup {
    async fn chat(&self, body: Value) -> e2e::Reply {
        self.api.chat(&self.account, &body).await
    }

    async fn stream(&self, body: Value) -> Stream {
        self.api
            .stream(&self.account.access_token, &body)
            .await
            .expect("an SSE stream")
    }

    async fn session(&self, id: &Value) -> Value {
        self.api.session(&self.account, id.as_i64().unwrap()).await
    }
}

fn key_of(wire: Wire) -> &'static str {
    match wire {
        Wire::OpenAi => "sk-test-openai-key",
        Wire::Anthropic => "sk-ant-test-key",
    }
}

async fn content_and_usage_are_what_the_upstream_sent(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake
        .script([answer(TEXT, Some((42, 17))), answer(TEXT, Some((50, 17)))]);

    let reply = s
        .chat(json!({ "message": "What is a decorator?" }))
        .await
        .expect(200)
        .body;
    assert_eq!(reply["message"]["content"], TEXT);
    assert_eq!(
        reply["usage"],
        json!({ "prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59 })
    );
    assert_eq!(reply["message"]["tokens"], 17);

    let stream = s
        .stream(json!({ "session_id": reply["session_id"], "message": "And again?" }))
        .await;
    assert_eq!(stream.text(), TEXT);
    assert!(
        stream
            .names()
            .iter()
            .filter(|name| **name == "delta")
            .count()
            > 5
    );
    let done = &stream.last().data;
    assert_eq!(
        done["usage"],
        json!({ "prompt_tokens": 50, "completion_tokens": 17, "total_tokens": 67 })
    );
    assert_eq!(done["message"]["content"], TEXT);
    let stored = s.session(&reply["session_id"]).await;
    assert_eq!(stored["messages"][3]["content"], TEXT);
    assert_eq!(stored["messages"][3]["tokens"], 17);

    if wire == Wire::OpenAi {
        // A compatible server that reports no usage: the tokens are estimated.
        s.fake.script([answer(TEXT, None)]);
        let reply = s
            .chat(json!({ "message": "No usage?" }))
            .await
            .expect(200)
            .body;
        assert!(reply["usage"]["prompt_tokens"].as_i64().unwrap() > 0);
        assert!(reply["usage"]["completion_tokens"].as_i64().unwrap() > 5);
    }
}

async fn the_system_prompt_and_history_arrive_in_the_providers_shape(wire: Wire) {
    let s = setup(wire, &[("LLM_MAX_RETRIES", "0")]).await;
    let session = s
        .api
        .create_session(
            &s.account,
            &json!({ "title": "t", "system_prompt": "Answer in one line." }),
        )
        .await;
    let id = session["id"].clone();
    s.fake.script([
        answer("First answer.", Some((5, 2))),
        fail(500),
        answer(TEXT, Some((9, 9))),
    ]);
    s.chat(json!({ "session_id": id, "message": "First question" }))
        .await
        .expect(200);
    // This question's answer fails: the history then holds two user turns in a row.
    s.chat(json!({ "session_id": id, "message": "Second question" }))
        .await
        .expect(502);
    s.stream(json!({ "session_id": id, "message": "Third question" }))
        .await;

    let requests = s.fake.requests();
    assert_eq!(requests.len(), 3);
    let last = &requests[2];
    assert_eq!(last.body["stream"], true);
    match wire {
        Wire::OpenAi => {
            assert_eq!(
                last.headers["authorization"],
                format!("Bearer {}", key_of(wire)).as_str()
            );
            assert_eq!(last.body["model"], "gpt-test");
            assert_eq!(
                last.body["stream_options"],
                json!({ "include_usage": true })
            );
            // Roles alternate (strict chat templates refuse anything else): the
            // unanswered question is joined to the next.
            assert_eq!(
                last.body["messages"],
                json!([
                    { "role": "system", "content": "Answer in one line." },
                    { "role": "user", "content": "First question" },
                    { "role": "assistant", "content": "First answer." },
                    { "role": "user", "content": "Second question\n\nThird question" },
                ])
            );
            assert!(requests[0].body.get("stream_options").is_none());
        }
        Wire::Anthropic => {
            assert_eq!(last.headers["x-api-key"], key_of(wire));
            assert_eq!(last.headers["anthropic-version"], "2023-06-01");
            assert_eq!(last.body["model"], "claude-test");
            assert_eq!(last.body["max_tokens"], 321);
            assert_eq!(last.body["system"], "Answer in one line.");
            // Roles alternate, starting with the user: the unanswered question is joined to the next.
            assert_eq!(
                last.body["messages"],
                json!([
                    { "role": "user", "content": "First question" },
                    { "role": "assistant", "content": "First answer." },
                    { "role": "user", "content": "Second question\n\nThird question" },
                ])
            );
        }
    }
}

async fn the_model_comes_from_the_request_then_the_session_then_the_default(wire: Wire) {
    let (default, big) = match wire {
        Wire::OpenAi => ("gpt-test", "gpt-big"),
        Wire::Anthropic => ("claude-test", "claude-big"),
    };
    let models = format!("{default},{big}");
    let s = setup(wire, &[("LLM_MODELS", &models)]).await;
    s.fake.script((0..3).map(|_| answer(TEXT, Some((1, 1)))));
    let plain = s
        .chat(json!({ "message": "default model" }))
        .await
        .expect(200)
        .body;
    let session = s
        .api
        .create_session(&s.account, &json!({ "model": big }))
        .await;
    assert_eq!(session["model"], big);
    s.chat(json!({ "session_id": session["id"], "message": "session model" }))
        .await
        .expect(200);
    s.chat(json!({ "session_id": plain["session_id"], "message": "request model", "model": big }))
        .await
        .expect(200);
    s.chat(json!({ "message": "not allowed", "model": "gpt-enormous" }))
        .await
        .expect_problem(422, "validation_failed");

    let sent: Vec<String> = s
        .fake
        .requests()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, [default, big, big]);
}

async fn transient_failures_are_retried_honouring_retry_after(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake.script([
        Script::Fail {
            status: 429,
            retry_after: Some("1"),
        },
        fail(503),
        answer(TEXT, Some((3, 3))),
    ]);
    let reply = s.chat(json!({ "message": "Busy?" })).await.expect(200).body;
    assert_eq!(reply["message"]["content"], TEXT);
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 3);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retry-after was not honoured: {waited:?}"
    );

    // The same before a stream's first token.
    s.fake.script([fail(529), answer(TEXT, Some((3, 3)))]);
    let stream = s.stream(json!({ "message": "Busy again?" })).await;
    assert_eq!(stream.names().last(), Some(&"done"));
    assert_eq!(stream.text(), TEXT);
    assert_eq!(s.fake.requests().len(), 5);
}

async fn server_errors_become_a_502_after_bounded_retries(wire: Wire) {
    let s = setup(wire, &[("LLM_MAX_RETRIES", "2")]).await;
    s.fake.script((0..3).map(|_| fail(500)));
    let reply = s
        .chat(json!({ "message": "Down?" }))
        .await
        .expect_problem(502, "provider_unavailable");
    assert_eq!(s.fake.requests().len(), 3, "one attempt and two retries");
    let stored = s.session(&reply.body["session_id"]).await;
    assert_eq!(stored["message_count"], 1);
    assert_eq!(stored["messages"][0]["content"], "Down?");

    s.fake.script((0..3).map(|_| fail(502)));
    let stream = s.stream(json!({ "message": "Still down?" })).await;
    assert_eq!(stream.names(), ["start", "error"]);
    assert_eq!(stream.last().data["code"], "provider_unavailable");
    assert_eq!(s.fake.requests().len(), 6);
}

async fn overload_is_a_503_that_passes_retry_after_on(wire: Wire) {
    let s = setup(wire, &[("LLM_MAX_RETRIES", "0")]).await;
    s.fake.script([
        Script::Fail {
            status: 529,
            retry_after: Some("7"),
        },
        fail(429),
    ]);
    let reply = s
        .chat(json!({ "message": "Overloaded?" }))
        .await
        .expect_problem(503, "provider_overloaded");
    assert_eq!(reply.header("retry-after"), Some("7"));
    let reply = s
        .chat(json!({ "message": "Limited?" }))
        .await
        .expect_problem(503, "provider_overloaded");
    assert_eq!(reply.header("retry-after"), None);
}

async fn rejected_credentials_are_a_misconfiguration_and_not_retried(wire: Wire) {
    let s = setup(wire, &[("LLM_MAX_RETRIES", "3")]).await;
    s.fake.script([fail(401), fail(403)]);
    let reply = s
        .chat(json!({ "message": "Key?" }))
        .await
        .expect_problem(502, "provider_misconfigured");
    let body = reply.body.to_string();
    assert!(
        !body.contains(key_of(wire)) && !body.contains("401"),
        "{body}"
    );
    let stream = s.stream(json!({ "message": "Key again?" })).await;
    assert_eq!(stream.last().data["code"], "provider_misconfigured");
    assert_eq!(s.fake.requests().len(), 2, "never retried");
}

/// Checks the stored state after a stream that failed after `words` words.
async fn partial_answer_is_stored(s: &Setup, stream: &Stream, words: usize, code: &str) {
    let names = stream.names();
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert!(!names.contains(&"done"));
    assert_eq!(stream.last().data["code"], code);
    let partial: String = fake::words(TEXT)[..words].concat();
    assert_eq!(stream.text(), partial);
    let stored = s.session(&stream.events[0].data["session_id"]).await;
    assert_eq!(stored["message_count"], 2);
    assert_eq!(stored["messages"][1]["status"], "incomplete");
    assert_eq!(stored["messages"][1]["content"], partial);
    assert!(
        stored["messages"][1]["tokens"].as_i64().unwrap() > 0,
        "usage is counted"
    );
}

async fn a_stream_cut_mid_way_stores_the_partial_answer_as_incomplete(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake.script([Script::CutAfter {
        text: TEXT.into(),
        words: 5,
    }]);
    let stream = s.stream(json!({ "message": "Cut?" })).await;
    partial_answer_is_stored(&s, &stream, 5, "provider_interrupted").await;
    assert_eq!(
        s.fake.requests().len(),
        1,
        "no retry once tokens reached the client"
    );
}

async fn an_error_event_mid_stream_stores_the_partial_answer_as_incomplete(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake.script([Script::ErrorAfter {
        text: TEXT.into(),
        words: 3,
    }]);
    let stream = s.stream(json!({ "message": "Error?" })).await;
    partial_answer_is_stored(&s, &stream, 3, "provider_interrupted").await;
    assert_eq!(s.fake.requests().len(), 1);
}

async fn a_stall_before_the_first_token_is_a_504(wire: Wire) {
    let s = setup(
        wire,
        &[
            ("LLM_FIRST_TOKEN_TIMEOUT_SECS", "1"),
            ("LLM_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    s.fake.script([Script::StallAfter {
        text: TEXT.into(),
        words: 0,
    }]);
    let stream = s.stream(json!({ "message": "Anyone there?" })).await;
    assert_eq!(stream.names(), ["start", "error"]);
    assert_eq!(
        (
            stream.last().data["status"].as_i64(),
            stream.last().data["code"].as_str()
        ),
        (Some(504), Some("provider_timeout"))
    );

    s.fake.script([Script::StallAfter {
        text: TEXT.into(),
        words: 0,
    }]);
    let reply = s
        .chat(json!({ "message": "Anyone at all?" }))
        .await
        .expect_problem(504, "provider_timeout");
    let stored = s.session(&reply.body["session_id"]).await;
    assert_eq!(stored["message_count"], 1);
    assert_eq!(s.fake.requests().len(), 2, "timeouts are not retried");
}

async fn a_stall_mid_stream_ends_with_a_timeout_and_keeps_the_partial_answer(wire: Wire) {
    let s = setup(wire, &[("LLM_TIMEOUT_SECS", "2")]).await;
    s.fake.script([Script::StallAfter {
        text: TEXT.into(),
        words: 4,
    }]);
    let stream = s.stream(json!({ "message": "Stall?" })).await;
    partial_answer_is_stored(&s, &stream, 4, "provider_timeout").await;
    // The stalled upstream connection was closed, not left hanging.
    wait_until(|| s.fake.abandoned() == 1).await;
}

async fn past_the_monthly_quota_nothing_is_sent_upstream(wire: Wire) {
    let s = setup(wire, &[("MONTHLY_TOKEN_QUOTA", "100")]).await;
    s.fake.script([answer(TEXT, Some((60, 50)))]);
    // Under the quota when asked, so answered; 110 tokens used now.
    let reply = s
        .chat(json!({ "message": "What is a decorator?" }))
        .await
        .expect(200);
    let session = reply.body["session_id"].clone();
    assert_eq!(s.fake.requests().len(), 1);

    let again = json!({ "session_id": session, "message": "And a closure?" });
    let refused = s
        .chat(again.clone())
        .await
        .expect_problem(429, "quota_exceeded");
    assert_eq!(
        (refused.body["quota"].clone(), refused.body["used"].clone()),
        (json!(100), json!(110))
    );
    let streamed = s
        .api
        .stream(&s.account.access_token, &again)
        .await
        .unwrap_err();
    streamed.expect_problem(429, "quota_exceeded");
    assert_eq!(
        s.fake.requests().len(),
        1,
        "the provider received nothing more"
    );
    assert_eq!(s.session(&session).await["message_count"], 2);
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the condition never held");
}

async fn cancel_closes_the_upstream_connection_and_stores_what_arrived(wire: Wire) {
    let s = setup(wire, &[("STREAM_ON_DISCONNECT", "cancel")]).await;
    s.fake.script([Script::SlowAnswer {
        text: TEXT.into(),
        delay: Duration::from_millis(60),
    }]);
    let session_id = hang_up_after(&s.api, &s.account, "Tell me slowly", 2).await;
    let stored = stored_answer(&s.api, &s.account, session_id).await;
    assert_eq!(stored["status"], "incomplete");
    let content = stored["content"].as_str().unwrap();
    assert!(
        TEXT.starts_with(content) && content.len() < TEXT.len(),
        "{content}"
    );
    assert!(
        stored["tokens"].as_i64().unwrap() > 0,
        "the tokens used so far are counted"
    );
    wait_until(|| s.fake.abandoned() == 1).await;
    assert_eq!(s.fake.completed(), 0);
}

async fn finish_stores_the_whole_answer_after_the_client_left(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake.script([Script::SlowAnswer {
        text: TEXT.into(),
        delay: Duration::from_millis(30),
    }]);
    let session_id = hang_up_after(&s.api, &s.account, "Tell me slowly", 2).await;
    let stored = stored_answer(&s.api, &s.account, session_id).await;
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["content"], TEXT);
    assert_eq!(stored["tokens"], 7, "the provider's reported usage");
    assert_eq!((s.fake.completed(), s.fake.abandoned()), (1, 0));
}

async fn stop_closes_the_upstream_connection_and_counts_what_was_generated(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake.script([Script::SlowAnswer {
        text: TEXT.into(),
        delay: Duration::from_millis(60),
    }]);
    let mut stream = s
        .api
        .open_stream(
            &s.account.access_token,
            &json!({ "message": "Tell me slowly" }),
        )
        .await
        .unwrap_or_else(|reply| panic!("{} {}", reply.status, reply.body));
    let start = stream.next().await.unwrap();
    for _ in 0..2 {
        assert_eq!(stream.next().await.unwrap().event, "delta");
    }
    let generation = start.data["generation_id"].as_str().unwrap();
    let stopped = s
        .api
        .stop(&s.account.access_token, generation)
        .await
        .expect(200)
        .body;
    wait_until(|| s.fake.abandoned() == 1).await;
    assert_eq!(s.fake.completed(), 0, "the upstream never finished");
    let message = &stopped["message"];
    assert_eq!(message["status"], "stopped");
    let content = message["content"].as_str().unwrap();
    assert!(
        TEXT.starts_with(content) && content.len() < TEXT.len(),
        "{content}"
    );
    assert_eq!(
        stream.rest().await.last().unwrap().data["message"],
        *message
    );
    // What was generated is counted: the stored message and the month's usage.
    let tokens = message["tokens"].as_i64().unwrap();
    assert!(tokens > 0);
    let usage = s
        .api
        .get("/usage", Some(&s.account.access_token))
        .await
        .expect(200)
        .body;
    assert_eq!(usage["months"][0]["completion_tokens"], tokens, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_answers_when_the_primary_is_down() {
    let primary = FakeProvider::start(Wire::OpenAi).await;
    let secondary = FakeProvider::start(Wire::Anthropic).await;
    let target = app(&[&primary, &secondary], &[("LLM_MAX_RETRIES", "1")]).await;
    let api = &target.api;
    let account = api.account().await;
    primary.script((0..4).map(|_| fail(500)));
    secondary.script([
        answer("From the fallback.", Some((4, 4))),
        answer(TEXT, Some((4, 4))),
    ]);

    let reply = api
        .chat(&account, &json!({ "message": "Anyone?" }))
        .await
        .expect(200)
        .body;
    assert_eq!(reply["message"]["content"], "From the fallback.");
    let stream = api
        .stream(&account.access_token, &json!({ "message": "Stream?" }))
        .await
        .unwrap();
    assert_eq!(stream.text(), TEXT);
    assert_eq!(
        primary.requests().len(),
        4,
        "the primary was tried, with its retries, each time"
    );
    let fallback_requests = secondary.requests();
    assert_eq!(fallback_requests.len(), 2);
    assert_eq!(
        fallback_requests[0].body["model"], "claude-test",
        "the fallback uses its own model"
    );
}

async fn an_empty_answer_does_not_break_the_next_request(wire: Wire) {
    let s = setup(wire, &[]).await;
    s.fake
        .script([answer("", Some((3, 0))), answer(TEXT, Some((3, 3)))]);
    let first = s
        .chat(json!({ "message": "Say nothing" }))
        .await
        .expect(200)
        .body;
    s.chat(json!({ "session_id": first["session_id"], "message": "Now say something" }))
        .await
        .expect(200);
    let sent = &s.fake.requests()[1].body["messages"];
    let turns: Vec<&Value> = sent
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .collect();
    assert_eq!(turns.len(), 1, "{sent}");
    assert_eq!(turns[0]["content"], "Say nothing\n\nNow say something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_falls_back_after_the_first_token_timeout() {
    let primary = FakeProvider::start(Wire::OpenAi).await;
    let secondary = FakeProvider::start(Wire::Anthropic).await;
    // The whole call may take 30 s: only the per-attempt timeout leaves the
    // fallback time to answer.
    let extra = [
        ("LLM_FIRST_TOKEN_TIMEOUT_SECS", "1"),
        ("LLM_TIMEOUT_SECS", "30"),
        ("LLM_MAX_RETRIES", "0"),
    ];
    let target = app(&[&primary, &secondary], &extra).await;
    let account = target.api.account().await;
    let stall = || Script::StallAfter {
        text: TEXT.into(),
        words: 0,
    };
    primary.script([stall(), stall()]);
    secondary.script([
        answer("Fallback, whole.", Some((2, 2))),
        answer(TEXT, Some((2, 2))),
    ]);

    let reply = target
        .api
        .chat(&account, &json!({ "message": "Hello?" }))
        .await
        .expect(200)
        .body;
    assert_eq!(reply["message"]["content"], "Fallback, whole.");
    let stream = target
        .api
        .stream(&account.access_token, &json!({ "message": "Hello again?" }))
        .await
        .unwrap();
    assert_eq!(stream.text(), TEXT);
    assert_eq!(
        (primary.requests().len(), secondary.requests().len()),
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_quota_exhaustion_is_a_misconfiguration_not_an_overload() {
    let s = setup(Wire::OpenAi, &[("LLM_MAX_RETRIES", "3")]).await;
    s.fake.script([Script::QuotaExhausted]);
    s.chat(json!({ "message": "Credit?" }))
        .await
        .expect_problem(502, "provider_misconfigured");
    assert_eq!(s.fake.requests().len(), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_without_done_but_finished_is_complete() {
    let s = setup(Wire::OpenAi, &[]).await;
    s.fake
        .script([Script::AnswerWithoutDone { text: TEXT.into() }]);
    let stream = s.stream(json!({ "message": "Old llama.cpp?" })).await;
    assert_eq!(stream.names().last(), Some(&"done"), "{:?}", stream.names());
    assert_eq!(stream.last().data["message"]["status"], "complete");
    assert_eq!(stream.last().data["usage"]["completion_tokens"], 6);
}
