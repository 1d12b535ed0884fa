//! Access tokens: HS256 JWTs whose `sub` is the user id.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let secret = secret.expose_secret().as_bytes();
        // Pinned to HS256: a token claiming any other algorithm (`none` included) fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: i64) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The user id of a valid token; why a token is invalid matters only to the logs.
    pub fn verify(&self, token: &str) -> Result<i64, String> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|err| err.to_string())?;
        data.claims
            .sub
            .parse::<i64>()
            .map_err(|_| format!("non-numeric sub {:?}", data.claims.sub))
    }
}

fn unix_now() -> u64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .max(0)
        .unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&SecretString::from(secret), Duration::from_secs(900))
    }

    #[test]
    fn round_trips_and_rejects_other_keys() {
        let keys_a = keys(&"a".repeat(32));
        let token = keys_a.issue(42).unwrap();
        assert_eq!(keys_a.verify(&token), Ok(42));
        assert!(keys(&"b".repeat(32)).verify(&token).is_err());
    }
}
