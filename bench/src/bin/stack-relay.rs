//! The floor under the /chat overhead with the server's own stack: the hops
//! `relay` makes, made with the libraries the server makes them with and
//! nothing else. axum, on tokio's runtime with a worker per core, takes each
//! POST; sqlx runs exchange.sql's question on Postgres; reqwest sends the
//! request's body on to the upstream; sqlx runs the answer; axum answers with
//! the upstream's body. One route, no middleware, no JSON, tokens or access
//! token. A statement's connection goes straight back to a list for the next
//! one, without sqlx pool's ping, as the server's warm pool does. What this
//! adds beyond `relay` is what the stack costs on the machine; what the
//! server adds beyond this is chat-api's own work.
//!
//! `stack-relay --port 9300 --upstream http://127.0.0.1:9100/v1/chat/completions
//! --database-url postgres://postgres@127.0.0.1:5432/chat_bench_floor
//! --script bench/exchange.sql --sessions 256 --month 2026-12 --day 2026-12-06`

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, ensure};
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use bench::{
    Flags,
    exchange::{Exchanges, Random, Statement, statements},
};
use sqlx::{Connection as _, PgConnection};

/// The statements, by their place in `Relay::statements`.
const QUESTION: usize = 0;
const ANSWER: usize = 1;

struct Relay {
    client: reqwest::Client,
    upstream: reqwest::Url,
    database_url: String,
    statements: [Statement; 2],
    /// The statements' text, static as the server's is, which sqlx keeps
    /// without copying.
    sql: [&'static str; 2],
    exchanges: Exchanges,
    random: Mutex<Random>,
    /// Connections whose last statement ran to its end, for the next one.
    idle: Mutex<Vec<PgConnection>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::from_env();
    let script = std::fs::read_to_string(flags.text("script", "bench/exchange.sql"))
        .context("reading --script")?;
    let (question, answer) = statements(&script)?;
    let sql = [&question.text, &answer.text].map(|text| &*text.clone().leak());
    let relay = Arc::new(Relay {
        client: reqwest::Client::new(),
        upstream: flags
            .text("upstream", "http://127.0.0.1:9100/v1/chat/completions")
            .parse()
            .context("--upstream")?,
        database_url: flags.text(
            "database-url",
            "postgres://postgres@127.0.0.1:5432/chat_bench_floor",
        ),
        statements: [question, answer],
        sql,
        exchanges: Exchanges {
            sessions: flags.number("sessions", 256),
            month: flags.text("month", ""),
            day: flags.text("day", ""),
        },
        random: Mutex::new(Random::new(1)),
        idle: Mutex::new(Vec::new()),
    });
    ensure!(
        !relay.exchanges.month.is_empty() && !relay.exchanges.day.is_empty(),
        "--month and --day are needed"
    );
    // Fail at start, not on the first request, when Postgres refuses.
    let first = PgConnection::connect(&relay.database_url).await?;
    relay.idle().push(first);
    let port = u16::try_from(flags.number("port", 9300))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("stack-relay listening on {}", listener.local_addr()?);
    let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
        let _ = connection.set_nodelay(true);
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(exchange))
        .with_state(relay);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A failure answers 502, which wrk counts and bench/run.py refuses.
async fn exchange(State(relay): State<Arc<Relay>>, body: Bytes) -> Result<Bytes, StatusCode> {
    relay.exchange(body).await.map_err(|err| {
        eprintln!("stack-relay: {err:#}");
        StatusCode::BAD_GATEWAY
    })
}

impl Relay {
    async fn exchange(&self, body: Bytes) -> anyhow::Result<Bytes> {
        let (session, values) = {
            let mut random = self.random.lock().unwrap_or_else(PoisonError::into_inner);
            self.exchanges.values(&mut random)
        };
        let rows = self.execute(QUESTION, &values).await?;
        ensure!(rows > 1, "the question was not stored in session {session}");
        let answered = self
            .client
            .post(self.upstream.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let rows = self.execute(ANSWER, &values).await?;
        ensure!(rows == 1, "the answer was not stored in session {session}");
        Ok(answered)
    }

    /// Runs statement `which` (prepared once per connection by sqlx's
    /// cache) and returns how many rows it gave.
    async fn execute(&self, which: usize, values: &[String; 4]) -> anyhow::Result<usize> {
        let idle = self.idle().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => PgConnection::connect(&self.database_url).await?,
        };
        let mut query = sqlx::query(self.sql[which]);
        for &index in self.statements[which].parameters() {
            query = if index < 2 {
                query.bind(values[index].parse::<i64>()?)
            } else {
                query.bind(values[index].as_str())
            };
        }
        let rows = query.fetch_all(&mut connection).await?.len();
        self.idle().push(connection);
        Ok(rows)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
