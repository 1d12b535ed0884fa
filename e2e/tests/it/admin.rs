//! The admin API and page, and the quotas an administrator sets.
//!
//! On a shared deployment (the Lambda run) other scenarios' users exist too,
//! so the checks look up their own users rather than count everyone.

use e2e::{Account, Api};
use serde_json::{Value, json};

use crate::harness::Target;

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        the_admin_api_is_for_administrators_only,
        admins_see_every_user_with_their_usage_per_day,
        a_quota_set_by_an_admin_stops_chat_before_anything_is_stored,
    );
}

/// Chats once in a new session; the exchange's total tokens.
async fn chat(api: &Api, account: &Account, session_id: Option<i64>) -> (i64, i64) {
    let mut body = json!({ "message": "How do I reverse a list in Python?" });
    if let Some(id) = session_id {
        body["session_id"] = json!(id);
    }
    let reply = api.chat(account, &body).await.expect(200).body;
    (
        reply["session_id"].as_i64().unwrap(),
        reply["usage"]["total_tokens"].as_i64().unwrap(),
    )
}

async fn users_page(api: &Api, admin: &Account) -> Value {
    api.get("/admin/users?limit=1000", Some(&admin.access_token))
        .await
        .expect(200)
        .body
}

fn row_of(page: &Value, account: &Account) -> Value {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == account.id)
        .unwrap_or_else(|| panic!("{} is not listed", account.email))
        .clone()
}

async fn the_admin_api_is_for_administrators_only(target: &Target) {
    let api = &target.api;
    let user = api.account().await;
    let admin = api.admin().await;
    let quota = json!({ "monthly_tokens": 10 });
    let quota_path = format!("/admin/users/{}/quota", user.id);
    for token in [None, Some("not-a-token")] {
        api.get("/admin/users", token)
            .await
            .expect_problem(401, "unauthorized");
        api.get("/admin/usage", token)
            .await
            .expect_problem(401, "unauthorized");
    }
    let user_token = Some(user.access_token.as_str());
    api.get("/admin/users", user_token)
        .await
        .expect_problem(403, "forbidden");
    api.get("/admin/usage", user_token)
        .await
        .expect_problem(403, "forbidden");
    let request = api
        .request(reqwest::Method::PUT, &quota_path, user_token)
        .json(&quota);
    api.send(request).await.expect_problem(403, "forbidden");
    // The refused attempt changed nothing.
    assert_eq!(
        row_of(&users_page(api, &admin).await, &user)["token_quota"],
        Value::Null
    );

    // Bad input from an administrator is a 422 that changes nothing.
    let admin_token = Some(admin.access_token.as_str());
    for path in [
        "/admin/users?limit=0",
        "/admin/users?offset=-1",
        "/admin/users?month=2026-13",
        "/admin/usage?month=last",
        "/admin/usage?month=2026-1",
    ] {
        api.get(path, admin_token)
            .await
            .expect_problem(422, "validation_failed");
    }
    let negative = api
        .request(reqwest::Method::PUT, &quota_path, admin_token)
        .json(&json!({ "monthly_tokens": -1 }));
    api.send(negative)
        .await
        .expect_problem(422, "validation_failed");
    let unknown = api
        .request(
            reqwest::Method::PUT,
            "/admin/users/999999999/quota",
            admin_token,
        )
        .json(&quota);
    api.send(unknown)
        .await
        .expect_problem(404, "user_not_found");
    assert_eq!(
        row_of(&users_page(api, &admin).await, &user)["token_quota"],
        Value::Null
    );

    // The page itself is public (it signs in by itself), embedded and locked down.
    let page = api
        .send(api.request(reqwest::Method::GET, "/admin", None))
        .await
        .expect(200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = page.body.as_str().unwrap();
    assert!(html.contains("/admin/dashboard.js") && !html.contains("https://"));
    let script = api.get("/admin/dashboard.js", None).await.expect(200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

async fn admins_see_every_user_with_their_usage_per_day(target: &Target) {
    let api = &target.api;
    let admin = api.admin().await;
    let alice = api.account().await;
    let bob = api.account().await;
    let (alice_session, first) = chat(api, &alice, None).await;
    let (_, second) = chat(api, &alice, Some(alice_session)).await;
    let (_, bobs) = chat(api, &bob, None).await;

    let page = users_page(api, &admin).await;
    assert!(page["total_users"].as_i64().unwrap() >= 3);
    assert!(page["month"].as_str().unwrap().len() == 7);
    let alice_row = row_of(&page, &alice);
    assert_eq!(alice_row["email"], alice.email.as_str());
    assert_eq!(alice_row["is_admin"], false);
    assert_eq!(alice_row["sessions"], 1);
    assert_eq!(alice_row["messages"], 4);
    assert_eq!(alice_row["tokens_this_month"], first + second);
    assert_eq!(alice_row["requests_this_month"], 2);
    let bob_row = row_of(&page, &bob);
    assert_eq!(
        (bob_row["sessions"].clone(), bob_row["messages"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(bob_row["tokens_this_month"], bobs);
    assert_eq!(
        row_of(&page, &admin)["is_admin"],
        true,
        "listed in ADMIN_EMAILS"
    );

    let usage = api
        .get("/admin/usage", Some(&admin.access_token))
        .await
        .expect(200)
        .body;
    assert_eq!(usage["month"], page["month"]);
    let days = usage["days"].as_array().unwrap();
    assert!((28..=31).contains(&days.len()));
    let month = usage["month"].as_str().unwrap();
    assert_eq!(days[0]["day"], format!("{month}-01"));
    let tokens_of = |days: &[Value]| -> i64 {
        days.iter()
            .map(|day| day["total_tokens"].as_i64().unwrap())
            .sum()
    };
    assert!(tokens_of(days) >= first + second + bobs);
    assert_eq!(
        tokens_of(days),
        usage["totals"]["total_tokens"].as_i64().unwrap()
    );
    let user_days = |account: &Account| -> Vec<Value> {
        usage["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["user_id"] == account.id)
            .unwrap_or_else(|| panic!("{} has no usage", account.email))["days"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(tokens_of(&user_days(&alice)), first + second);
    assert_eq!(tokens_of(&user_days(&bob)), bobs);
    assert!(usage["totals"]["active_users"].as_i64().unwrap() >= 2);
}

async fn a_quota_set_by_an_admin_stops_chat_before_anything_is_stored(target: &Target) {
    let api = &target.api;
    let admin = api.admin().await;
    let user = api.account().await;
    let (session, used) = chat(api, &user, None).await;

    let set_quota = async |tokens: Value| {
        let request = api
            .request(
                reqwest::Method::PUT,
                &format!("/admin/users/{}/quota", user.id),
                Some(&admin.access_token),
            )
            .json(&json!({ "monthly_tokens": tokens }));
        api.send(request).await.expect(200).body
    };
    let row = set_quota(json!(used)).await;
    assert_eq!(row["id"], user.id);
    assert_eq!(
        (row["token_quota"].clone(), row["effective_quota"].clone()),
        (json!(used), json!(used))
    );

    let body = json!({ "session_id": session, "message": "one more?" });
    let refused = api
        .chat(&user, &body)
        .await
        .expect_problem(429, "quota_exceeded");
    assert_eq!(refused.body["quota"], used);
    assert_eq!(refused.body["used"], used);
    let renews_in: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=31 * 86_400).contains(&renews_in));
    let streamed = api.stream(&user.access_token, &body).await.unwrap_err();
    streamed.expect_problem(429, "quota_exceeded");
    // Neither question was stored.
    assert_eq!(api.session(&user, session).await["message_count"], 2);
    let usage = api
        .get("/usage", Some(&user.access_token))
        .await
        .expect(200)
        .body;
    assert_eq!(
        usage["quota"],
        json!({ "monthly_tokens": used, "used_tokens": used, "remaining_tokens": 0 })
    );

    // Back to the deployment's default (none here): chatting works again.
    let row = set_quota(Value::Null).await;
    assert_eq!(row["token_quota"], Value::Null);
    api.chat(&user, &body).await.expect(200);
    assert_eq!(api.session(&user, session).await["message_count"], 4);
}
