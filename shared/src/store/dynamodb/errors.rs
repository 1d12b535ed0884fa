//! What DynamoDB's errors mean to the store, and the retry of write conflicts.

use std::time::Duration;

use aws_sdk_dynamodb::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    operation::transact_write_items::TransactWriteItemsError,
};
use rand::RngExt as _;

use crate::store::StoreError;

/// Error codes that mean "not now", not "wrong request". The SDK has already
/// retried the throttling ones with backoff by the time we see them.
const OUTAGE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "ResourceNotFoundException",
];

pub fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let outage = match &err {
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| OUTAGE_CODES.contains(&code)),
        // No answer at all: refused, timed out, cut off.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    };
    // The context prints the whole chain (code, message, cause), which the
    // SdkError's own Display reduces to "service error".
    let err = anyhow::anyhow!("DynamoDB: {}", DisplayErrorContext(&err));
    if outage {
        StoreError::Unavailable(err)
    } else {
        StoreError::Other(err)
    }
}

/// Whether a single-item write failed its condition.
pub fn is_condition_failed<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// How a transaction that did not commit failed.
pub enum Cancelled {
    /// The condition of the item at this position in the request failed.
    Condition(usize),
    /// Another transaction held one of the items: try again.
    Conflict,
}

pub fn cancellation(
    err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
) -> Option<Cancelled> {
    let service = err.as_service_error()?;
    if service.code() == Some("TransactionConflictException") {
        return Some(Cancelled::Conflict);
    }
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service else {
        return None;
    };
    let codes: Vec<&str> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|reason| reason.code().unwrap_or("None"))
        .collect();
    if let Some(position) = codes
        .iter()
        .position(|code| *code == "ConditionalCheckFailed")
    {
        return Some(Cancelled::Condition(position));
    }
    codes
        .contains(&"TransactionConflict")
        .then_some(Cancelled::Conflict)
}

/// Jittered exponential backoff for transaction conflicts, which DynamoDB
/// leaves to the caller: contended items (one busy session) conflict often.
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    const ATTEMPTS: u32 = 10;

    pub fn new() -> Self {
        Self { attempt: 0 }
    }

    /// Waits before the next attempt; false when the attempts are spent.
    pub async fn wait(&mut self) -> bool {
        self.attempt += 1;
        if self.attempt >= Self::ATTEMPTS {
            return false;
        }
        let ceiling = 10u64 << self.attempt.min(6);
        let millis = rand::rng().random_range(ceiling / 2..=ceiling);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        true
    }
}

/// A write still refused after the backoff (a transaction conflict, or batch
/// items left unprocessed): the items are too busy right now.
pub fn still_conflicting() -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!(
        "DynamoDB: the write was still refused after every retry"
    ))
}

pub fn other(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(anyhow::Error::new(err))
}
