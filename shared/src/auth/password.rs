//! bcrypt hashing, always on the blocking pool: at cost 12 one hash takes about
//! 250 ms of CPU, which would stall every request sharing an async worker.

use anyhow::Context as _;
use tokio::sync::OnceCell;

pub struct Passwords {
    cost: u32,
    /// Verified against when the email is unknown, so that answer takes as long
    /// as a wrong password does and does not reveal which accounts exist.
    dummy_hash: OnceCell<String>,
}

impl Passwords {
    pub fn new(cost: u32) -> Self {
        Self {
            cost,
            dummy_hash: OnceCell::new(),
        }
    }

    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        let cost = self.cost;
        // Passwords are at most 72 bytes (checked at the boundary), so bcrypt's
        // truncation can drop only the terminator it appends, never a password byte.
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .context("password hashing task failed")?
            .context("hashing a password")
    }

    /// `hash` is `None` for an unknown email; the work done is the same either way.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        // bcrypt would compare only the first 72 bytes; such passwords were never accepted.
        if password.len() > crate::domain::PASSWORD_MAX_BYTES {
            return Ok(false);
        }
        let known = hash.is_some();
        let hash = match hash {
            Some(hash) => hash.to_owned(),
            None => self.dummy_hash().await?.to_owned(),
        };
        let password = password.to_owned();
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .context("password verification task failed")?;
        Ok(known && matches)
    }

    async fn dummy_hash(&self) -> anyhow::Result<&str> {
        self.dummy_hash
            .get_or_try_init(|| self.hash("not a real password, only for timing"))
            .await
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let passwords = Passwords::new(4);
        let hash = passwords.hash("secret123").await.unwrap();
        assert!(passwords.verify("secret123", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("secret124", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("secret123", None).await.unwrap());
        assert!(
            !passwords
                .verify(&"x".repeat(80), Some(&hash))
                .await
                .unwrap()
        );
    }
}
