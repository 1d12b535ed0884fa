//! The OpenAPI document: served, in step with the Router, and with its docs
//! page. (schemathesis, run by `.ci/run`, checks the answers against it.)

use std::collections::BTreeSet;

use chat_core::{openapi, routes, testing};
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Target, spawn_with};

mod run {
    crate::scenarios!(crate::harness::Mock::Answers =>
        the_document_and_its_docs_page_are_served,
    );
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn document() -> Value {
    serde_json::to_value(openapi::document()).expect("the document is JSON")
}

/// The paths an axum Router holds. axum has no public list of them; its
/// `Debug` output names each route's path (`RouteId(n): "/path"`), then the
/// fallback's own catch-all paths. Should that format change, this finds no
/// paths (or others) and the comparison below fails.
fn router_paths<S>(router: &axum::Router<S>) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let (routes, _fallback) = debug
        .split_once(", fallback_router:")
        .expect("a Router's Debug output names its fallback router");
    routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|rest| {
            let quoted = rest.split_once("): \"")?.1;
            Some(quoted.split_once('"')?.0.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_is_documented_and_every_documented_operation_is_served() {
    let document = document();
    let paths = document["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let router = axum::Router::from(routes::all());
    let served = router_paths(&router);
    assert!(
        served.len() > 20,
        "found {} routes: {served:?}",
        served.len()
    );
    assert_eq!(served, documented, "the Router's paths and the document's");

    // Which methods each path answers, asked of the running server: 405 is
    // "not served", anything else (401, 422, 200...) is a route.
    let target = spawn_with("sqlite", testing::fresh_sqlite_url(), &[]).await;
    let api = &target.api;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1").replace("{generation_id}", "0");
        for method in METHODS {
            let reply = api.send(api.request(method.clone(), &concrete, None)).await;
            let is_documented = item.get(method.as_str().to_lowercase()).is_some();
            let is_served = reply.status != 405;
            assert_eq!(
                is_served, is_documented,
                "{method} {path}: answered {} {}",
                reply.status, reply.body
            );
            assert_ne!(reply.body["code"], "not_found", "{method} {path}");
        }
    }
}

#[test]
fn every_operation_documents_its_errors_and_how_to_authenticate() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(
        schemes["oauth2"]["flows"]["password"]["tokenUrl"],
        "/auth/login"
    );
    let mut operation_ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            assert!(
                operation_ids.insert(operation["operationId"].as_str().unwrap().to_owned()),
                "{name}: operationId used twice"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("default"), "{name}");
            assert!(responses.contains_key("429"), "{name}");
            let secured = operation.get("security").is_some();
            // Login and refresh answer 401 for bad credentials; logout never does.
            let checks_credentials = matches!(path.as_str(), "/auth/login" | "/auth/refresh");
            assert_eq!(
                responses.contains_key("401"),
                secured || checks_credentials,
                "{name}"
            );
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{name}: {status}");
                }
            }
            // Every error is problem+json, by reference or in line.
            for (status, response) in responses {
                if status.starts_with(['4', '5']) || status == "default" {
                    let response = resolve(&document, response);
                    assert!(
                        response["content"]
                            .get("application/problem+json")
                            .is_some(),
                        "{name} {status}: {response}"
                    );
                }
            }
        }
    }
    // The stream's events are described.
    let stream = &document["paths"]["/chat/stream"]["post"]["responses"]["200"]["content"];
    assert!(stream.get("text/event-stream").is_some(), "{stream}");
    let events = &document["components"]["schemas"]["ChatStreamEvent"]["oneOf"];
    let titles: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["title"].as_str())
        .collect();
    assert_eq!(titles, ["start", "delta", "done", "error"]);
}

fn resolve<'a>(document: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["responses"][name]
        }
        None => response,
    }
}

async fn the_document_and_its_docs_page_are_served(target: &Target) {
    let api = &target.api;
    let served = api.get("/openapi.json", None).await.expect(200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(
        served.body,
        document(),
        "the document served is this build's"
    );

    let page = api.get("/docs", None).await.expect(200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = page.body.as_str().unwrap_or_default();
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/docs.js",
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let reply = api.get(asset, None).await.expect(200);
        let expected = if asset.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(reply.header("content-type"), Some(expected), "{asset}");
        assert!(reply.header("content-security-policy").is_some(), "{asset}");
        assert!(reply.body.as_str().is_some_and(|body| body.len() > 100));
    }
}
