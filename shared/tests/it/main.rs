//! chat-core's integration tests: one binary (link time dominates on small machines).

mod generation;
mod secrets;
mod store;
mod support;
