//! A streaming generation asks the provider at once and publishes `start`
//! once its question is on disk (`Store::ask`, `Store::make_durable`); it
//! runs on whether or not its asker waits for that.

use std::sync::Arc;

use chat_core::{
    chat::{self, ChatInput, Generation, Kind},
    config::Settings,
    error::ApiError,
    state::AppState,
    store::Role,
    testing,
};
use futures::StreamExt as _;
use tokio::sync::oneshot;

/// The built-in model, answering without pauses, over the store at `url`.
async fn state_over(url: String) -> AppState {
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "JWT_SECRET" => Some("generation-test-secret-0123456789abcdef".into()),
        "MOCK_TOKEN_DELAY_MS" => Some("0".into()),
        _ => None,
    })
    .expect("settings");
    AppState::build(&settings).await.expect("state")
}

/// A question stored in a new session: its session and its generation, not
/// yet spawned.
async fn asked(state: &AppState) -> (chat::Exchange, Arc<Generation>) {
    let user = state
        .store
        .create_user("generation@example.com", "not-a-hash")
        .await
        .unwrap();
    let input = ChatInput::parse(state, None, "How do iterators work?", None).unwrap();
    let exchange = chat::begin(state, user.id, input).await.unwrap();
    let generation = state.live.start(user.id, exchange.session_id).await;
    (exchange, generation)
}

/// Waits until every generation has ended, then reads the whole log.
async fn log_when_ended(state: &AppState, generation: &Arc<Generation>) -> Vec<Kind> {
    state.generations.close();
    state.generations.wait().await;
    generation
        .follow(0)
        .map(|(_, event)| event.kind)
        .collect()
        .await
}

async fn roles(state: &AppState, session_id: i64) -> Vec<Role> {
    let messages = state.store.list_messages(session_id).await.unwrap();
    messages.iter().map(|message| message.role).collect()
}

fn is_start_deltas_done(kinds: &[Kind]) -> bool {
    kinds.len() > 2
        && kinds[0] == Kind::Start
        && kinds[kinds.len() - 1] == Kind::Done
        && kinds[1..kinds.len() - 1]
            .iter()
            .all(|kind| *kind == Kind::Delta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_starts_once_its_question_is_stored_then_answers() {
    let state = state_over(testing::fresh_sqlite_url()).await;
    let (exchange, generation) = asked(&state).await;
    let session_id = exchange.session_id;
    let events = generation.follow(0);
    let started = chat::spawn_generation(state.clone(), exchange, generation.clone());
    started.await.unwrap().unwrap();
    let kinds: Vec<Kind> = events.map(|(_, event)| event.kind).collect().await;
    assert!(is_start_deltas_done(&kinds), "{kinds:?}");
    assert_eq!(
        roles(&state, session_id).await,
        [Role::User, Role::Assistant]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_whose_asker_has_gone_still_starts_answers_and_stores() {
    let state = state_over(testing::fresh_sqlite_url()).await;
    let (exchange, generation) = asked(&state).await;
    let session_id = exchange.session_id;
    let started: oneshot::Receiver<_> =
        chat::spawn_generation(state.clone(), exchange, generation.clone());
    // A client that hangs up while the question is made durable.
    drop(started);
    let kinds = log_when_ended(&state, &generation).await;
    assert!(is_start_deltas_done(&kinds), "{kinds:?}");
    assert_eq!(
        roles(&state, session_id).await,
        [Role::User, Role::Assistant]
    );
}

/// Postgres commits a question without waiting for the disk, so a crash can
/// lose it after it was asked; here it is deleted, as such a crash would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_lost_before_it_reached_the_disk_ends_its_generation() {
    let Some(admin) = testing::postgres_admin_url().expect("Postgres is required here") else {
        eprintln!("note: TEST_DATABASE_URL is not set; this Postgres test did not run");
        return;
    };
    let url = testing::fresh_postgres_database(&admin).await.unwrap();
    let state = state_over(url.clone()).await;
    let (exchange, generation) = asked(&state).await;
    let session_id = exchange.session_id;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(exchange.user_message.id)
        .execute(&mut db)
        .await
        .unwrap();

    let started = chat::spawn_generation(state.clone(), exchange, generation.clone());
    let outcome = started.await.unwrap();
    assert!(
        matches!(outcome, Err(ApiError::StoreUnavailable(_))),
        "{outcome:?}"
    );
    // No `start`, no answer: the log ends at once, and nothing is stored.
    assert_eq!(log_when_ended(&state, &generation).await, [Kind::Error]);
    assert_eq!(roles(&state, session_id).await, Vec::<Role>::new());
}
