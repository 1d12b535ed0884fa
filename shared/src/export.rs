//! A session as a document to keep: Markdown for people, JSON for programs.

use time::format_description::well_known::Rfc3339;

use crate::store::{Message, MessageStatus, Role, Session};

/// The session as Markdown. Message bodies are copied byte for byte (code
/// blocks, unicode, trailing spaces): the document is what was said.
pub fn markdown(session: &Session, messages: &[Message]) -> String {
    let mut doc =
        String::with_capacity(256 + messages.iter().map(|m| m.content.len() + 64).sum::<usize>());
    doc.push_str(&format!("# {}\n\n", one_line(&session.title)));
    doc.push_str(&format!(
        "Created {} · updated {}",
        timestamp(session.created_at),
        timestamp(session.updated_at)
    ));
    if let Some(model) = &session.model {
        doc.push_str(&format!(" · model {model}"));
    }
    doc.push_str(&format!(" · {} messages\n", messages.len()));
    if let Some(prompt) = &session.system_prompt {
        section(&mut doc, "System prompt", prompt);
    }
    for message in messages {
        let role = match message.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        let mut heading = format!("{role} · {}", timestamp(message.created_at));
        match message.status {
            MessageStatus::Complete => {}
            MessageStatus::Incomplete => heading.push_str(" · incomplete"),
            MessageStatus::Stopped => heading.push_str(" · stopped"),
        }
        section(&mut doc, &heading, &message.content);
    }
    doc
}

fn section(doc: &mut String, heading: &str, body: &str) {
    doc.push_str(&format!("\n## {heading}\n\n"));
    doc.push_str(body);
    if !body.ends_with('\n') {
        doc.push('\n');
    }
}

/// `session-<id>-<title words>.<extension>`, ASCII only, so every browser and
/// shell takes it as it is.
pub fn filename(session: &Session, extension: &str) -> String {
    let mut slug = String::new();
    for c in session.title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("session-{}.{extension}", session.id)
    } else {
        format!("session-{}-{slug}.{extension}", session.id)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn session(title: &str) -> Session {
        Session {
            id: 7,
            title: title.into(),
            system_prompt: Some("Answer in haiku.".into()),
            model: None,
            message_count: 2,
            created_at: datetime!(2026-11-27 10:00 UTC),
            updated_at: datetime!(2026-11-27 10:05 UTC),
        }
    }

    fn message(id: i64, role: Role, content: &str, status: MessageStatus) -> Message {
        Message {
            id,
            role,
            content: content.into(),
            tokens: 1,
            status,
            created_at: datetime!(2026-11-27 10:01 UTC),
        }
    }

    #[test]
    fn renders_the_header_the_prompt_and_each_message_verbatim() {
        let code = "Use `@wraps`:\n\n```python\ndef deco(f):\n    return f\n```";
        let messages = [
            message(
                1,
                Role::User,
                "What is a décorateur? 🐍",
                MessageStatus::Complete,
            ),
            message(2, Role::Assistant, code, MessageStatus::Incomplete),
        ];
        assert_eq!(
            markdown(&session("Python\nhelp"), &messages),
            "# Python help\n\n\
             Created 2026-11-27T10:00:00Z · updated 2026-11-27T10:05:00Z · 2 messages\n\
             \n## System prompt\n\nAnswer in haiku.\n\
             \n## User · 2026-11-27T10:01:00Z\n\nWhat is a décorateur? 🐍\n\
             \n## Assistant · 2026-11-27T10:01:00Z · incomplete\n\n\
             Use `@wraps`:\n\n```python\ndef deco(f):\n    return f\n```\n"
        );
    }

    #[test]
    fn filenames_are_ascii_slugs() {
        assert_eq!(
            filename(&session("Python Help!"), "md"),
            "session-7-python-help.md"
        );
        assert_eq!(filename(&session("日本語"), "json"), "session-7.json");
        assert_eq!(filename(&session("  a -- b  "), "md"), "session-7-a-b.md");
    }
}
