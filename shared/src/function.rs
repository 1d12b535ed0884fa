//! The cold start every Lambda function shares: settings (with the Secrets
//! Manager overlay), logging, and only the parts of the state its routes use.
//! It runs once per execution environment, before the runtime's event loop.

use std::sync::Arc;

use crate::{
    config::{LogFormat, Settings},
    llm::{self, Provider},
    state::AppState,
    store, telemetry,
};

/// What a function's routes use besides the store and the token keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Accounts and sessions: no model provider (no HTTP client to build).
    StoreOnly,
    /// Chat: the configured provider too.
    Provider,
}

pub async fn cold_start(needs: Needs) -> anyhow::Result<AppState> {
    let settings = match Settings::load().await {
        Ok(settings) => settings,
        Err(err) => {
            // Logged as one line, so CloudWatch shows why the function will not start.
            telemetry::init(LogFormat::Json, "info");
            tracing::error!("configuration error: {err}");
            return Err(err.into());
        }
    };
    telemetry::init(settings.log_format, &settings.log_filter);
    let store = store::connect(&settings.db).await.inspect_err(|err| {
        tracing::error!("cannot start: {err:#}");
    })?;
    let provider: Arc<dyn Provider> = match needs {
        Needs::Provider => {
            // The tokenizer takes a moment to load: in the init phase, not in
            // the first user's request.
            llm::tokens::warm_up();
            llm::from_settings(&settings.llm)?
        }
        Needs::StoreOnly => Arc::new(llm::NoProvider),
    };
    AppState::from_parts(&settings, store, provider)
}
