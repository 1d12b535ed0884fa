//! Every route in one HTTP server: Cloud Run, docker compose, a laptop.

use chat_core::{config::Settings, server::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("configuration error: {err}");
            std::process::exit(2);
        }
    };
    telemetry::init(settings.log_format);
    let app = Application::build(&settings).await?;
    tracing::info!(port = app.port(), "chat-api listening");
    app.run_until_stopped().await?;
    Ok(())
}
