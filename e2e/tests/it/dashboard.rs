//! The HTML pages (the admin dashboard, the API docs) in a real headless browser: Debian's `chromium`,
//! driven over WebDriver by `chromedriver` (packages chromium and
//! chromium-driver), or the browser and driver named by `CHROMIUM` and
//! `CHROMEDRIVER`. With `CI` set, a missing browser is a failure.
//!
//! `DASHBOARD_SCREENSHOT=path.png` also saves what the admin sees.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use chat_core::testing;
use e2e::Account;
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::harness::spawn_with;

fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// A chromedriver process on a free port; killed when dropped.
struct Driver {
    process: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Driver {
    fn start() -> Option<Self> {
        let (driver, browser) = (chromedriver(), chromium());
        if !Path::new(&driver).exists() || !Path::new(&browser).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {driver} or {browser} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: chromium and chromium-driver are not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(format!("chat_test_chromium_{port}"));
        Some(Self {
            process,
            port,
            profile,
        })
    }

    /// A fresh headless browser. The flags keep Chromium from reaching for
    /// Google's services, which this sandbox (and many CI runners) cannot reach.
    async fn browser(&self) -> Client {
        let options = json!({
            "binary": chromium(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", self.profile.display()),
            ],
        });
        let capabilities = serde_json::Map::from_iter([("goog:chromeOptions".to_owned(), options)]);
        let url = format!("http://127.0.0.1:{}", self.port);
        for _ in 0..100 {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            if let Ok(client) = connected {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a browser on {url}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

/// Waits for an element that is displayed.
async fn visible(browser: &Client, css: &str) -> Element {
    visible_at(browser, Locator::Css(css)).await
}

async fn visible_at(browser: &Client, locator: Locator<'_>) -> Element {
    for _ in 0..100 {
        if let Ok(element) = browser.find(locator).await
            && element.is_displayed().await.unwrap_or(false)
        {
            return element;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{locator:?} never showed; page: {}",
        browser.source().await.unwrap_or_default()
    );
}

async fn sign_in(browser: &Client, email: &str) {
    visible(browser, "#login-form").await;
    let field = browser.find(Locator::Id("email")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(email).await.unwrap();
    let password = browser.find(Locator::Id("password")).await.unwrap();
    password.clear().await.unwrap();
    password.send_keys(e2e::PASSWORD).await.unwrap();
    browser
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn attribute(element: &Element, name: &str) -> String {
    element
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {name} attribute"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_users_and_a_chart_of_real_usage_and_a_non_admin_sees_403() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let target = spawn_with(
        "sqlite",
        testing::fresh_sqlite_url(),
        &[("LLM_PRICES", "mock=0.15/0.60")],
    )
    .await;
    let api = &target.api;
    let admin = api.admin().await;
    let alice = api.account().await;
    let bob = api.account().await;
    for (account, questions) in [(&alice, 3), (&bob, 1)] {
        for n in 0..questions {
            let body =
                json!({ "message": format!("Question {n}: how do Python generators work?") });
            api.chat(account, &body).await.expect(200);
        }
    }
    // What the page should show, from the API itself.
    let usage = api
        .get("/admin/usage", Some(&admin.access_token))
        .await
        .expect(200)
        .body;
    let users = api
        .get("/admin/users", Some(&admin.access_token))
        .await
        .expect(200)
        .body;

    let browser = driver.browser().await;
    browser.goto(&api.url("/admin")).await.unwrap();
    sign_in(&browser, e2e::ADMIN_EMAIL).await;
    visible(&browser, "#dashboard").await;

    // The users table: one row per user, with their figures.
    let rows = browser
        .find_all(Locator::Css("#users tbody tr[data-user-id]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for account in [&alice, &bob] {
        let row = visible(
            &browser,
            &format!("#users tr[data-user-id='{}']", account.id),
        )
        .await;
        let text = row.text().await.unwrap();
        let expected = expected_row(&users, account);
        assert!(text.contains(&account.email), "{text}");
        assert!(text.contains(&expected), "{text} lacks {expected}");
    }

    // The chart: a bar per day of the month, each as tall as the API's figure.
    let bars = browser
        .find_all(Locator::Css("#usage-chart rect.bar"))
        .await
        .unwrap();
    let days = usage["days"].as_array().unwrap();
    assert_eq!(bars.len(), days.len());
    let mut drawn_tokens = 0;
    for (bar, day) in bars.iter().zip(days) {
        assert_eq!(
            attribute(bar, "data-day").await,
            day["day"].as_str().unwrap()
        );
        let tokens: i64 = attribute(bar, "data-tokens").await.parse().unwrap();
        assert_eq!(tokens, day["total_tokens"].as_i64().unwrap());
        let height: f64 = attribute(bar, "height").await.parse().unwrap();
        assert_eq!(
            tokens > 0,
            height > 0.0,
            "a day with usage has a visible bar"
        );
        drawn_tokens += tokens;
    }
    let total = usage["totals"]["total_tokens"].as_i64().unwrap();
    assert!(total > 0);
    assert_eq!(drawn_tokens, total);
    let shown_total = visible(&browser, "#totals dd[data-total='total_tokens']").await;
    assert_eq!(
        attribute(&shown_total, "data-value").await,
        total.to_string()
    );
    let shown_users = visible(&browser, "#totals dd[data-total='active_users']").await;
    assert_eq!(shown_users.text().await.unwrap(), "2");

    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot().await.unwrap()).expect("save the screenshot");
    }

    // A non-admin signs in and gets the API's 403, on the page.
    browser
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&browser, &alice.email).await;
    let error = visible(&browser, "#error").await;
    let message = error.text().await.unwrap();
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("not an administrator"), "{message}");
    let dashboard = browser.find(Locator::Id("dashboard")).await.unwrap();
    assert!(!dashboard.is_displayed().await.unwrap());
    browser.close().await.unwrap();
}

/// The row's figures as the page formats them: sessions, messages, tokens.
fn expected_row(users: &Value, account: &Account) -> String {
    let row = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == account.id)
        .unwrap();
    let tokens = row["tokens_this_month"].as_i64().unwrap();
    let grouped = tokens
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|digits| std::str::from_utf8(digits).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    format!("{} {} {grouped}", row["sessions"], row["messages"])
}

/// The docs page under its Content-Security-Policy: Swagger UI draws every
/// operation of the document, "Authorize" logs in through the OAuth2 password
/// form (POST /auth/login), and "Try it out" then calls the API as that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_lists_every_operation_and_authorizes_with_the_password_form() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let target = spawn_with("sqlite", testing::fresh_sqlite_url(), &[]).await;
    let api = &target.api;
    let user = api.account().await;
    let document = api.get("/openapi.json", None).await.expect(200).body;
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();

    let browser = driver.browser().await;
    browser.goto(&api.url("/docs")).await.unwrap();
    let title = visible(&browser, ".swagger-ui .info .title").await;
    assert!(title.text().await.unwrap().contains("chat-api"));
    let drawn = browser
        .find_all(Locator::Css(".swagger-ui .opblock"))
        .await
        .unwrap();
    assert_eq!(drawn.len(), operations, "one block per operation");

    // Authorize with the OAuth2 password form.
    click(&browser, ".swagger-ui .btn.authorize").await;
    let username = visible(&browser, "#oauth_username").await;
    username.send_keys(&user.email).await.unwrap();
    let password = visible(&browser, "#oauth_password").await;
    password.send_keys(e2e::PASSWORD).await.unwrap();
    // The oauth2 scheme's own box (the bearer scheme has one too).
    let oauth2 = "//div[contains(@class, 'auth-container')][.//input[@id='oauth_username']]";
    visible_at(
        &browser,
        Locator::XPath(&format!("{oauth2}//button[contains(@class, 'authorize')]")),
    )
    .await
    .click()
    .await
    .unwrap();
    // Once the login succeeds, that box offers to log out instead.
    visible_at(
        &browser,
        Locator::XPath(
            "//div[contains(@class, 'auth-container')]//button[normalize-space() = 'Logout']",
        ),
    )
    .await;
    click(&browser, ".btn-done").await;

    // GET /auth/me as that user, from the page.
    click(&browser, "#operations-auth-me .opblock-summary").await;
    click(&browser, "#operations-auth-me .try-out__btn").await;
    click(&browser, "#operations-auth-me .execute").await;
    let status = visible(
        &browser,
        "#operations-auth-me .live-responses-table tr.response .response-col_status",
    )
    .await;
    assert_eq!(status.text().await.unwrap().trim(), "200");
    let body = visible(
        &browser,
        "#operations-auth-me .live-responses-table .microlight",
    )
    .await;
    let body = body.text().await.unwrap();
    assert!(body.contains(&user.email), "{body}");
    browser.close().await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    visible(browser, css).await.click().await.unwrap();
}
