//! Refresh tokens: 256 random bits handed to the client once, stored only as a
//! SHA-256 hash, so a leaked database holds nothing that can be replayed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng as _;
use sha2::{Digest, Sha256};

pub struct RefreshToken {
    /// What the client receives.
    pub token: String,
    /// What the store keeps.
    pub hash: String,
}

impl RefreshToken {
    pub fn generate() -> Self {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let hash = hash_refresh_token(&token);
        Self { token, hash }
    }
}

pub fn hash_refresh_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A new family id for a login; rotations keep it, reuse revokes it.
pub fn new_family() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// `N` bytes from the operating system's cryptographic generator (via rand's thread RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_are_stable() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 43);
        assert_eq!(hash_refresh_token(&a.token), a.hash);
        assert_eq!(a.hash.len(), 64);
    }
}
