//! Values parsed at the boundary: once a handler holds one, it is valid.

use crate::error::FieldError;

pub const PASSWORD_MIN_BYTES: usize = 8;
/// bcrypt ignores everything past 72 bytes; longer passwords are refused, not truncated.
pub const PASSWORD_MAX_BYTES: usize = 72;
pub const TITLE_MAX_CHARS: usize = 200;
pub const SYSTEM_PROMPT_MAX_CHARS: usize = 8_000;
pub const MESSAGE_MAX_CHARS: usize = 32_000;
const EMAIL_MAX_BYTES: usize = 254;

/// An email address, trimmed and lower-cased so that uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = || FieldError::new("email", "must be a valid email address");
        if email.is_empty() || email.len() > EMAIL_MAX_BYTES {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let plausible = !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty())
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        if !plausible {
            return Err(invalid());
        }
        Ok(Self(email))
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bytes = raw.len();
        if bytes < PASSWORD_MIN_BYTES {
            return Err(FieldError::new(
                "password",
                format!("must be at least {PASSWORD_MIN_BYTES} bytes"),
            ));
        }
        if bytes > PASSWORD_MAX_BYTES {
            return Err(FieldError::new(
                "password",
                format!("must be at most {PASSWORD_MAX_BYTES} bytes (bcrypt's limit)"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for Password {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Trimmed text of bounded length; `field` names it in the error.
pub fn bounded_text(
    field: &str,
    raw: &str,
    max_chars: usize,
    allow_empty: bool,
) -> Result<String, FieldError> {
    let text = raw.trim();
    // Postgres text cannot hold NUL; no store should get what another refuses.
    if text.contains('\0') {
        return Err(FieldError::new(field, "must not contain NUL characters"));
    }
    if text.is_empty() && !allow_empty {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// A session title made from the first words of its first message.
pub fn title_from_message(message: &str) -> String {
    const TITLE_CHARS: usize = 60;
    let words: Vec<&str> = message.split_whitespace().collect();
    let mut title = String::new();
    for word in words {
        if title.chars().count() + word.chars().count() + 1 > TITLE_CHARS {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    if title.is_empty() {
        // One very long word: cut it on a character boundary.
        title = message.trim().chars().take(TITLE_CHARS).collect();
    }
    if title.chars().count() < message.trim().chars().count() {
        title.push('…');
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Test@Example.COM ").unwrap().as_ref(),
            "test@example.com"
        );
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@example..com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_8_to_72_bytes() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(72)).is_ok());
        assert!(Password::parse(&"x".repeat(73)).is_err());
        // Bytes, not characters: 36 two-byte characters are 72 bytes.
        assert!(Password::parse(&"é".repeat(37)).is_err());
    }

    #[test]
    fn titles_come_from_the_first_words() {
        assert_eq!(
            title_from_message("What is a decorator?"),
            "What is a decorator?"
        );
        let long = "word ".repeat(40);
        let title = title_from_message(&long);
        assert!(
            title.ends_with('…') && title.chars().count() <= 61,
            "{title}"
        );
        assert_eq!(title_from_message(&"x".repeat(100)).chars().count(), 61);
    }
}
