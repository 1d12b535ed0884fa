//! Accounts and tokens: bcrypt passwords, short-lived access JWTs, rotated
//! refresh tokens, and the `CurrentUser` extractor that guards routes.

mod current_user;
mod jwt;
mod known_accounts;
mod password;
mod refresh;

pub use current_user::{CurrentUser, EventSourceUser, VerifiedToken, bearer_token};
pub use jwt::{AccessClaims, JwtKeys};
pub use known_accounts::KnownAccounts;
pub use password::Passwords;
pub use refresh::{RefreshToken, hash_refresh_token, hex, new_family, random_bytes};
