//! The context window: the session's system prompt plus the newest messages
//! that fit the token budget, oldest dropped first.

use crate::{
    llm::{Turn, tokens},
    store::Message,
};

/// `recent` is oldest first and already bounded by the message count. The
/// newest message (the user's question) is always kept, even over budget.
/// The kept messages' text moves into the turns rather than being copied.
pub fn fit(system_prompt: Option<&str>, mut recent: Vec<Message>, max_tokens: i64) -> Vec<Turn> {
    let mut budget =
        max_tokens - system_prompt.map_or(0, |prompt| tokens::message_cost(tokens::count(prompt)));
    let mut kept = 0;
    for message in recent.iter().rev() {
        let cost = tokens::message_cost(message.tokens);
        if kept > 0 && cost > budget {
            break;
        }
        budget -= cost;
        kept += 1;
    }
    recent
        .split_off(recent.len() - kept)
        .into_iter()
        .map(|message| Turn {
            role: message.role,
            content: message.content,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::store::{MessageStatus, Role};

    fn message(id: i64, tokens: i64) -> Message {
        Message {
            id,
            role: if id % 2 == 0 {
                Role::Assistant
            } else {
                Role::User
            },
            content: format!("message {id}"),
            tokens,
            status: MessageStatus::Complete,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn drops_the_oldest_messages_first() {
        let recent: Vec<Message> = (1..=5).map(|id| message(id, 97)).collect();
        // Each message costs 100 with framing: a budget of 300 keeps the newest three.
        let turns = fit(None, recent, 300);
        let kept: Vec<&str> = turns.iter().map(|turn| turn.content.as_str()).collect();
        assert_eq!(kept, ["message 3", "message 4", "message 5"]);
    }

    #[test]
    fn always_keeps_the_newest_message() {
        let recent = vec![message(1, 10), message(2, 10_000)];
        let turns = fit(Some("be brief"), recent, 100);
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].content, "message 2");
    }
}
