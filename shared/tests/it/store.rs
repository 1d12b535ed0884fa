//! The store conformance suite: every backend must pass the same checks.

use std::{collections::HashSet, sync::Arc};

use chat_core::store::{
    Asked,
    Conversation::{self, Existing},
    MessageStatus, NewMessage, NewRefreshToken, NewSession, Role, Rotation, SessionPatch, Standing,
    Store, StoreError, UsageRecord,
};
use futures::future::join_all;
use time::{Duration, OffsetDateTime};

/// Expands each check into one test per backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(crate::support::sqlite_store().await).await;
                }
            )*
        }
        mod sqlite_in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(crate::support::sqlite_store_in_memory().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    match crate::support::postgres_store().await {
                        Some(store) => super::$check(store).await,
                        None => crate::support::no_postgres(),
                    }
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    match crate::support::dynamodb_store().await {
                        Some(store) => super::$check(store).await,
                        None => crate::support::no_dynamodb(),
                    }
                }
            )*
        }
    };
}

conformance!(
    users_are_unique_by_email,
    concurrent_registrations_create_one_user,
    sessions_list_most_recent_first_with_paging,
    sessions_are_private_to_their_owner,
    patches_change_only_what_they_name,
    deleting_a_session_deletes_its_messages,
    appends_count_messages_and_add_usage,
    concurrent_appends_lose_and_duplicate_nothing,
    recent_messages_are_the_newest_in_order,
    a_question_is_stored_and_asked_with_its_history,
    an_answer_follows_its_question_once_that_is_durable,
    standing_and_session_are_read_together,
    a_question_is_asked_only_within_the_quota,
    long_histories_read_past_a_one_megabyte_page,
    refresh_tokens_rotate_once_and_reuse_revokes_the_family,
    expired_and_revoked_refresh_tokens_are_invalid,
    ping_answers,
    admins_and_quotas_are_set_on_existing_users_only,
    usage_is_kept_per_day_and_users_are_listed_with_their_figures,
);

type Db = Arc<dyn Store>;

async fn user(store: &Db, email: &str) -> i64 {
    store
        .create_user(email, "hash")
        .await
        .expect("create user")
        .id
}

async fn session(store: &Db, user_id: i64, title: &str) -> i64 {
    let new = NewSession {
        title: title.into(),
        ..NewSession::default()
    };
    store
        .create_session(user_id, &new)
        .await
        .expect("create session")
        .id
}

fn text(role: Role, content: &str) -> NewMessage {
    NewMessage {
        role,
        content: content.into(),
        tokens: 3,
        status: MessageStatus::Complete,
    }
}

fn usage(model: &str, prompt: i64, completion: i64) -> UsageRecord {
    usage_on("2026-11-27", model, prompt, completion)
}

fn usage_on(day: &str, model: &str, prompt: i64, completion: i64) -> UsageRecord {
    UsageRecord {
        day: day.into(),
        model: model.into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
    }
}

async fn users_are_unique_by_email(store: Db) {
    let created = store.create_user("a@example.com", "hash-a").await.unwrap();
    assert_eq!(created.email, "a@example.com");
    let duplicate = store.create_user("a@example.com", "hash-b").await;
    assert!(
        matches!(duplicate, Err(StoreError::EmailTaken)),
        "{duplicate:?}"
    );

    let found = store
        .find_user_by_email("a@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user, created);
    assert_eq!(found.password_hash, "hash-a");
    assert_eq!(store.find_user(created.id).await.unwrap(), Some(created));
    assert!(
        store
            .find_user_by_email("b@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_user(i64::MAX).await.unwrap().is_none());
}

async fn concurrent_registrations_create_one_user(store: Db) {
    let attempts = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_user("race@example.com", "hash").await })
    });
    let results: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = results.iter().filter(|result| result.is_ok()).count();
    let taken = results
        .iter()
        .filter(|result| matches!(result, Err(StoreError::EmailTaken)))
        .count();
    assert_eq!((created, taken), (1, 19), "{results:?}");
}

async fn sessions_list_most_recent_first_with_paging(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let first = session(&store, owner, "first").await;
    let second = session(&store, owner, "second").await;
    let third = session(&store, owner, "third").await;

    let titles = |sessions: Vec<chat_core::store::Session>| {
        sessions.into_iter().map(|s| s.title).collect::<Vec<_>>()
    };
    assert_eq!(
        titles(store.list_sessions(owner, 50, 0).await.unwrap()),
        ["third", "second", "first"]
    );

    // A new message makes a session the most recently active.
    store
        .append_message(owner, first, &text(Role::User, "hi"), None)
        .await
        .unwrap();
    assert_eq!(
        titles(store.list_sessions(owner, 50, 0).await.unwrap()),
        ["first", "third", "second"]
    );
    assert_eq!(
        titles(store.list_sessions(owner, 2, 1).await.unwrap()),
        ["third", "second"]
    );
    assert!(store.list_sessions(owner, 10, 3).await.unwrap().is_empty());
    let _ = (second, third);
}

async fn sessions_are_private_to_their_owner(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let other = user(&store, "other@example.com").await;
    let id = session(&store, owner, "mine").await;

    assert!(store.find_session(other, id).await.unwrap().is_none());
    assert!(store.list_sessions(other, 50, 0).await.unwrap().is_empty());
    let patch = SessionPatch {
        title: Some("stolen".into()),
        ..SessionPatch::default()
    };
    assert!(
        store
            .update_session(other, id, &patch)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.delete_session(other, id).await.unwrap());
    let append = store
        .append_message(other, id, &text(Role::User, "hi"), None)
        .await;
    assert!(
        matches!(append, Err(StoreError::SessionNotFound)),
        "{append:?}"
    );

    let mine = store.find_session(owner, id).await.unwrap().unwrap();
    assert_eq!((mine.title.as_str(), mine.message_count), ("mine", 0));
}

async fn patches_change_only_what_they_name(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let created = store
        .create_session(
            owner,
            &NewSession {
                title: "Python Help".into(),
                system_prompt: Some("Be brief.".into()),
                model: Some("gpt-4o-mini".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(created.system_prompt.as_deref(), Some("Be brief."));
    assert_eq!(created.model.as_deref(), Some("gpt-4o-mini"));

    let renamed = store
        .update_session(
            owner,
            created.id,
            &SessionPatch {
                title: Some("Rust Help".into()),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.title, "Rust Help");
    assert_eq!(renamed.system_prompt.as_deref(), Some("Be brief."));
    assert_eq!(renamed.model.as_deref(), Some("gpt-4o-mini"));
    assert!(renamed.updated_at >= created.updated_at);

    let cleared = store
        .update_session(
            owner,
            created.id,
            &SessionPatch {
                title: None,
                system_prompt: Some(None),
                model: Some(Some("gpt-4o".into())),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cleared.title.as_str(), cleared.system_prompt),
        ("Rust Help", None)
    );
    assert_eq!(cleared.model.as_deref(), Some("gpt-4o"));
    let reset = store
        .update_session(
            owner,
            created.id,
            &SessionPatch {
                model: Some(None),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reset.model, None);
}

async fn deleting_a_session_deletes_its_messages(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let doomed = session(&store, owner, "doomed").await;
    let kept = session(&store, owner, "kept").await;
    store
        .append_message(owner, doomed, &text(Role::User, "a"), None)
        .await
        .unwrap();
    store
        .append_message(owner, kept, &text(Role::User, "b"), None)
        .await
        .unwrap();

    assert!(store.delete_session(owner, doomed).await.unwrap());
    assert!(store.find_session(owner, doomed).await.unwrap().is_none());
    assert!(store.list_messages(doomed).await.unwrap().is_empty());
    assert!(!store.delete_session(owner, doomed).await.unwrap());
    assert_eq!(store.list_messages(kept).await.unwrap().len(), 1);
}

async fn appends_count_messages_and_add_usage(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "chat").await;
    let question = store
        .append_message(owner, id, &text(Role::User, "What is a decorator?"), None)
        .await
        .unwrap();
    let answer = store
        .append_message(
            owner,
            id,
            &NewMessage {
                role: Role::Assistant,
                content: "A function that wraps\nanother function.".into(),
                tokens: 9,
                status: MessageStatus::Incomplete,
            },
            Some(&usage("mock", 12, 9)),
        )
        .await
        .unwrap();
    assert!(answer.id > question.id);
    assert_eq!(
        (answer.role, answer.status, answer.tokens),
        (Role::Assistant, MessageStatus::Incomplete, 9)
    );

    let stored = store.list_messages(id).await.unwrap();
    assert_eq!(stored, vec![question, answer]);
    assert_eq!(
        store
            .find_session(owner, id)
            .await
            .unwrap()
            .unwrap()
            .message_count,
        2
    );

    store
        .append_message(
            owner,
            id,
            &text(Role::User, "more"),
            Some(&usage("mock", 20, 5)),
        )
        .await
        .unwrap();
    store
        .append_message(
            owner,
            id,
            &text(Role::User, "other"),
            Some(&usage("gpt", 1, 1)),
        )
        .await
        .unwrap();
    let months = store.monthly_usage(owner).await.unwrap();
    let summary: Vec<_> = months
        .iter()
        .map(|m| {
            (
                m.model.as_str(),
                m.prompt_tokens,
                m.completion_tokens,
                m.requests,
            )
        })
        .collect();
    assert_eq!(summary, [("gpt", 1, 1, 1), ("mock", 32, 14, 2)]);
}

async fn concurrent_appends_lose_and_duplicate_nothing(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "busy").await;
    let writers = (0..50).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_message(owner, id, &text(Role::User, &format!("q{n}")), None)
                .await?;
            store
                .append_message(
                    owner,
                    id,
                    &text(Role::Assistant, &format!("a{n}")),
                    Some(&usage("mock", 1, 1)),
                )
                .await
        })
    });
    for result in join_all(writers).await {
        result.unwrap().unwrap();
    }
    let messages = store.list_messages(id).await.unwrap();
    assert_eq!(messages.len(), 100);
    let contents: HashSet<_> = messages.iter().map(|m| m.content.clone()).collect();
    let ids: HashSet<_> = messages.iter().map(|m| m.id).collect();
    assert_eq!((contents.len(), ids.len()), (100, 100));
    assert_eq!(
        store
            .find_session(owner, id)
            .await
            .unwrap()
            .unwrap()
            .message_count,
        100
    );
    assert_eq!(store.monthly_usage(owner).await.unwrap()[0].requests, 50);
}

async fn recent_messages_are_the_newest_in_order(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "long").await;
    for n in 0..7 {
        store
            .append_message(owner, id, &text(Role::User, &format!("m{n}")), None)
            .await
            .unwrap();
    }
    let contents = |messages: Vec<chat_core::store::Message>| {
        messages.into_iter().map(|m| m.content).collect::<Vec<_>>()
    };
    let all = store.list_messages(id).await.unwrap();
    let newest = all.last().unwrap().id;
    assert_eq!(
        contents(store.recent_messages(id, newest, 3).await.unwrap()),
        ["m4", "m5", "m6"]
    );
    // Bounded by an id: what was stored after it is not part of its history.
    let fifth = all[4].id;
    assert_eq!(
        contents(store.recent_messages(id, fifth, 3).await.unwrap()),
        ["m2", "m3", "m4"]
    );
}

async fn an_answer_follows_its_question_once_that_is_durable(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "answered").await;
    let (question, _) = store
        .append_question(owner, id, &text(Role::User, "q"), 3)
        .await
        .unwrap();
    store.make_durable(id, &question).await.unwrap();
    let answer = store
        .append_answer(
            owner,
            id,
            &question,
            &text(Role::Assistant, "a"),
            &usage("m", 5, 7),
        )
        .await
        .unwrap();
    assert_eq!(store.list_messages(id).await.unwrap(), [question, answer]);
    let month = store.monthly_usage(owner).await.unwrap();
    assert_eq!(
        month
            .iter()
            .map(|m| (m.prompt_tokens, m.completion_tokens))
            .collect::<Vec<_>>(),
        [(5, 7)]
    );
}

/// Postgres alone acknowledges a question before it is on disk (`Store::ask`),
/// so a crash can lose it while it is being answered; here it is deleted, as
/// such a crash would leave the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_lost_on_postgres_takes_its_answer_with_it() {
    let Some(admin) = chat_core::testing::postgres_admin_url().expect("Postgres is required here")
    else {
        return crate::support::no_postgres();
    };
    let url = chat_core::testing::fresh_postgres_database(&admin)
        .await
        .unwrap();
    let store = crate::support::store_at(&url).await.unwrap();
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "lost").await;
    let (question, _) = store
        .append_question(owner, id, &text(Role::User, "q"), 3)
        .await
        .unwrap();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(question.id)
        .execute(&mut db)
        .await
        .unwrap();

    let durable = store.make_durable(id, &question).await;
    assert!(
        matches!(durable, Err(StoreError::Unavailable(_))),
        "{durable:?}"
    );
    let answered = store
        .append_answer(
            owner,
            id,
            &question,
            &text(Role::Assistant, "a"),
            &usage("m", 5, 7),
        )
        .await;
    assert!(
        matches!(answered, Err(StoreError::SessionNotFound)),
        "{answered:?}"
    );
    assert!(store.list_messages(id).await.unwrap().is_empty());
    assert!(store.monthly_usage(owner).await.unwrap().is_empty());
}

async fn a_question_is_stored_and_asked_with_its_history(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let stranger = user(&store, "stranger@example.com").await;
    let id = session(&store, owner, "long").await;
    for n in 0..5 {
        store
            .append_message(owner, id, &text(Role::User, &format!("m{n}")), None)
            .await
            .unwrap();
    }
    let contents = |messages: &[chat_core::store::Message]| {
        messages
            .iter()
            .map(|m| m.content.clone())
            .collect::<Vec<_>>()
    };

    let (asked, recent) = store
        .append_question(owner, id, &text(Role::User, "q"), 3)
        .await
        .unwrap();
    assert_eq!((asked.content.as_str(), asked.role), ("q", Role::User));
    assert_eq!(contents(&recent), ["m3", "m4", "q"]);
    assert_eq!(recent.last(), Some(&asked));
    // Stored as any message is: counted, and read back with the rest.
    let all = store.list_messages(id).await.unwrap();
    assert_eq!(all.last(), Some(&asked));
    let found = store.find_session(owner, id).await.unwrap().unwrap();
    assert_eq!(found.message_count, 6);

    // A history longer than the session is all of it.
    let (_, recent) = store
        .append_question(owner, id, &text(Role::User, "r"), 50)
        .await
        .unwrap();
    assert_eq!(contents(&recent), ["m0", "m1", "m2", "m3", "m4", "q", "r"]);

    // Another user's session: refused, and nothing is written.
    let refused = store
        .append_question(stranger, id, &text(Role::User, "sneaky"), 3)
        .await;
    assert!(
        matches!(refused, Err(StoreError::SessionNotFound)),
        "{refused:?}"
    );
    assert_eq!(store.list_messages(id).await.unwrap().len(), 7);
}

async fn standing_and_session_are_read_together(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let stranger = user(&store, "stranger@example.com").await;
    let id = session(&store, owner, "mine").await;
    store
        .append_message(
            owner,
            id,
            &text(Role::Assistant, "a"),
            Some(&usage_on("2026-11-27", "m", 10, 5)),
        )
        .await
        .unwrap();
    assert!(store.set_token_quota(owner, Some(1_000)).await.unwrap());

    let (standing, session) = store
        .standing_and_session(owner, "2026-11", Some(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        standing,
        store.standing(owner, "2026-11").await.unwrap().unwrap()
    );
    assert_eq!(
        (standing.token_quota, standing.used_tokens),
        (Some(1_000), 15)
    );
    assert_eq!(session, store.find_session(owner, id).await.unwrap());
    assert_eq!(session.map(|s| s.title), Some("mine".to_owned()));

    // Another month's usage is not this one's; no session asked for, none given.
    let (standing, session) = store
        .standing_and_session(owner, "2026-12", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((standing.used_tokens, session), (0, None));

    // Someone else's session, or none such: the standing without it.
    let (standing, session) = store
        .standing_and_session(stranger, "2026-11", Some(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (standing.email.as_str(), session),
        ("stranger@example.com", None)
    );
    let (_, session) = store
        .standing_and_session(owner, "2026-11", Some(id + 1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session, None);

    // An account that no longer exists.
    assert_eq!(
        store
            .standing_and_session(owner + 1_000, "2026-11", Some(id))
            .await
            .unwrap(),
        None
    );
}

/// `Store::ask` with a user's question and a history of 3; `None` when the
/// user does not exist.
async fn ask(
    store: &Db,
    user_id: i64,
    month: &str,
    conversation: &Conversation,
    question: &str,
    default_quota: Option<i64>,
) -> Option<(Standing, Option<Asked>)> {
    store
        .ask(
            user_id,
            month,
            conversation,
            &text(Role::User, question),
            3,
            default_quota,
        )
        .await
        .expect("ask")
}

async fn a_question_is_asked_only_within_the_quota(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let stranger = user(&store, "stranger@example.com").await;
    let id = session(&store, owner, "mine").await;
    let patch = SessionPatch {
        system_prompt: Some(Some("Be brief.".into())),
        model: Some(Some("small".into())),
        ..SessionPatch::default()
    };
    store.update_session(owner, id, &patch).await.unwrap();
    store
        .append_message(
            owner,
            id,
            &text(Role::Assistant, "a"),
            Some(&usage_on("2026-11-27", "m", 10, 5)),
        )
        .await
        .unwrap();
    let written = |store: Db| async move {
        let count = store
            .find_session(owner, id)
            .await
            .unwrap()
            .unwrap()
            .message_count;
        (count, store.list_messages(id).await.unwrap().len())
    };

    // Below the deployment's quota: stored, with its history and the
    // standing it was judged by.
    let (standing, asked) = ask(&store, owner, "2026-11", &Existing(id), "q", Some(16))
        .await
        .unwrap();
    assert_eq!(
        (standing.email.as_str(), standing.used_tokens),
        ("owner@example.com", 15)
    );
    let asked = asked.expect("within the quota, the question is stored");
    assert_eq!(
        (asked.question.content.as_str(), asked.question.role),
        ("q", Role::User)
    );
    let recent: Vec<_> = asked.recent.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(recent, ["a", "q"]);
    assert_eq!(
        store.list_messages(id).await.unwrap().last(),
        Some(&asked.question)
    );
    assert_eq!(
        (asked.session.id, asked.session.title.as_str()),
        (id, "mine")
    );
    assert_eq!(
        (
            asked.session.system_prompt.as_deref(),
            asked.session.model.as_deref()
        ),
        (Some("Be brief."), Some("small"))
    );
    assert_eq!(written(store.clone()).await, (2, 2));

    // Each refusal returns the standing and writes nothing: the deployment's
    // quota reached, the user's own reached, someone else's session, no such
    // session.
    let refusals = [
        (owner, id, None, Some(15)),
        (stranger, id, None, None),
        (owner, id + 1_000, None, None),
    ];
    for (asker, session_id, own, default) in
        refusals.into_iter().chain([(owner, id, Some(15), None)])
    {
        assert!(store.set_token_quota(owner, own).await.unwrap());
        let (standing, asked) = ask(
            &store,
            asker,
            "2026-11",
            &Existing(session_id),
            "no",
            default,
        )
        .await
        .unwrap();
        assert_eq!(asked, None, "{asker} {session_id} {own:?} {default:?}");
        assert_eq!(
            standing,
            store.standing(asker, "2026-11").await.unwrap().unwrap()
        );
        assert_eq!(written(store.clone()).await, (2, 2));
    }

    // The user's own quota outranks the deployment's; another month's usage
    // does not count against this one.
    assert!(store.set_token_quota(owner, Some(1_000)).await.unwrap());
    let (_, asked) = ask(&store, owner, "2026-11", &Existing(id), "own", Some(15))
        .await
        .unwrap();
    assert!(asked.is_some());
    assert!(store.set_token_quota(owner, Some(15)).await.unwrap());
    let (standing, asked) = ask(&store, owner, "2026-12", &Existing(id), "december", None)
        .await
        .unwrap();
    assert_eq!((standing.used_tokens, asked.is_some()), (0, true));
    assert_eq!(written(store.clone()).await, (4, 4));

    // An account that no longer exists.
    let gone = ask(
        &store,
        owner + 1_000,
        "2026-11",
        &Existing(id),
        "ghost",
        None,
    )
    .await;
    assert_eq!(gone, None);
    assert_eq!(written(store.clone()).await, (4, 4));

    // A new conversation: the session and its question, created together,
    // and neither beyond the quota.
    let new = Conversation::New(NewSession {
        title: "fresh".into(),
        system_prompt: Some("Be kind.".into()),
        model: None,
    });
    let before = store.list_sessions(owner, 100, 0).await.unwrap().len();
    let (_, asked) = ask(&store, owner, "2026-11", &new, "hello", None)
        .await
        .unwrap();
    assert_eq!(asked, None, "the owner's own quota of 15 is used up");
    assert_eq!(
        store.list_sessions(owner, 100, 0).await.unwrap().len(),
        before
    );
    let (_, asked) = ask(&store, owner, "2026-12", &new, "hello", None)
        .await
        .unwrap();
    let asked = asked.expect("a new month, a new conversation");
    let created = store
        .find_session(owner, asked.session.id)
        .await
        .unwrap()
        .expect("the new session is the owner's");
    assert_eq!(
        (
            created.title.as_str(),
            created.system_prompt.as_deref(),
            created.message_count
        ),
        ("fresh", Some("Be kind."), 1)
    );
    assert_eq!(asked.session.system_prompt.as_deref(), Some("Be kind."));
    assert_eq!(asked.recent, std::slice::from_ref(&asked.question));
    assert_eq!(
        store.list_messages(asked.session.id).await.unwrap(),
        asked.recent
    );
}

/// DynamoDB answers a query at most 1 MB at a time; a session holding more
/// must still read back whole and in order.
async fn long_histories_read_past_a_one_megabyte_page(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "long").await;
    // 24 messages of 100 KB: 2.4 MB, in characters of one, two and four bytes.
    for n in 0..24 {
        let filler = ["a", "é", "🦀"][n % 3].repeat(100_000 / [1, 2, 4][n % 3]);
        let content = format!("{n:02}:{filler}");
        store
            .append_message(owner, id, &text(Role::User, &content), None)
            .await
            .unwrap();
    }
    let all = store.list_messages(id).await.unwrap();
    let order: Vec<_> = all.iter().map(|m| m.content[..2].to_owned()).collect();
    let expected: Vec<_> = (0..24).map(|n| format!("{n:02}")).collect();
    assert_eq!(order, expected);
    assert!(all.iter().all(|m| m.content.len() > 100_000));

    let newest = all.last().unwrap().id;
    let recent = store.recent_messages(id, newest, 20).await.unwrap();
    let order: Vec<_> = recent.iter().map(|m| m.content[..2].to_owned()).collect();
    assert_eq!(order, expected[4..]);

    assert!(store.delete_session(owner, id).await.unwrap());
    assert!(store.list_messages(id).await.unwrap().is_empty());
}

fn token(user_id: i64, family: &str, hash: &str, expires_in: Duration) -> NewRefreshToken {
    NewRefreshToken {
        user_id,
        family: family.into(),
        token_hash: hash.into(),
        expires_at: OffsetDateTime::now_utc() + expires_in,
    }
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let later = OffsetDateTime::now_utc() + Duration::days(1);
    store
        .insert_refresh_token(&token(owner, "fam", "h1", Duration::days(1)))
        .await
        .unwrap();
    store
        .insert_refresh_token(&token(owner, "other", "x1", Duration::days(1)))
        .await
        .unwrap();

    assert_eq!(
        store.rotate_refresh_token("h1", "h2", later).await.unwrap(),
        Rotation::Rotated { user_id: owner }
    );
    // h1 is spent: presenting it again is reuse and revokes h2 as well.
    assert_eq!(
        store.rotate_refresh_token("h1", "h3", later).await.unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        store.rotate_refresh_token("h2", "h4", later).await.unwrap(),
        Rotation::Invalid
    );
    // Another login's family is untouched.
    assert_eq!(
        store.rotate_refresh_token("x1", "x2", later).await.unwrap(),
        Rotation::Rotated { user_id: owner }
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "y", later)
            .await
            .unwrap(),
        Rotation::Invalid
    );

    // Of concurrent rotations of one token, exactly one wins.
    let racers = (0..10).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .rotate_refresh_token("x2", &format!("race{n}"), later)
                .await
        })
    });
    let outcomes: Vec<_> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated { .. }))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
}

async fn expired_and_revoked_refresh_tokens_are_invalid(store: Db) {
    let owner = user(&store, "owner@example.com").await;
    let later = OffsetDateTime::now_utc() + Duration::days(1);
    store
        .insert_refresh_token(&token(owner, "old", "expired", Duration::seconds(-5)))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("expired", "n1", later)
            .await
            .unwrap(),
        Rotation::Invalid
    );

    store
        .insert_refresh_token(&token(owner, "fam", "live", Duration::days(1)))
        .await
        .unwrap();
    store.revoke_refresh_family("live").await.unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("live", "n2", later)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    // Revoking an unknown token is a no-op, not an error.
    store.revoke_refresh_family("never-issued").await.unwrap();
}

async fn admins_and_quotas_are_set_on_existing_users_only(store: Db) {
    let id = user(&store, "boss@example.com").await;
    let standing = store.standing(id, "2026-11").await.unwrap().unwrap();
    assert_eq!(standing.email, "boss@example.com");
    assert!(!standing.is_admin);
    assert_eq!((standing.token_quota, standing.used_tokens), (None, 0));

    assert!(store.set_admin("boss@example.com", true).await.unwrap());
    assert!(!store.set_admin("nobody@example.com", true).await.unwrap());
    assert!(store.set_token_quota(id, Some(5_000)).await.unwrap());
    assert!(!store.set_token_quota(id + 1_000, Some(1)).await.unwrap());
    let standing = store.standing(id, "2026-11").await.unwrap().unwrap();
    assert!(standing.is_admin);
    assert_eq!(standing.token_quota, Some(5_000));

    // Back to the default, and demoted.
    assert!(store.set_token_quota(id, None).await.unwrap());
    assert!(store.set_admin("boss@example.com", false).await.unwrap());
    let standing = store.standing(id, "2026-11").await.unwrap().unwrap();
    assert!(!standing.is_admin);
    assert_eq!(standing.token_quota, None);
    assert_eq!(store.standing(id + 1_000, "2026-11").await.unwrap(), None);
}

async fn usage_is_kept_per_day_and_users_are_listed_with_their_figures(store: Db) {
    let ann = user(&store, "ann@example.com").await;
    let bob = user(&store, "bob@example.com").await;
    let chats = session(&store, ann, "chats").await;
    session(&store, ann, "empty").await;
    let bobs = session(&store, bob, "bob's").await;
    let exchanges = [
        (ann, chats, usage_on("2026-11-02", "mock", 10, 5)),
        (ann, chats, usage_on("2026-11-02", "mock", 20, 5)),
        (ann, chats, usage_on("2026-11-02", "gpt", 1, 1)),
        (bob, bobs, usage_on("2026-11-02", "mock", 7, 3)),
        (ann, chats, usage_on("2026-11-30", "mock", 100, 50)),
        // Another month: in neither November's days nor its totals.
        (bob, bobs, usage_on("2026-12-01", "mock", 1_000, 1_000)),
    ];
    for (owner, session_id, record) in &exchanges {
        store
            .append_message(*owner, *session_id, &text(Role::User, "q"), None)
            .await
            .unwrap();
        store
            .append_message(
                *owner,
                *session_id,
                &text(Role::Assistant, "a"),
                Some(record),
            )
            .await
            .unwrap();
    }

    let days = store.daily_usage("2026-11").await.unwrap();
    let rows: Vec<(&str, i64, &str, i64, i64, i64)> = days
        .iter()
        .map(|d| {
            let (day, model) = (d.day.as_str(), d.model.as_str());
            (
                day,
                d.user_id,
                model,
                d.prompt_tokens,
                d.completion_tokens,
                d.requests,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("2026-11-02", ann, "gpt", 1, 1, 1),
            ("2026-11-02", ann, "mock", 30, 10, 2),
            ("2026-11-02", bob, "mock", 7, 3, 1),
            ("2026-11-30", ann, "mock", 100, 50, 1),
        ]
    );
    assert_eq!(store.daily_usage("2026-10").await.unwrap(), []);

    assert_eq!(store.count_users().await.unwrap(), 2);
    let listed = store.user_overviews("2026-11", 10, 0).await.unwrap();
    assert_eq!(listed.len(), 2);
    let first = &listed[0];
    assert_eq!(
        (first.user.id, first.user.email.as_str()),
        (ann, "ann@example.com")
    );
    assert_eq!((first.sessions, first.messages), (2, 8));
    assert_eq!(
        (first.prompt_tokens, first.completion_tokens, first.requests),
        (131, 61, 4)
    );
    let second = &listed[1];
    assert_eq!(second.user.id, bob);
    assert_eq!((second.sessions, second.messages), (1, 4));
    assert_eq!((second.prompt_tokens, second.completion_tokens), (7, 3));
    let one = store.user_overview(bob, "2026-11").await.unwrap().unwrap();
    assert_eq!(&one, second);
    assert_eq!(
        store.user_overview(bob + 1_000, "2026-11").await.unwrap(),
        None
    );
    // Paging, in id order.
    let page = store.user_overviews("2026-11", 1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].user.id, bob);
    assert!(
        store
            .user_overviews("2026-11", 10, 2)
            .await
            .unwrap()
            .is_empty()
    );
    // The quota counts the month's tokens.
    let standing = store.standing(ann, "2026-11").await.unwrap().unwrap();
    assert_eq!(standing.used_tokens, 192);
    let december = store.standing(bob, "2026-12").await.unwrap().unwrap();
    assert_eq!(december.used_tokens, 2_000);
}

async fn ping_answers(store: Db) {
    store.ping().await.unwrap();
}

/// SQLite: what is written reaches the database file soon after, copied
/// from the WAL by the checkpointer, not by the writer (whose checkpoints
/// synced both files while every write queued behind it waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_are_checkpointed_into_the_database_file() {
    let url = chat_core::testing::fresh_sqlite_url();
    let store = crate::support::store_at(&url).await.unwrap();
    user(&store, "checkpointed@example.com").await;
    let file = std::path::PathBuf::from(url.strip_prefix("sqlite://").unwrap());
    for attempt in 0..100 {
        // The file alone, without its WAL, holds only what was checkpointed.
        // A copy taken mid-checkpoint may be torn: then the next one is read.
        let copy = file.with_extension(format!("copy{attempt}.db"));
        std::fs::copy(&file, &copy).unwrap();
        let found = match crate::support::store_at(&format!("sqlite://{}", copy.display())).await {
            Ok(snapshot) => {
                snapshot
                    .find_user_by_email("checkpointed@example.com")
                    .await
            }
            Err(_) => Ok(None),
        };
        if let Ok(Some(_)) = found {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the user never reached the database file in 10 s");
}

/// DynamoDB holds at most 400 KB in an item: content up to the store's bound
/// fits, content past it is a validation error (422) and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_bounds_content_below_the_item_limit() {
    use chat_core::{error::ApiError, store::DYNAMODB_MAX_CONTENT_BYTES};

    let Some(store) = crate::support::dynamodb_store().await else {
        return crate::support::no_dynamodb();
    };
    let owner = user(&store, "owner@example.com").await;
    let id = session(&store, owner, "big").await;
    let largest = "x".repeat(DYNAMODB_MAX_CONTENT_BYTES);
    store
        .append_message(owner, id, &text(Role::Assistant, &largest), None)
        .await
        .expect("content at the bound fits in one item");

    let too_large = format!("{largest}é");
    let err = store
        .append_message(
            owner,
            id,
            &text(Role::Assistant, &too_large),
            Some(&usage("m", 1, 1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert_eq!(ApiError::from(err).status().as_u16(), 422);
    let session = store.find_session(owner, id).await.unwrap().unwrap();
    assert_eq!(session.message_count, 1);
    assert_eq!(store.list_messages(id).await.unwrap().len(), 1);
    assert!(store.monthly_usage(owner).await.unwrap().is_empty());
}
