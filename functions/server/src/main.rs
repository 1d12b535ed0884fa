//! Every route in one HTTP server: Cloud Run, docker compose, a laptop.
//!
//! `server` serves; `server promote-admin EMAIL` and `server demote-admin EMAIL`
//! change an account's administrator flag in the configured store and exit;
//! `server healthcheck` asks the server on `PORT` for /health (the container
//! image has no curl) and exits 0 when it answers 200; `server openapi` prints
//! the OpenAPI document (what GET /openapi.json serves) for client generators.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::Duration,
};

use chat_core::{config::Settings, domain::Email, server::Application, store, telemetry};

const USAGE: &str =
    "usage: server [promote-admin EMAIL | demote-admin EMAIL | healthcheck | openapi]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin_change = match args.as_slice() {
        [] => None,
        [command] if command == "healthcheck" => return healthcheck(),
        [command] if command == "openapi" => {
            println!("{}", chat_core::openapi::json());
            return ExitCode::SUCCESS;
        }
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

/// One plain HTTP/1.1 request to this container's own server: no settings,
/// no store, nothing else to go wrong.
fn healthcheck() -> ExitCode {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|port| port.trim().parse::<u16>().ok())
        .unwrap_or(8000);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let status_line = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 64];
        let read = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..read])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    })();
    match status_line {
        Ok(line) if line.split(' ').nth(1) == Some("200") => ExitCode::SUCCESS,
        Ok(line) => {
            eprintln!("unhealthy: {line}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("no answer on {address}: {err}");
            ExitCode::FAILURE
        }
    }
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
