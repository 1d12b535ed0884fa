//! Every route in one HTTP server: Cloud Run, docker compose, a laptop.

use std::process::ExitCode;

use chat_core::{config::Settings, server::Application, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A bad configuration is one line naming the variable, not a backtrace.
    let settings = match Settings::load().await {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_filter);
    let app = match Application::build(&settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!("cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "chat-api listening");
    if let Err(err) = app.run_until_stopped().await {
        tracing::error!("server failed: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
