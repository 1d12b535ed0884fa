//! A streaming generation asks the provider at once, but publishes and stores
//! nothing until the handler has said the question is stored (`start`): on
//! Postgres the question's commit reaches the disk while the provider is
//! asked (`Store::ask`).

use std::sync::Arc;

use chat_core::{
    chat::{self, ChatInput, Generation, GenerationEvent, Kind},
    config::Settings,
    state::AppState,
    store::Role,
    testing,
};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::oneshot;

/// A fresh SQLite store and the built-in model, answering without pauses.
async fn state() -> AppState {
    let url = testing::fresh_sqlite_url();
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "JWT_SECRET" => Some("generation-test-secret-0123456789abcdef".into()),
        "MOCK_TOKEN_DELAY_MS" => Some("0".into()),
        _ => None,
    })
    .expect("settings");
    AppState::build(&settings).await.expect("state")
}

/// A question stored in a new session, and its generation spawned with the
/// handler's side of the signal.
async fn asked(state: &AppState) -> (i64, Arc<Generation>, oneshot::Sender<()>, GenerationEvent) {
    let user = state
        .store
        .create_user("generation@example.com", "not-a-hash")
        .await
        .unwrap();
    let input = ChatInput::parse(state, None, "How do iterators work?", None).unwrap();
    let exchange = chat::begin(state, user.id, input).await.unwrap();
    let generation = state.live.start(user.id, exchange.session_id).await;
    let start = GenerationEvent::Start {
        generation_id: generation.id.clone(),
        session_id: exchange.session_id,
        user_message: exchange.user_message.clone(),
    };
    let session_id = exchange.session_id;
    let (started, when_started) = oneshot::channel();
    chat::spawn_generation(state.clone(), exchange, generation.clone(), when_started);
    (session_id, generation, started, start)
}

/// Waits until every generation has ended.
async fn generations_end(state: &AppState) {
    state.generations.close();
    state.generations.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_whose_start_never_comes_publishes_and_stores_nothing() {
    let state = state().await;
    let (session_id, generation, started, _) = asked(&state).await;
    let mut events = generation.follow(0).boxed();
    drop(started);
    generations_end(&state).await;

    // The log is final: an event in it would be ready now.
    assert!(
        events.next().now_or_never().is_none(),
        "an event was published"
    );
    let messages = state.store.list_messages(session_id).await.unwrap();
    let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
    assert_eq!(roles, [Role::User], "only the question is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_follows_its_start_with_the_answer() {
    let state = state().await;
    let (session_id, generation, started, start) = asked(&state).await;
    let events = generation.follow(0).boxed();
    // Time for the provider, which answers at once, to have answered: a
    // generation that did not wait would have published before `start`.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    generation.publish(start);
    started.send(()).unwrap();
    generations_end(&state).await;

    let kinds: Vec<Kind> = events.map(|(_, event)| event.kind).collect().await;
    assert_eq!(kinds.first(), Some(&Kind::Start), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Kind::Done), "{kinds:?}");
    assert!(
        kinds[1..kinds.len() - 1]
            .iter()
            .all(|kind| *kind == Kind::Delta)
            && kinds.len() > 2
    );
    let messages = state.store.list_messages(session_id).await.unwrap();
    let roles: Vec<Role> = messages.iter().map(|message| message.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant]);
}
