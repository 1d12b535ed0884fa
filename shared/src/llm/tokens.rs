//! Token estimates, for providers that report no usage (the mock, some
//! OpenAI-compatible servers) and for fitting history into the context budget.

use super::{ChatRequest, o200k};

/// Chat formats wrap every message in a few tokens of framing (role, separators);
/// OpenAI documents 3 per message plus 3 to prime the reply.
const PER_MESSAGE_OVERHEAD: i64 = 3;
const REPLY_PRIMING: i64 = 3;

/// Readies the tokenizer now, so the first request does not pay for it.
pub fn warm_up() {
    o200k::warm_up();
}

pub fn count(text: &str) -> i64 {
    i64::try_from(o200k::count(text)).unwrap_or(i64::MAX)
}

/// The tokens one stored message costs inside a prompt.
pub fn message_cost(content_tokens: i64) -> i64 {
    content_tokens + PER_MESSAGE_OVERHEAD
}

pub fn estimate_prompt(request: &ChatRequest) -> i64 {
    let system = request
        .system
        .as_deref()
        .map_or(0, |system| message_cost(count(system)));
    let turns: i64 = request
        .turns
        .iter()
        .map(|turn| message_cost(count(&turn.content)))
        .sum();
    system + turns + REPLY_PRIMING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_positive_and_grow_with_text() {
        assert_eq!(count(""), 0);
        let short = count("What is a decorator?");
        let long = count("What is a decorator? And how do I write one in Python with arguments?");
        assert!(short > 0 && long > short, "{short} {long}");
    }
}
