//! The built-in offline model: deterministic answers, streamed word by word.
//!
//! It needs no network and no key, so the API runs out of the box and the test
//! suite is reproducible. It reports no usage, like some OpenAI-compatible
//! servers, so the estimate path is exercised too. `MOCK_FAIL` makes it fail.

use async_trait::async_trait;
use futures::{StreamExt, stream};

use super::{
    ChatRequest, Chunk, Completion, Provider, ProviderError, ProviderStream, until_first_token,
};
use crate::config::{MockFailure, MockSettings};
use crate::store::Role;

pub const MOCK_MODEL: &str = "mock";

const CLOSINGS: [&str; 6] = [
    "A small example usually makes the idea clearer than a long definition.",
    "Try it in a scratch file first, then bring it into your project.",
    "The official documentation covers the edge cases in more detail.",
    "Ask a follow-up question if any part of this needs more depth.",
    "Tests are the quickest way to check that it behaves as you expect.",
    "Most of the difficulty disappears once you have written it twice.",
];

pub struct MockProvider {
    settings: MockSettings,
}

impl MockProvider {
    pub fn new(settings: MockSettings) -> Self {
        Self { settings }
    }

    fn fails_before_answering(&self) -> Result<(), ProviderError> {
        match self.settings.fail {
            MockFailure::Always => Err(ProviderError::unavailable(
                "the mock provider is configured to fail (MOCK_FAIL=always)",
            )),
            MockFailure::Never | MockFailure::MidStream => Ok(()),
        }
    }
}

/// The answer, a pure function of the request: the same history gives the same words.
pub fn answer(request: &ChatRequest) -> String {
    let question = request
        .turns
        .iter()
        .rev()
        .find(|turn| turn.role == Role::User)
        .map_or("", |turn| turn.content.as_str());
    let topic: Vec<&str> = question.split_whitespace().take(8).collect();
    let mut answer = format!(
        "This is the offline mock model answering \"{}\" with {} message{} of context.",
        topic.join(" "),
        request.turns.len(),
        if request.turns.len() == 1 { "" } else { "s" },
    );
    if request.system.is_some() {
        answer.push_str(" It follows the session's system prompt.");
    }
    let seed = fnv1a(question.as_bytes());
    for offset in 0..2 {
        let index = usize::try_from((seed >> (offset * 8)) % CLOSINGS.len() as u64).unwrap_or(0);
        answer.push(' ');
        answer.push_str(CLOSINGS[(index + offset as usize) % CLOSINGS.len()]);
    }
    answer
}

/// FNV-1a: a stable hash (std's is randomly seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits text into word deltas whose concatenation is the text itself.
fn word_deltas(text: &str) -> Vec<String> {
    let mut deltas = Vec::new();
    let mut start = 0;
    for (index, _) in text.match_indices(' ') {
        if index > start {
            deltas.push(text[start..index].to_owned());
            start = index;
        }
    }
    deltas.push(text[start..].to_owned());
    deltas
}

#[async_trait]
impl Provider for MockProvider {
    fn default_model(&self) -> &str {
        MOCK_MODEL
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        self.fails_before_answering()?;
        if self.settings.fail == MockFailure::MidStream {
            return Err(ProviderError::Interrupted(
                "the mock provider is configured to break off (MOCK_FAIL=midstream)".into(),
            ));
        }
        Ok(Completion {
            content: answer(request),
            usage: None,
            model: request.model.clone(),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        self.fails_before_answering()?;
        let mut deltas = word_deltas(&answer(request));
        // Broken off half-way, as a dropped connection would: the error is last.
        let failure = match self.settings.fail {
            MockFailure::MidStream => {
                deltas.truncate(deltas.len() / 2);
                Some(Err(ProviderError::Interrupted(
                    "the mock provider is configured to break off (MOCK_FAIL=midstream)".into(),
                )))
            }
            MockFailure::Never | MockFailure::Always => None,
        };
        let delay = self.settings.token_delay;
        let chunks = stream::iter(deltas)
            .then(move |delta| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Chunk::Delta(delta))
            })
            .chain(stream::iter(failure));
        Ok(ProviderStream {
            model: request.model.clone(),
            chunks: until_first_token(chunks.boxed()).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: MOCK_MODEL.into(),
            system: None,
            turns: vec![super::super::Turn {
                role: Role::User,
                content: text.into(),
            }],
            deadline: None,
        }
    }

    #[test]
    fn answers_are_deterministic_long_and_depend_on_the_input() {
        let first = answer(&request("What is a decorator?"));
        assert_eq!(first, answer(&request("What is a decorator?")));
        assert_ne!(first, answer(&request("What is a closure?")));
        assert!(first.split_whitespace().count() >= 20, "{first}");
    }

    #[test]
    fn deltas_concatenate_to_the_answer() {
        let text = answer(&request("Explain  spacing"));
        assert_eq!(word_deltas(&text).concat(), text);
        assert!(word_deltas(&text).len() >= 20);
    }
}
