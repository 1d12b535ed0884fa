//! The floor under the /chat overhead: a relay that does only an exchange's
//! I/O, as little else as a program can. For each POST it reads, it runs the
//! question's statement of `bench/exchange.sql` on Postgres, sends the
//! request's body on to the upstream, runs the answer's statement, and
//! answers with the upstream's body: the hops the server makes (a round trip
//! to Postgres, one to the upstream, another to Postgres), with no routing,
//! JSON, tokens or access token. A thread per connection, each with its own
//! Postgres connection and upstream connection, blocking on plain sockets,
//! speaking just enough HTTP/1.1 and of Postgres's extended query protocol
//! (the statements prepared once, as `pgbench -M prepared` and sqlx do) for
//! that. Its overhead over the upstream is what these hops cost on the
//! machine; the server's cannot be lower.
//!
//! `relay --port 9200 --upstream 127.0.0.1:9100 --database-url
//! postgres://postgres@127.0.0.1:5432/chat_bench_floor --script
//! bench/exchange.sql --sessions 256 --month 2026-12 --day 2026-12-06`
//!
//! Like exchange.sql under pgbench, each request goes to a random session s
//! of `--sessions`, as user (s - 1) / 4 + 1. Postgres must let the user in
//! without a password (bench's does).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::Arc,
};

use anyhow::{Context as _, bail, ensure};
use bench::{
    Flags,
    exchange::{Exchanges, Random, Statement, statements},
};

/// The statements' names.
const QUESTION: &str = "question";
const ANSWER: &str = "answer";

struct Config {
    upstream: String,
    database: Database,
    statements: [Statement; 2],
    exchanges: Exchanges,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::from_env();
    let script = std::fs::read_to_string(flags.text("script", "bench/exchange.sql"))
        .context("reading --script")?;
    let (question, answer) = statements(&script)?;
    let config = Arc::new(Config {
        upstream: flags.text("upstream", "127.0.0.1:9100"),
        database: Database::parse(&flags.text(
            "database-url",
            "postgres://postgres@127.0.0.1:5432/chat_bench_floor",
        ))?,
        statements: [question, answer],
        exchanges: Exchanges {
            sessions: flags.number("sessions", 256),
            month: flags.text("month", ""),
            day: flags.text("day", ""),
        },
    });
    ensure!(
        !config.exchanges.month.is_empty() && !config.exchanges.day.is_empty(),
        "--month and --day are needed"
    );
    // Fail at start, not on the first request, when Postgres refuses.
    Exchanger::connect(&config, 0)?;
    let listener = TcpListener::bind(("127.0.0.1", u16::try_from(flags.number("port", 9200))?))?;
    println!("relay listening on {}", listener.local_addr()?);
    for (index, client) in listener.incoming().enumerate() {
        let client = client?;
        let config = Arc::clone(&config);
        std::thread::spawn(move || {
            if let Err(err) = serve(&config, client, index as u64 + 1) {
                eprintln!("relay: {err:#}");
                std::process::exit(1);
            }
        });
    }
    Ok(())
}

/// One client connection's requests, one after the other, until it closes
/// (wrk resets its connections as it stops). A failure of Postgres or the
/// upstream ends the relay: a figure measured past one would be wrong.
fn serve(config: &Config, client: TcpStream, seed: u64) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut exchanger = Exchanger::connect(config, seed)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    while let Ok(Some(body)) = read_request(&mut reader) {
        let answer = exchanger.exchange(&body)?;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() {
            break;
        }
    }
    Ok(())
}

/// A request's body; `None` when the client closed the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(length) = read_head(reader)? else {
        return Ok(None);
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Reads a request's or response's head; its content-length, or `None` at
/// the end of the stream before it.
fn read_head(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Option<usize>> {
    let mut line = String::new();
    let mut length = 0;
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            ensure!(first, "the connection closed within a message's head");
            return Ok(None);
        }
        if first {
            ensure!(
                !line.starts_with("HTTP/") || line.starts_with("HTTP/1.1 200"),
                "the upstream answered {}",
                line.trim_end()
            );
            first = false;
        } else if line == "\r\n" {
            return Ok(Some(length));
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("content-length")?;
        }
    }
}

/// A thread's connections: to Postgres, its statements prepared, and to the
/// upstream.
struct Exchanger<'a> {
    config: &'a Config,
    postgres: Postgres,
    upstream: BufReader<TcpStream>,
    random: Random,
}

impl<'a> Exchanger<'a> {
    fn connect(config: &'a Config, seed: u64) -> anyhow::Result<Self> {
        let mut postgres = Postgres::connect(&config.database)?;
        for (name, statement) in [QUESTION, ANSWER].iter().zip(&config.statements) {
            postgres.prepare(name, &statement.text)?;
        }
        let upstream = TcpStream::connect(&config.upstream)
            .with_context(|| format!("connecting to the upstream at {}", config.upstream))?;
        upstream.set_nodelay(true)?;
        Ok(Self {
            config,
            postgres,
            upstream: BufReader::new(upstream),
            random: Random::new(seed),
        })
    }

    fn exchange(&mut self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (session, values) = self.config.exchanges.values(&mut self.random);
        let [question, answer] = &self.config.statements;
        let rows = self.postgres.execute(QUESTION, &question.values(&values))?;
        ensure!(rows > 1, "the question was not stored in session {session}");
        let answered = self.ask_upstream(body)?;
        let rows = self.postgres.execute(ANSWER, &answer.values(&values))?;
        ensure!(rows == 1, "the answer was not stored in session {session}");
        Ok(answered)
    }

    fn ask_upstream(&mut self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let connection = self.upstream.get_mut();
        write!(
            connection,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.config.upstream,
            body.len()
        )?;
        connection.write_all(body)?;
        let length = read_head(&mut self.upstream)?.context("the upstream closed")?;
        let mut answer = vec![0; length];
        self.upstream.read_exact(&mut answer)?;
        Ok(answer)
    }
}

/// `postgres://user@host:port/database`.
struct Database {
    address: String,
    user: String,
    name: String,
}

impl Database {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("--database-url should start postgres://")?;
        let (user, rest) = rest
            .split_once('@')
            .context("--database-url names no user")?;
        ensure!(!user.contains(':'), "the relay cannot send a password");
        let (address, name) = rest
            .split_once('/')
            .context("--database-url names no database")?;
        Ok(Self {
            address: address.to_owned(),
            user: user.to_owned(),
            name: name.split('?').next().unwrap_or(name).to_owned(),
        })
    }
}

/// A Postgres connection speaking protocol 3.0's extended query protocol:
/// what a prepared statement's execution sends and reads, nothing more.
struct Postgres {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl Postgres {
    fn connect(database: &Database) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(&database.address)
            .with_context(|| format!("connecting to Postgres at {}", database.address))?;
        socket.set_nodelay(true)?;
        let mut postgres = Self {
            reader: BufReader::new(socket),
            out: Vec::new(),
        };
        let mut startup = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
        for text in ["user", &database.user, "database", &database.name, ""] {
            startup.extend_from_slice(text.as_bytes());
            startup.push(0);
        }
        postgres.message(None, &startup);
        postgres.flush()?;
        postgres.read_until_ready()?;
        Ok(postgres)
    }

    fn prepare(&mut self, name: &str, text: &str) -> anyhow::Result<()> {
        let mut parse = c_string(name);
        parse.extend(c_string(text));
        parse.extend(0_i16.to_be_bytes()); // every parameter's type inferred
        self.message(Some(b'P'), &parse);
        self.message(Some(b'S'), &[]);
        self.flush()?;
        self.read_until_ready()?;
        Ok(())
    }

    /// Binds the text `values` to the statement `name`, runs it and returns
    /// how many rows it returned.
    fn execute(&mut self, name: &str, values: &[&str]) -> anyhow::Result<usize> {
        let mut bind = c_string(""); // the unnamed portal
        bind.extend(c_string(name));
        bind.extend(0_i16.to_be_bytes()); // every parameter in text
        bind.extend(i16::try_from(values.len())?.to_be_bytes());
        for value in values {
            bind.extend(i32::try_from(value.len())?.to_be_bytes());
            bind.extend_from_slice(value.as_bytes());
        }
        bind.extend(0_i16.to_be_bytes()); // every column in text
        self.message(Some(b'B'), &bind);
        let mut execute = c_string("");
        execute.extend(0_i32.to_be_bytes()); // all rows
        self.message(Some(b'E'), &execute);
        self.message(Some(b'S'), &[]);
        self.flush()?;
        self.read_until_ready()
    }

    fn message(&mut self, kind: Option<u8>, payload: &[u8]) {
        self.out.extend(kind);
        let length = i32::try_from(payload.len() + 4).expect("a small message");
        self.out.extend(length.to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Reads messages up to ReadyForQuery: the data rows among them counted,
    /// an error returned, anything else passed over.
    fn read_until_ready(&mut self) -> anyhow::Result<usize> {
        let mut rows = 0;
        let mut payload = Vec::new();
        loop {
            let mut head = [0; 5];
            self.reader.read_exact(&mut head)?;
            let length = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            payload.resize(usize::try_from(length)? - 4, 0);
            self.reader.read_exact(&mut payload)?;
            match head[0] {
                b'Z' => return Ok(rows),
                b'D' => rows += 1,
                b'E' => bail!("Postgres: {}", error_message(&payload)),
                b'R' if payload[..4] != [0; 4] => {
                    bail!("Postgres asks for a password, which the relay cannot send")
                }
                _ => {}
            }
        }
    }
}

fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// The `M` (message) field of an ErrorResponse.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|&byte| byte == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map_or_else(
            || "an error without a message".to_owned(),
            |message| String::from_utf8_lossy(message).into_owned(),
        )
}
