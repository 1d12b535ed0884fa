use std::sync::Arc;

use chat_core::{
    config::Settings,
    store::{self, Store},
    testing,
};
use secrecy::SecretString;

fn db_settings(url: String) -> chat_core::config::DbSettings {
    let mut settings = Settings::from_lookup(|_| None)
        .expect("default settings")
        .db;
    settings.url = SecretString::from(url);
    settings
}

pub async fn sqlite_store() -> Arc<dyn Store> {
    store_at(&testing::fresh_sqlite_url())
        .await
        .expect("open a fresh SQLite store")
}

/// `sqlite::memory:`: a database of its own, gone with the store.
pub async fn sqlite_store_in_memory() -> Arc<dyn Store> {
    store_at("sqlite::memory:")
        .await
        .expect("open an in-memory SQLite store")
}

pub async fn store_at(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    store::connect(&db_settings(url.to_owned())).await
}

/// `None` (and a note) when no Postgres is configured; with `CI` set, a panic.
pub async fn postgres_store() -> Option<Arc<dyn Store>> {
    let admin = testing::postgres_admin_url().expect("Postgres is required here")?;
    let url = testing::fresh_postgres_database(&admin)
        .await
        .expect("create a Postgres test database");
    Some(
        store::connect(&db_settings(url))
            .await
            .expect("open a fresh Postgres store"),
    )
}

/// `None` (and a note) without the emulator; with `CI` set, a panic.
pub async fn dynamodb_store() -> Option<Arc<dyn Store>> {
    let url = testing::dynamodb_test_url().expect("the DynamoDB emulator is required here")?;
    let mut settings = db_settings(url);
    settings.dynamodb_create_table = true;
    Some(
        store::connect(&settings)
            .await
            .expect("create a DynamoDB table on the emulator"),
    )
}

pub fn no_dynamodb() {
    eprintln!("note: AWS_ENDPOINT_URL (the emulator) is not set; this DynamoDB test did not run");
}

pub fn no_postgres() {
    eprintln!("note: TEST_DATABASE_URL is not set; this Postgres test did not run");
}
