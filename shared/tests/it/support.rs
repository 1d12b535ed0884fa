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
    store::connect(&db_settings(testing::fresh_sqlite_url()))
        .await
        .expect("open a fresh SQLite store")
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

pub fn no_postgres() {
    eprintln!("note: TEST_DATABASE_URL is not set; this Postgres test did not run");
}
