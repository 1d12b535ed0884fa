//! The Secrets Manager overlay: a JSON secret whose keys override the
//! environment, read once per process (once per cold start on Lambda).
//! The SDK takes its region, credentials and `AWS_ENDPOINT_URL` (a local
//! emulator, in tests) from the standard AWS environment.

use std::collections::HashMap;

use anyhow::Context as _;
use serde_json::Value;

pub async fn fetch(secret_id: &str) -> anyhow::Result<HashMap<String, String>> {
    let config = aws_config::load_from_env().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let secret = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(aws_sdk_secretsmanager::Error::from)
        .with_context(|| format!("reading secret {secret_id:?}"))?;
    let text = secret
        .secret_string()
        .with_context(|| format!("secret {secret_id:?} has no string value"))?;
    parse(text).with_context(|| format!("secret {secret_id:?}"))
}

/// A JSON object of settings; numbers and booleans are accepted as their text.
/// Empty values are left out, so they do not hide the environment's (a
/// template may create the secret with a key it has no value for yet).
fn parse(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let object: HashMap<String, Value> =
        serde_json::from_str(text).context("is not a JSON object of settings")?;
    let mut settings = HashMap::new();
    for (key, value) in object {
        let text = match value {
            Value::String(text) => text,
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            Value::Null => continue,
            _ => anyhow::bail!("{key} must be a string, a number or a boolean"),
        };
        if !text.trim().is_empty() {
            settings.insert(key, text);
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_a_flat_json_object() {
        let values =
            parse(r#"{"JWT_SECRET": "k", "BCRYPT_COST": 10, "MIGRATE_ON_START": false}"#).unwrap();
        assert_eq!(values["JWT_SECRET"], "k");
        assert_eq!(values["BCRYPT_COST"], "10");
        assert_eq!(values["MIGRATE_ON_START"], "false");
        assert!(parse(r#"{"A": {"nested": 1}}"#).is_err());
        let blank = parse(r#"{"DATABASE_URL": "", "OPENAI_API_KEY": null}"#).unwrap();
        assert!(
            blank.is_empty(),
            "blank values leave the environment's in place"
        );
        assert!(parse("not json").is_err());
    }
}
