//! The all-routes HTTP server: Cloud Run, docker compose, a laptop, and the tests.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::{Router, serve::ListenerExt as _};
use tokio::net::TcpListener;

use crate::{app, config::Settings, llm::tokens, routes, state::AppState};

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects the store, migrates it and binds `PORT` (0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let state = AppState::build(settings).await?;
        Self::with_state(settings, state).await
    }

    pub async fn with_state(settings: &Settings, state: AppState) -> anyhow::Result<Self> {
        // Compiling the tokenizer's pattern takes a moment; not in the first request.
        tokio::task::spawn_blocking(tokens::warm_up)
            .await
            .context("loading the tokenizer")?;
        let address = SocketAddr::from(([0, 0, 0, 0], settings.port));
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address} (PORT)"))?;
        Ok(Self {
            listener,
            router: app::build(routes::all(), state.clone()),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map_or(0, |address| address.port())
    }

    /// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish and
    /// generations whose clients have left store their answers (bounded by
    /// `LLM_TIMEOUT_SECS`, which bounds each of them anyway).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // The peer address feeds the per-IP limits on sign-in and registration.
        let service = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        // Without TCP_NODELAY a stream's small writes (an event, then the next)
        // wait for the client's delayed ACK: tens of milliseconds per delta.
        let listener = self.listener.tap_io(|connection| {
            if let Err(err) = connection.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        let generations = &self.state.generations;
        generations.close();
        if !generations.is_empty() {
            tracing::info!(
                running = generations.len(),
                "waiting for generations to finish"
            );
        }
        let budget = self.state.settings.llm.timeout + std::time::Duration::from_secs(5);
        if tokio::time::timeout(budget, generations.wait())
            .await
            .is_err()
        {
            tracing::warn!("stopped with generations still running");
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
