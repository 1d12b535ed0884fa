//! The Secrets Manager overlay, against a local emulator (moto's server):
//! `AWS_ENDPOINT_URL` points the SDK at it, as it would at any endpoint.

use std::collections::HashMap;

use chat_core::config::Settings;
use secrecy::ExposeSecret;

/// The emulator's address; with `CI` set it must be there.
fn endpoint() -> Option<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if endpoint.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but AWS_ENDPOINT_URL is not: the Secrets Manager test cannot run"
        );
        eprintln!("note: AWS_ENDPOINT_URL is not set; the Secrets Manager test did not run");
    }
    endpoint
}

async fn create_secret(value: &str) -> String {
    let config = aws_config::load_from_env().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("chat-api-test-{}-{}", std::process::id(), nanos());
    client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .expect("create the secret in the emulator");
    name
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos())
}

#[tokio::test]
async fn a_lambda_start_with_only_the_secret_id_gets_its_settings_from_the_secret() {
    if endpoint().is_none() {
        return;
    }
    let jwt = "a-jwt-key-that-lives-only-in-secrets-manager-0123";
    let id = create_secret(&format!(
        r#"{{"JWT_SECRET": "{jwt}", "DATABASE_URL": "postgres://db/from-the-secret", "OPENAI_API_KEY": "sk-from-the-secret", "BCRYPT_COST": 5}}"#
    ))
    .await;
    // As on Lambda: no JWT_SECRET in the environment, which is refused without the secret.
    let env: HashMap<&str, String> = [
        ("AWS_LAMBDA_FUNCTION_NAME", "auth".to_owned()),
        ("SECRETS_MANAGER_SECRET_ID", id),
        ("BCRYPT_COST", "9".to_owned()),
        ("LLM_PROVIDER", "openai".to_owned()),
    ]
    .into_iter()
    .collect();
    let settings = Settings::load_from(|name| env.get(name).cloned())
        .await
        .expect("settings from the secret");
    assert_eq!(
        settings
            .auth
            .jwt_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .as_deref(),
        Some(jwt)
    );
    assert_eq!(
        settings
            .llm
            .openai
            .api_key
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .as_deref(),
        Some("sk-from-the-secret")
    );
    assert_eq!(
        settings.auth.bcrypt_cost, 5,
        "the secret's keys override the environment"
    );

    // Several secrets, comma-separated: the later ones win.
    let second = create_secret(r#"{"BCRYPT_COST": 6}"#).await;
    let both = format!("{},{second}", env["SECRETS_MANAGER_SECRET_ID"]);
    let layered = Settings::load_from(|name| match name {
        "SECRETS_MANAGER_SECRET_ID" => Some(both.clone()),
        _ => env.get(name).cloned(),
    })
    .await
    .expect("settings from two secrets");
    assert_eq!(layered.auth.bcrypt_cost, 6);
    assert_eq!(
        layered
            .auth
            .jwt_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .as_deref(),
        Some(jwt)
    );

    let without = Settings::load_from(|name| {
        (name != "SECRETS_MANAGER_SECRET_ID")
            .then(|| env.get(name).cloned())
            .flatten()
    })
    .await;
    assert_eq!(without.unwrap_err().var, "JWT_SECRET");
}

#[tokio::test]
async fn a_missing_secret_stops_the_start_naming_the_variable() {
    if endpoint().is_none() {
        return;
    }
    let err = Settings::load_from(|name| {
        (name == "SECRETS_MANAGER_SECRET_ID").then(|| "no-such-secret".to_owned())
    })
    .await
    .unwrap_err();
    assert_eq!(err.var, "SECRETS_MANAGER_SECRET_ID");
    assert!(err.message.contains("no-such-secret"), "{}", err.message);
}
