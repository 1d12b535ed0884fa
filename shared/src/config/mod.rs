//! Typed settings read once from the environment (and `.env` in development).
//!
//! Every variable is parsed here and nowhere else, so a bad value stops start-up
//! with one line naming the variable, instead of failing on the first request.

mod limits;
mod llm;
mod secrets;

use std::{fmt, str::FromStr, time::Duration};

use axum::http::HeaderValue;
use secrecy::SecretString;

pub use limits::{LimitSettings, Rate, RedisOutagePolicy};
pub use llm::{
    AnthropicSettings, LlmSettings, MockFailure, MockSettings, ModelPrice, OnDisconnect,
    OpenAiSettings, ProviderKind,
};

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(var: &'static str, message: impl fmt::Display) -> Self {
        Self {
            var,
            message: message.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub log_format: LogFormat,
    /// `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
    pub log_filter: String,
    /// Production refuses to start with a generated JWT key.
    pub production: bool,
    pub db: DbSettings,
    pub auth: AuthSettings,
    pub llm: LlmSettings,
    pub http: HttpSettings,
    pub limits: LimitSettings,
}

#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub migrate_on_start: bool,
    /// `DYNAMODB_CREATE_TABLE`: create the `dynamodb://` table when absent
    /// (development and tests; on Lambda the template owns the table).
    pub dynamodb_create_table: bool,
    /// `DYNAMODB_MAX_ATTEMPTS`: tries of each DynamoDB request, with the SDK's
    /// backoff between them, before a throttled request is answered 503.
    pub dynamodb_max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `None` outside production: a random key is generated for this process.
    pub jwt_secret: Option<SecretString>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `ADMIN_EMAILS`: these accounts are administrators (lower-cased, as
    /// emails are stored), besides those promoted with `server promote-admin`.
    pub admin_emails: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub cors_origins: Vec<HeaderValue>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// The environment (and `.env` in development), overlaid with the JSON
    /// secrets named by `SECRETS_MANAGER_SECRET_ID` (comma-separated; later ones
    /// win) when it is set: their keys win over the environment.
    pub async fn load() -> Result<Self, ConfigError> {
        load_dotenv()?;
        Self::load_from(|name| std::env::var(name).ok()).await
    }

    /// `load` from any source of variables; the AWS SDK still takes its region,
    /// credentials and endpoint from the process environment.
    pub async fn load_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let Some(secret_id) =
            lookup("SECRETS_MANAGER_SECRET_ID").filter(|id| !id.trim().is_empty())
        else {
            return Self::from_lookup(lookup);
        };
        let mut overrides = std::collections::HashMap::new();
        for id in secret_id
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
        {
            let values = secrets::fetch(id)
                .await
                .map_err(|err| ConfigError::new("SECRETS_MANAGER_SECRET_ID", format!("{err:#}")))?;
            overrides.extend(values);
        }
        Self::from_lookup(|name| overrides.get(name).cloned().or_else(|| lookup(name)))
    }

    /// Parses settings from any source of variables (the environment, a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let on_lambda = vars.get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let production = on_lambda || vars.get("APP_ENV").as_deref() == Some("production");

        let jwt_secret = vars.get("JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError::new(
                "JWT_SECRET",
                format!("must be at least 32 bytes, got {}", secret.len()),
            ));
        }
        if jwt_secret.is_none() && production {
            return Err(ConfigError::new(
                "JWT_SECRET",
                "is required in production and on Lambda (at least 32 random bytes)",
            ));
        }

        Ok(Self {
            port: vars.parsed("PORT", 8000)?,
            // CloudWatch wants one JSON object per line.
            log_format: vars.choice(
                "LOG_FORMAT",
                if on_lambda {
                    LogFormat::Json
                } else {
                    LogFormat::Pretty
                },
                &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            )?,
            log_filter: vars
                .get("RUST_LOG")
                .or_else(|| {
                    vars.get("AWS_LAMBDA_LOG_LEVEL")
                        .map(|level| level.to_lowercase())
                })
                .unwrap_or_else(|| "info,sqlx=warn".to_owned()),
            production,
            db: DbSettings {
                url: vars.database_url(on_lambda)?.into(),
                max_connections: vars
                    .positive("DB_MAX_CONNECTIONS", if on_lambda { 2 } else { 10 })?,
                migrate_on_start: vars.flag("MIGRATE_ON_START", true)?,
                dynamodb_create_table: vars.dynamodb_create_table(on_lambda)?,
                dynamodb_max_attempts: vars.positive("DYNAMODB_MAX_ATTEMPTS", 4)?,
            },
            auth: AuthSettings {
                jwt_secret: jwt_secret.map(SecretString::from),
                access_token_ttl: Duration::from_secs(vars.positive("ACCESS_TOKEN_TTL_SECS", 900)?),
                refresh_token_ttl: Duration::from_secs(
                    vars.positive("REFRESH_TOKEN_TTL_SECS", 2_592_000)?,
                ),
                bcrypt_cost: vars.bcrypt_cost()?,
                admin_emails: vars
                    .list("ADMIN_EMAILS")
                    .unwrap_or_default()
                    .into_iter()
                    .map(|email| email.to_lowercase())
                    .collect(),
            },
            llm: llm::parse(&vars)?,
            http: HttpSettings {
                cors_origins: vars.cors_origins()?,
                body_limit_bytes: vars.positive("BODY_LIMIT_BYTES", 256 * 1024)?,
                request_timeout: Duration::from_secs(vars.positive("REQUEST_TIMEOUT_SECS", 300)?),
            },
            limits: limits::parse(&vars, on_lambda)?,
        })
    }
}

/// Loads `.env` into the environment in development; never on Lambda, where
/// configuration comes from the function alone.
fn load_dotenv() -> Result<(), ConfigError> {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        return Ok(());
    }
    match dotenvy::dotenv() {
        // A missing .env is normal; a malformed one is worth stopping for.
        Err(err) if !err.not_found() => Err(ConfigError::new(".env", err)),
        _ => Ok(()),
    }
}

/// Typed access to a lookup function; each helper names the variable in its error.
pub(crate) struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// A variable that is set and not blank (an empty value means "use the default").
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.trim().is_empty())
    }

    pub(crate) fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|err| ConfigError::new(name, format!("{raw:?} is not valid: {err}"))),
        }
    }

    pub(crate) fn positive<T: FromStr + Default + PartialOrd>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let value = self.parsed(name, default)?;
        if value <= T::default() {
            return Err(ConfigError::new(name, "must be greater than 0"));
        }
        Ok(value)
    }

    pub(crate) fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.choice(
            name,
            default,
            &[("true", true), ("1", true), ("false", false), ("0", false)],
        )
    }

    pub(crate) fn choice<T: Copy>(
        &self,
        name: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let wanted = raw.trim().to_ascii_lowercase();
        options
            .iter()
            .find(|(label, _)| *label == wanted)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let labels: Vec<&str> = options.iter().map(|(label, _)| *label).collect();
                ConfigError::new(name, format!("{raw:?} is not one of {}", labels.join(", ")))
            })
    }

    /// A comma-separated list; `None` when unset or empty.
    pub(crate) fn list(&self, name: &str) -> Option<Vec<String>> {
        let items: Vec<String> = self
            .get(name)?
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        (!items.is_empty()).then_some(items)
    }

    /// `sqlite://chat.db` by default, except on Lambda, where the working
    /// directory is read-only: a function without a database says so at once.
    fn database_url(&self, on_lambda: bool) -> Result<String, ConfigError> {
        match self.get("DATABASE_URL") {
            Some(url) => Ok(url),
            None if on_lambda => Err(ConfigError::new(
                "DATABASE_URL",
                "is required on Lambda: set it in the settings secret (postgres://...)",
            )),
            None => Ok("sqlite://chat.db".to_owned()),
        }
    }

    /// Creating tables is a development convenience. On Lambda every cold start
    /// would race to do it, and the function's role may not: the template owns it.
    fn dynamodb_create_table(&self, on_lambda: bool) -> Result<bool, ConfigError> {
        let create = self.flag("DYNAMODB_CREATE_TABLE", false)?;
        if create && on_lambda {
            return Err(ConfigError::new(
                "DYNAMODB_CREATE_TABLE",
                "is for development and tests; on Lambda, template.yaml creates the table",
            ));
        }
        Ok(create)
    }

    fn bcrypt_cost(&self) -> Result<u32, ConfigError> {
        let cost = self.parsed("BCRYPT_COST", 12)?;
        if !(4..=31).contains(&cost) {
            return Err(ConfigError::new(
                "BCRYPT_COST",
                format!("{cost} is outside 4..=31"),
            ));
        }
        Ok(cost)
    }

    /// Origins, or `*` alone: any origin. Credentials (cookies) are never
    /// allowed, so `*` only lets pages send the bearer token they hold.
    fn cors_origins(&self) -> Result<Vec<HeaderValue>, ConfigError> {
        let Some(raw) = self.get("CORS_ORIGINS") else {
            return Ok(Vec::new());
        };
        if raw.trim() == "*" {
            return Ok(vec![HeaderValue::from_static("*")]);
        }
        raw.split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                    return Err(ConfigError::new(
                        "CORS_ORIGINS",
                        format!("{origin:?} is not an http(s) origin"),
                    ));
                }
                HeaderValue::from_str(origin.trim_end_matches('/'))
                    .map_err(|err| ConfigError::new("CORS_ORIGINS", format!("{origin:?}: {err}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let settings = parse(&[]).expect("defaults parse");
        assert_eq!(settings.port, 8000);
        assert_eq!(settings.llm.provider, ProviderKind::Mock);
        assert_eq!(settings.llm.history_max_messages, 20);
        assert_eq!(settings.auth.bcrypt_cost, 12);
        assert!(settings.auth.jwt_secret.is_none());
    }

    #[test]
    fn errors_name_the_variable() {
        let err = parse(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(err.var, "PORT");
        let err = parse(&[("STREAM_ON_DISCONNECT", "maybe")]).unwrap_err();
        assert!(
            err.to_string().starts_with("STREAM_ON_DISCONNECT: "),
            "{err}"
        );
        let err = parse(&[("BCRYPT_COST", "3")]).unwrap_err();
        assert_eq!(err.var, "BCRYPT_COST");
        for bad in ["example.com", "*, https://app.example.com"] {
            let err = parse(&[("CORS_ORIGINS", bad)]).unwrap_err();
            assert_eq!(err.var, "CORS_ORIGINS", "{bad}");
        }
        let any = parse(&[("CORS_ORIGINS", " * ")]).unwrap();
        assert_eq!(any.http.cors_origins, [HeaderValue::from_static("*")]);
    }

    #[test]
    fn production_requires_a_long_enough_jwt_secret() {
        let err = parse(&[("APP_ENV", "production")]).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let err = parse(&[("AWS_LAMBDA_FUNCTION_NAME", "auth")]).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let err = parse(&[("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let ok = parse(&[("APP_ENV", "production"), ("JWT_SECRET", &"k".repeat(32))]);
        assert!(ok.is_ok());
    }

    #[test]
    fn providers_need_their_keys_and_a_distinct_fallback() {
        let err = parse(&[("LLM_PROVIDER", "openai")]).unwrap_err();
        assert_eq!(err.var, "OPENAI_API_KEY");
        // A local OpenAI-compatible server needs no key.
        let local = parse(&[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", "http://localhost:11434/v1/"),
        ])
        .unwrap();
        assert_eq!(local.llm.openai.base_url, "http://localhost:11434/v1");
        assert_eq!(local.llm.models, ["gpt-4o-mini"]);
        let err = parse(&[
            ("LLM_PROVIDER", "mock"),
            ("LLM_FALLBACK_PROVIDER", "anthropic"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "ANTHROPIC_API_KEY");
        let err = parse(&[("LLM_FALLBACK_PROVIDER", "mock")]).unwrap_err();
        assert_eq!(err.var, "LLM_FALLBACK_PROVIDER");
        let err = parse(&[("OPENAI_BASE_URL", "localhost:11434")]).unwrap_err();
        assert_eq!(err.var, "OPENAI_BASE_URL");
        let both = parse(&[
            ("LLM_PROVIDER", "anthropic"),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("ANTHROPIC_MODEL", "claude-test"),
            ("LLM_MODELS", "claude-test, claude-other"),
        ])
        .unwrap();
        assert_eq!(both.llm.models, ["claude-test", "claude-other"]);
        assert!(
            !format!("{both:?}").contains("sk-ant-test"),
            "keys never reach Debug output"
        );
    }

    #[test]
    fn lambda_needs_a_database_and_defaults_to_a_small_pool() {
        let err = parse(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "chat"),
            ("JWT_SECRET", &"k".repeat(32)),
        ])
        .unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let settings = parse(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "chat"),
            ("JWT_SECRET", &"k".repeat(32)),
            ("DATABASE_URL", "postgres://db/chat"),
        ])
        .unwrap();
        assert_eq!(settings.db.max_connections, 2);
    }

    #[test]
    fn lambda_never_creates_dynamodb_tables() {
        let lambda = [
            ("AWS_LAMBDA_FUNCTION_NAME", "chat"),
            ("JWT_SECRET", &*"k".repeat(32)),
            ("DATABASE_URL", "dynamodb://chat"),
        ];
        let mut creating = lambda.to_vec();
        creating.push(("DYNAMODB_CREATE_TABLE", "true"));
        assert_eq!(parse(&creating).unwrap_err().var, "DYNAMODB_CREATE_TABLE");
        assert!(!parse(&lambda).unwrap().db.dynamodb_create_table);
        let laptop = parse(&[("DYNAMODB_CREATE_TABLE", "true")]).unwrap();
        assert!(laptop.db.dynamodb_create_table);
    }

    #[test]
    fn env_example_lists_every_variable_the_settings_read() {
        let example = include_str!("../../../.env.example");
        let listed: std::collections::BTreeSet<&str> = example
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, _)| name.trim())
            .collect();
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        // Some variables are read only once a provider that needs them is chosen.
        let providers = [
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-test"),
            ("LLM_FALLBACK_PROVIDER", "anthropic"),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ];
        for given in [&[][..], &providers[..]] {
            Settings::from_lookup(|name| {
                read.lock().unwrap().insert(name.to_owned());
                given
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
            .unwrap();
        }
        // Set by the Lambda runtime, not by anyone configuring the API.
        let runtime = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_LOG_LEVEL"];
        let missing: Vec<String> = read
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|name| !listed.contains(name.as_str()) && !runtime.contains(&name.as_str()))
            .collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }

    #[test]
    fn rate_limits_quotas_and_admins() {
        let defaults = parse(&[]).unwrap().limits;
        assert_eq!(defaults.per_user_chat.unwrap().to_string(), "30/60s");
        assert_eq!(defaults.on_redis_error, RedisOutagePolicy::Open);
        assert!(defaults.redis_url.is_none() && defaults.monthly_token_quota.is_none());
        let set = parse(&[
            ("RATE_LIMIT_CHAT", "5/s"),
            ("RATE_LIMIT_AUTH", "off"),
            ("RATE_LIMIT_ON_REDIS_ERROR", "local"),
            ("MONTHLY_TOKEN_QUOTA", "100000"),
        ])
        .unwrap()
        .limits;
        let chat = set.per_user_chat.unwrap();
        assert_eq!(
            (chat.limit, chat.interval()),
            (5, Duration::from_millis(200))
        );
        assert_eq!(set.per_ip_auth, None);
        assert_eq!(set.on_redis_error, RedisOutagePolicy::Local);
        assert_eq!(set.monthly_token_quota, Some(100_000));
        let admins = parse(&[("ADMIN_EMAILS", "Root@Example.com, ops@example.com")]).unwrap();
        assert_eq!(
            admins.auth.admin_emails,
            ["root@example.com", "ops@example.com"]
        );
        for (var, bad) in [
            ("RATE_LIMIT_CHAT", "0/min"),
            ("RATE_LIMIT_CHAT", "10"),
            ("RATE_LIMIT_REQUESTS", "10/week"),
            ("RATE_LIMIT_ON_REDIS_ERROR", "maybe"),
            ("MONTHLY_TOKEN_QUOTA", "0"),
        ] {
            assert_eq!(parse(&[(var, bad)]).unwrap_err().var, var, "{bad}");
        }
    }

    #[test]
    fn prices_are_usd_per_million_tokens_per_model() {
        let settings = parse(&[("LLM_PRICES", "gpt-4o-mini=0.15/0.60, local=0/0")]).unwrap();
        assert_eq!(settings.llm.prices.len(), 2);
        assert_eq!(settings.llm.prices[0].model, "gpt-4o-mini");
        assert_eq!(settings.llm.prices[0].output_per_million, 0.60);
        for bad in ["gpt-4o", "gpt-4o=1", "=1/2", "gpt-4o=-1/2", "gpt-4o=a/b"] {
            assert_eq!(
                parse(&[("LLM_PRICES", bad)]).unwrap_err().var,
                "LLM_PRICES",
                "{bad}"
            );
        }
    }
}
