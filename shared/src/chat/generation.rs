//! A streaming generation runs in its own task, apart from any HTTP response,
//! and publishes its events to a log (`live.rs`) that clients follow: the one
//! that asked, one that reconnects, another tab. `STREAM_ON_DISCONNECT` decides
//! what happens when nobody follows any more: `finish` keeps reading the
//! provider and stores the whole answer; `cancel` drops the upstream stream and
//! stores what arrived, marked incomplete. A stop request does the same, marked
//! stopped.

use std::sync::Arc;

use futures::StreamExt;
use tokio::{sync::oneshot, time::Instant};
use tracing::Instrument;

use super::{Answer, Exchange, finish, live::Generation};
use crate::{
    config::OnDisconnect,
    error::{ApiError, Problem},
    llm::{Chunk, ProviderError, Usage},
    state::AppState,
    store::{Message, MessageStatus},
};

#[derive(Debug, Clone)]
pub enum GenerationEvent {
    /// First, unless the question could not be made durable (then only
    /// `Error`): the question is stored and the generation has its id.
    Start {
        generation_id: String,
        session_id: i64,
        user_message: Message,
    },
    Delta(String),
    /// The answer is stored; nothing follows.
    Done {
        message: Message,
        usage: Usage,
    },
    /// The generation failed; whatever had arrived is stored as incomplete
    /// (nothing, when it failed before `Start`).
    Error(Problem),
}

impl GenerationEvent {
    /// Whether nothing can follow this event.
    pub fn is_last(&self) -> bool {
        matches!(self, Self::Done { .. } | Self::Error(_))
    }
}

/// An answer longer than this, or in more pieces than `MAX_DELTAS`, is cut off
/// and stored as incomplete: they bound what a generation's log holds, in
/// memory and in Redis (a model's longest answers are a small fraction).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
const MAX_DELTAS: usize = 65_536;

/// Starts the provider call for an exchange whose user message is stored,
/// perhaps not yet on disk (`Store::ask`), and publishes `Start` to
/// `generation`'s log once it is (`Store::make_durable`), while the provider
/// is being asked; the rest of its events follow. What the returned receiver
/// gets says which: `Ok` once `Start` is out, or the error that ended the
/// generation, having published and stored nothing but an `Error` that ends
/// its log. The generation runs on whether or not anyone awaits that.
/// Generations are tracked by the state, so a graceful shutdown waits for the
/// ones whose clients have left to store their answers.
pub fn spawn_generation(
    state: AppState,
    exchange: Exchange,
    generation: Arc<Generation>,
) -> oneshot::Receiver<Result<(), ApiError>> {
    let (started, when_started) = oneshot::channel();
    let tracker = state.generations.clone();
    tracker.spawn(run(state, exchange, generation, started).instrument(tracing::Span::current()));
    when_started
}

/// Why the generation ended before the provider did.
enum Interruption {
    Stopped,
    Deserted,
}

async fn run(
    state: AppState,
    exchange: Exchange,
    generation: Arc<Generation>,
    started: oneshot::Sender<Result<(), ApiError>>,
) {
    let deadline = exchange
        .request
        .deadline
        .unwrap_or_else(|| Instant::now() + state.settings.llm.timeout);
    let cancel_when_deserted = state.settings.llm.stream_on_disconnect == OnDisconnect::Cancel;
    let interrupted = async {
        tokio::select! {
            () = generation.stop_requested().cancelled() => Interruption::Stopped,
            () = async {
                if cancel_when_deserted {
                    generation.deserted().await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => Interruption::Deserted,
        }
    };
    tokio::pin!(interrupted);

    let open = async {
        tokio::select! {
            opened = tokio::time::timeout_at(deadline, state.provider.stream(&exchange.request)) => {
                Some(opened.unwrap_or(Err(ProviderError::Timeout)))
            }
            _ = &mut interrupted => None,
        }
    };
    let (stored, opened) = tokio::join!(start(&state, &exchange, &generation, started), open);
    if !stored {
        return;
    }
    let (model, mut stream) = match opened {
        Some(Ok(stream)) => (stream.model, Some(stream.chunks)),
        Some(Err(err)) => {
            // Nothing was generated, so nothing is stored; the user message stays.
            generation.publish(GenerationEvent::Error(problem(err)));
            return;
        }
        // Interrupted before the provider answered: an empty answer is stored,
        // so the session shows the question was stopped.
        None => (exchange.request.model.clone(), None),
    };

    let mut content = String::new();
    let mut deltas = 0;
    let mut usage = None;
    let mut status = if stream.is_some() {
        MessageStatus::Complete
    } else {
        MessageStatus::Stopped
    };
    let mut failure = None;
    while let Some(chunks) = stream.as_mut() {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, chunks.next()) => {
                next.unwrap_or(Some(Err(ProviderError::Timeout)))
            }
            interruption = &mut interrupted => {
                status = match interruption {
                    Interruption::Stopped => MessageStatus::Stopped,
                    Interruption::Deserted => MessageStatus::Incomplete,
                };
                break;
            }
        };
        match next {
            None => break,
            Some(Ok(Chunk::Delta(text))) => {
                content.push_str(&text);
                deltas += 1;
                generation.publish(GenerationEvent::Delta(text));
                if content.len() > MAX_ANSWER_BYTES || deltas >= MAX_DELTAS {
                    tracing::warn!(
                        deltas,
                        "answer over {MAX_ANSWER_BYTES} bytes or {MAX_DELTAS} pieces; cut off"
                    );
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
        generation.publish(GenerationEvent::Error(problem(err)));
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
    generation.publish(event);
}

/// Publishes `Start` once the question is on disk, and says so to the
/// asker (who may have gone); false, having ended the log and the provider's
/// call, if it is not.
async fn start(
    state: &AppState,
    exchange: &Exchange,
    generation: &Generation,
    started: oneshot::Sender<Result<(), ApiError>>,
) -> bool {
    let outcome = state
        .store
        .make_durable(exchange.session_id, &exchange.user_message)
        .await;
    let outcome = match outcome {
        Ok(()) => {
            generation.publish(GenerationEvent::Start {
                generation_id: generation.id.clone(),
                session_id: exchange.session_id,
                user_message: exchange.user_message.clone(),
            });
            Ok(())
        }
        Err(err) => {
            let err = ApiError::from(err);
            // Its asker gets this as a problem response; anyone who found
            // the generation in progress (GET /sessions/{id}) sees it end.
            generation.publish(GenerationEvent::Error(err.to_problem()));
            generation.stop();
            Err(err)
        }
    };
    let stored = outcome.is_ok();
    let _ = started.send(outcome);
    stored
}

fn problem(err: ProviderError) -> Problem {
    tracing::warn!(error = %err, "provider failed during a stream");
    ApiError::from(err).to_problem()
}
