//! Helpers for this workspace's test suites (feature `testing`): a fresh
//! database per test, on every backend the environment provides.

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};

/// The Postgres server tests may create databases on: `TEST_DATABASE_URL`,
/// else a `postgres://` `DATABASE_URL`. With `CI` set, its absence is an error,
/// so a CI run can never silently skip the Postgres half of the suite.
pub fn postgres_admin_url() -> anyhow::Result<Option<String>> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|url| url.starts_with("postgres"));
    if url.is_none() && std::env::var_os("CI").is_some() {
        anyhow::bail!("CI is set but TEST_DATABASE_URL is not: the Postgres tests cannot run");
    }
    Ok(url)
}

const PREFIX: &str = "chat_test_";

/// Creates an empty database with a random name and returns its URL. The name
/// carries this process's id, so later runs can drop what finished runs left.
pub async fn fresh_postgres_database(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("{PREFIX}{}_{}", std::process::id(), uuid_like());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to TEST_DATABASE_URL {admin_url}"))?;
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| drop_databases_of_finished_runs(&mut admin))
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .context("creating a test database")?;
    admin.close().await.ok();
    Ok(replace_database(admin_url, &name))
}

async fn drop_databases_of_finished_runs(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'chat\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        let running = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !running {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut *admin)
                .await
                .ok();
        }
    }
}

/// A `dynamodb://` URL naming a new table on the emulator at
/// `AWS_ENDPOINT_URL` (created on first use with `DYNAMODB_CREATE_TABLE`).
/// Never a real AWS account: without an emulator, `None`; with `CI` set, an error.
pub fn dynamodb_test_url() -> anyhow::Result<Option<String>> {
    let emulator = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if emulator.is_none() && std::env::var_os("CI").is_some() {
        anyhow::bail!(
            "CI is set but AWS_ENDPOINT_URL is not: the DynamoDB tests need the emulator"
        );
    }
    Ok(emulator.map(|_| format!("dynamodb://{PREFIX}{}_{}", std::process::id(), uuid_like())))
}

/// `TEST_REDIS_URL`, for the rate-limit tests; with `CI` set, required.
pub fn redis_test_url() -> anyhow::Result<Option<String>> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() && std::env::var_os("CI").is_some() {
        anyhow::bail!("CI is set but TEST_REDIS_URL is not: the Redis rate-limit tests cannot run");
    }
    Ok(url)
}

/// A key prefix no other test (or earlier run) uses, for a shared Redis.
pub fn unique_redis_prefix() -> String {
    format!("{PREFIX}{}_{}:", std::process::id(), uuid_like())
}

/// A new SQLite file in the system's temp directory.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("chat_test_{}.db", uuid_like()));
    format!("sqlite://{}", path.display())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn uuid_like() -> String {
    crate::auth::hex(&crate::auth::random_bytes::<12>())
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn swaps_only_the_database_name() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
