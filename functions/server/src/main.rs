//! Every route in one HTTP server: Cloud Run, docker compose, a laptop.
//!
//! `server` serves; `server promote-admin EMAIL` and `server demote-admin EMAIL`
//! change an account's administrator flag in the configured store and exit.

use std::process::ExitCode;

use chat_core::{config::Settings, domain::Email, server::Application, store, telemetry};

const USAGE: &str = "usage: server [promote-admin EMAIL | demote-admin EMAIL]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin_change = match args.as_slice() {
        [] => None,
        [command, email] if command == "promote-admin" => Some((email, true)),
        [command, email] if command == "demote-admin" => Some((email, false)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A bad configuration is one line naming the variable, not a backtrace.
    let settings = match Settings::load().await {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_filter);
    match admin_change {
        Some((email, is_admin)) => set_admin(&settings, email, is_admin).await,
        None => serve(&settings).await,
    }
}

async fn serve(settings: &Settings) -> ExitCode {
    let app = match Application::build(settings).await {
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

async fn set_admin(settings: &Settings, email: &str, is_admin: bool) -> ExitCode {
    let Ok(email) = Email::parse(email) else {
        eprintln!("{email:?} is not an email address");
        return ExitCode::from(2);
    };
    let changed = match store::connect(&settings.db).await {
        Ok(store) => store.set_admin(email.as_ref(), is_admin).await,
        Err(err) => {
            eprintln!("cannot open the store: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    match changed {
        Ok(true) if is_admin => println!("{} is now an administrator", email.as_ref()),
        Ok(true) => println!("{} is no longer an administrator", email.as_ref()),
        Ok(false) => {
            eprintln!("no account has the email {}", email.as_ref());
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("cannot change the account: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
