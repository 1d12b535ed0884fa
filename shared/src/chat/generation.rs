//! A streaming generation runs in its own task, apart from the HTTP response,
//! so `STREAM_ON_DISCONNECT` can decide what a client's departure does to it:
//! `finish` keeps reading the provider and stores the whole answer; `cancel`
//! drops the upstream stream and stores what arrived, marked incomplete.

use std::time::Duration;

use futures::StreamExt;
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument;

use super::{Answer, Exchange, finish};
use crate::{
    config::OnDisconnect,
    error::{ApiError, Problem},
    llm::{Chunk, ProviderError, Usage},
    state::AppState,
    store::{Message, MessageStatus},
};

#[derive(Debug)]
pub enum GenerationEvent {
    Delta(String),
    /// The answer is stored; nothing follows.
    Done {
        message: Message,
        usage: Usage,
    },
    /// The generation failed; whatever had arrived is stored as incomplete.
    Error(Problem),
}

/// Starts the provider call for an exchange whose user message is stored;
/// its events arrive on the returned receiver until `Done` or `Error`.
/// Generations are tracked by the state, so a graceful shutdown waits for the
/// ones whose clients have left to store their answers.
pub fn spawn_generation(state: AppState, exchange: Exchange) -> mpsc::Receiver<GenerationEvent> {
    let (events, receiver) = mpsc::channel(64);
    let tracker = state.generations.clone();
    tracker.spawn(run(state, exchange, events).instrument(tracing::Span::current()));
    receiver
}

/// A client that keeps its connection open but stops reading is treated as
/// gone once its buffer has been full this long, so it cannot hold a generation.
const STALLED_CLIENT: Duration = Duration::from_secs(30);

/// The sending half, or `None` once the client has gone away.
struct Client(Option<mpsc::Sender<GenerationEvent>>);

impl Client {
    /// False when the client is gone (now or earlier).
    async fn deliver(&mut self, event: GenerationEvent) -> bool {
        let Some(events) = &self.0 else {
            return false;
        };
        match tokio::time::timeout(STALLED_CLIENT, events.send(event)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                tracing::info!("client disconnected mid-stream");
                self.0 = None;
                false
            }
            Err(_) => {
                tracing::warn!("client stopped reading its stream; treating it as gone");
                self.0 = None;
                false
            }
        }
    }
}

async fn run(state: AppState, exchange: Exchange, events: mpsc::Sender<GenerationEvent>) {
    let mut client = Client(Some(events));
    let deadline = exchange
        .request
        .deadline
        .unwrap_or_else(|| Instant::now() + state.settings.llm.timeout);
    let cancel_on_disconnect = state.settings.llm.stream_on_disconnect == OnDisconnect::Cancel;

    let stream = tokio::time::timeout_at(deadline, state.provider.stream(&exchange.request))
        .await
        .unwrap_or(Err(ProviderError::Timeout));
    let (model, mut stream) = match stream {
        Ok(stream) => (stream.model, stream.chunks),
        Err(err) => {
            // Nothing was generated, so nothing is stored; the user message stays.
            client.deliver(GenerationEvent::Error(problem(err))).await;
            return;
        }
    };

    let mut content = String::new();
    let mut usage = None;
    let mut status = MessageStatus::Complete;
    let mut failure = None;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or(Some(Err(ProviderError::Timeout)));
        match next {
            None => break,
            Some(Ok(Chunk::Delta(text))) => {
                content.push_str(&text);
                if !client.deliver(GenerationEvent::Delta(text)).await && cancel_on_disconnect {
                    status = MessageStatus::Incomplete;
                    break;
                }
            }
            Some(Ok(Chunk::Usage(reported))) => usage = Some(reported),
            Some(Err(err)) => {
                status = MessageStatus::Incomplete;
                failure = Some(err);
                break;
            }
        }
    }
    // Dropping the stream closes the upstream connection when we stopped early.
    drop(stream);

    if content.is_empty()
        && let Some(err) = failure
    {
        client.deliver(GenerationEvent::Error(problem(err))).await;
        return;
    }
    let answer = Answer {
        content,
        usage,
        model,
        status,
    };
    let event = match finish(&state, &exchange, answer).await {
        Ok((message, usage)) => match failure {
            None => GenerationEvent::Done { message, usage },
            Some(err) => GenerationEvent::Error(problem(err)),
        },
        Err(err) => {
            tracing::error!(error = %err, "could not store the streamed answer");
            GenerationEvent::Error(err.to_problem())
        }
    };
    client.deliver(event).await;
}

fn problem(err: ProviderError) -> Problem {
    tracing::warn!(error = %err, "provider failed during a stream");
    ApiError::from(err).to_problem()
}
