//! Black-box scenarios over HTTP. Without `E2E_BASE_URL` they run against the
//! real server spawned in this process on SQLite, Postgres and DynamoDB; with it, the
//! very same scenarios run against that address (the Lambda emulator, a deploy).

mod harness;

mod admin;
mod auth;
mod chat;
mod dashboard;
mod dynamodb;
mod failures;
mod faults;
mod http;
mod in_process;
mod instances;
mod limits;
mod openapi;
mod providers;
mod resume;
mod sessions;
mod streaming;
