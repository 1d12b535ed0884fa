//! Postgres connections handed from one statement straight to the next.
//!
//! sqlx's pool pings a connection whenever it goes back (`return_to_pool`
//! sends a Sync and waits for ReadyForQuery, whatever `test_before_acquire`
//! says): one more round trip to a Postgres backend after every statement,
//! 2 of the 4 an exchange makes. The ping is there for a connection that a
//! cancelled future or an error left mid-query. A statement that ran to its
//! end (its ReadyForQuery read) leaves nothing to flush, so here its
//! connection waits in a list of its own for the next statement. Any other
//! connection (a cancelled or failed statement's, a transaction's) is pinged
//! here before it joins the list, and closed if that fails.
//!
//! A statement waits for one of `max_connections` permits, first come, first
//! served; a connection leased or being pinged here holds one. So a statement
//! that finds the list empty finds sqlx below its maximum (but for a
//! connection just handed back to it, whose ping is one round trip), and does
//! not wait in sqlx's queue, which connections in the list never reach.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures::{
    StreamExt as _, TryStreamExt as _,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use sqlx::{
    Connection as _, Database, Describe, Either, Error, Execute, Executor, PgConnection, PgPool,
    Postgres, SqlStr, pool::PoolConnection,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection out of sqlx's pool this long goes back through it (its ping,
/// its max lifetime, its idle connections' reaper) when it is next released
/// or a lease next finds it in the list. A server idle since keeps its list
/// until the next statement: nothing sweeps it.
const HAND_BACK_AFTER: Duration = Duration::from_secs(30);

/// sqlx's pool with the warm list in front of it. `&WarmPool` is an
/// `Executor`, like `&PgPool`.
#[derive(Clone)]
pub(super) struct WarmPool(Arc<Shared>);

struct Shared {
    pool: PgPool,
    warm: Mutex<Vec<Warm>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
}

struct Warm {
    connection: PoolConnection<Postgres>,
    /// When it came out of sqlx's pool.
    since: Instant,
}

/// A connection for one statement (or a transaction). `release` puts it in
/// the list as it is; dropped, it is pinged first.
pub(super) struct Lease {
    connection: Option<Warm>,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("pool", &self.0.pool)
            .field("permits", &self.0.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl WarmPool {
    /// As many permits as `pool`'s `max_connections`, waited for as long as
    /// it waits for a connection.
    pub(super) fn new(pool: PgPool) -> Self {
        let options = pool.options();
        let permits = Semaphore::new(options.get_max_connections() as usize);
        let acquire_timeout = options.get_acquire_timeout();
        Self(Arc::new(Shared {
            pool,
            warm: Mutex::new(Vec::new()),
            permits: Arc::new(permits),
            acquire_timeout,
        }))
    }

    pub(super) async fn lease(&self) -> Result<Lease, Error> {
        let shared = &self.0;
        let deadline = tokio::time::Instant::now() + shared.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, shared.permits.clone().acquire_owned())
            .await
            .map_err(|_| Error::PoolTimedOut)?
            .map_err(|_| Error::PoolClosed)?;
        let now = Instant::now();
        let (fresh, stale) = {
            let mut list = shared.list();
            // The oldest is the one light traffic never reaches (the newest
            // is taken first): one look per lease is enough to retire it.
            let mut stale: Vec<Warm> = Vec::new();
            stale.extend(
                list.first()
                    .is_some_and(|oldest| oldest.is_stale(now))
                    .then(|| list.remove(0)),
            );
            let fresh = loop {
                match list.pop() {
                    Some(warm) if warm.is_stale(now) => stale.push(warm),
                    newest => break newest,
                }
            };
            (fresh, stale)
        };
        drop(stale); // back through sqlx's pool, outside the lock
        let connection = match fresh {
            Some(warm) => warm,
            None => {
                // Boxed: sqlx's acquire is a future of several kilobytes, and
                // inline it would make every statement's future as large,
                // copied whole into the box each statement is run in.
                let acquire = Box::pin(shared.pool.acquire());
                let connection = tokio::time::timeout_at(deadline, acquire)
                    .await
                    .map_err(|_| Error::PoolTimedOut)??;
                Warm {
                    connection,
                    since: Instant::now(),
                }
            }
        };
        Ok(Lease {
            connection: Some(connection),
            shared: shared.clone(),
            permit: Some(permit),
        })
    }
}

impl Shared {
    fn list(&self) -> MutexGuard<'_, Vec<Warm>> {
        self.warm.lock().expect("never held across a panic")
    }

    /// Into the list, or, past `HAND_BACK_AFTER`, dropped: back through
    /// sqlx's pool.
    fn keep(&self, warm: Warm) {
        if !warm.is_stale(Instant::now()) {
            self.list().push(warm);
        }
    }
}

impl Warm {
    fn is_stale(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= HAND_BACK_AFTER
    }
}

impl Lease {
    /// For a connection whose statement ran to its end: the next statement
    /// takes it as it is. The permit is dropped after, with the lease.
    pub(super) fn release(mut self) {
        let warm = self.connection.take().expect("held until released");
        self.shared.keep(warm);
    }
}

impl Drop for Lease {
    /// A connection not released: its statement was cancelled or failed, or
    /// it held a transaction. It is pinged before it joins the list, which
    /// sends a dropped transaction's ROLLBACK and reads what a cancelled
    /// statement left, holding the permit meanwhile, so that the statements
    /// waiting count it as taken. Closed when the ping fails or takes longer
    /// than a statement would wait for a connection.
    fn drop(&mut self) {
        let (Some(mut warm), Some(permit)) = (self.connection.take(), self.permit.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // outside a runtime: to sqlx's pool, as a plain sqlx connection goes
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(shared.acquire_timeout, warm.connection.ping()).await {
                Ok(Ok(())) => shared.keep(warm),
                _ => {
                    warm.connection.close_on_drop();
                    drop(warm);
                }
            }
            drop(permit);
        });
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self
            .connection
            .as_ref()
            .expect("held until released")
            .connection
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self
            .connection
            .as_mut()
            .expect("held until released")
            .connection
    }
}

impl<'p> Executor<'p> for &'_ WarmPool {
    type Database = Postgres;

    /// The results are collected before they are yielded, so that the
    /// connection is released as soon as the statement ends, not when the
    /// caller has read the last row. `fetch_all`, `fetch_one` and `execute`
    /// come here; nothing here streams a large result.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<
        'e,
        Result<Either<<Postgres as Database>::QueryResult, <Postgres as Database>::Row>, Error>,
    >
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        stream::once(async move {
            let mut lease = pool.lease().await?;
            let results: Vec<_> = lease.fetch_many(query).try_collect().await?;
            lease.release();
            Ok::<_, Error>(stream::iter(results.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<<Postgres as Database>::Row>, Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut lease = pool.lease().await?;
            let row = lease.fetch_optional(query).await?;
            lease.release();
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [<Postgres as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<Postgres as Database>::Statement, Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut lease = pool.lease().await?;
            let statement = lease.prepare_with(sql, parameters).await?;
            lease.release();
            Ok(statement)
        })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let mut lease = pool.lease().await?;
            let described = lease.describe(sql).await?;
            lease.release();
            Ok(described)
        })
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, postgres::PgPoolOptions};

    use super::*;

    /// `None` (and a note) when no Postgres is configured; with `CI` set, a panic.
    async fn warm_pool(max_connections: u32) -> Option<WarmPool> {
        let Some(url) = crate::testing::postgres_admin_url().expect("Postgres is required here")
        else {
            eprintln!("note: TEST_DATABASE_URL is not set; this Postgres test did not run");
            return None;
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .expect("connect to Postgres");
        Some(WarmPool::new(pool))
    }

    async fn backend(pool: &WarmPool) -> Result<i32, Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await
    }

    fn warm_count(pool: &WarmPool) -> usize {
        pool.0.warm.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_finished_statement_leaves_its_connection_warm_for_the_next() {
        let Some(pool) = warm_pool(4).await else {
            return;
        };
        let first = backend(&pool).await.unwrap();
        assert_eq!(warm_count(&pool), 1);
        assert_eq!(backend(&pool).await.unwrap(), first);
        let rows: Vec<i32> = sqlx::query_scalar("SELECT generate_series(1, 3)")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows, [1, 2, 3]);
        assert_eq!((warm_count(&pool), pool.0.pool.size()), (1, 1));
    }

    #[tokio::test]
    async fn a_connection_out_of_sqlx_too_long_goes_back_through_it() {
        let Some(pool) = warm_pool(1).await else {
            return;
        };
        let age = |warm: &mut Warm| {
            warm.since = warm.since.checked_sub(HAND_BACK_AFTER).unwrap();
        };
        backend(&pool).await.unwrap();
        // Found aged in the list: handed back, and a connection taken from
        // sqlx anew (the same one, after sqlx's ping: the pool has one).
        age(&mut pool.0.list()[0]);
        let before = Instant::now();
        backend(&pool).await.unwrap();
        assert_eq!(warm_count(&pool), 1);
        assert!(pool.0.list()[0].since >= before);
        // Aged while leased: released to sqlx, not to the list.
        let mut lease = pool.lease().await.unwrap();
        age(lease.connection.as_mut().unwrap());
        lease.release();
        assert_eq!(warm_count(&pool), 0);
        backend(&pool).await.unwrap();
        assert_eq!((warm_count(&pool), pool.0.pool.size()), (1, 1));
    }

    #[tokio::test]
    async fn a_cancelled_statement_leaves_nothing_for_the_next() {
        let Some(pool) = warm_pool(1).await else {
            return;
        };
        let first = backend(&pool).await.unwrap();
        let slow = sqlx::query_scalar::<_, i32>("SELECT 7 FROM pg_sleep(0.3)").fetch_one(&pool);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slow)
                .await
                .is_err()
        );
        // The one connection, pinged once its statement is over (which reads
        // the 7), then reused.
        let answer: (i32, i32) = sqlx::query_as("SELECT 1, pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(answer, (1, first));
    }

    #[tokio::test]
    async fn a_cancelled_statement_keeps_its_place_until_its_connection_is_ready() {
        let Some(pool) = warm_pool(2).await else {
            return;
        };
        // Busy for longer than anything below takes, however slow the
        // machine, and cancelled once Postgres runs it: a fixed wait could
        // cancel it still waiting for its connection on a loaded machine.
        let slow = sqlx::query("SELECT pg_sleep(3) -- keeps its place").execute(&pool);
        let url = crate::testing::postgres_admin_url().unwrap().unwrap();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let running = async {
            while sqlx::query(
                "SELECT 1 FROM pg_stat_activity \
                 WHERE state = 'active' AND query = 'SELECT pg_sleep(3) -- keeps its place'",
            )
            .fetch_optional(&mut admin)
            .await
            .unwrap()
            .is_none()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            _ = slow => panic!("the statement ended before it was seen running"),
            () = running => {}
        }
        let mut held = pool.lease().await.unwrap();
        let held_backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *held)
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { backend(&pool).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.release();
        // Not the cancelled statement's connection, which is still busy: the
        // waiting statement is first in line for the one released.
        assert_eq!(waiting.await.unwrap().unwrap(), held_backend);
    }

    #[tokio::test]
    async fn a_failed_statement_leaves_nothing_for_the_next() {
        let Some(pool) = warm_pool(1).await else {
            return;
        };
        let failed = sqlx::query("SELECT * FROM no_such_table")
            .execute(&pool)
            .await;
        assert!(failed.is_err());
        let answer: i32 = sqlx::query_scalar("SELECT 2")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(answer, 2);
    }

    #[tokio::test]
    async fn a_warm_connection_killed_fails_one_statement_and_is_replaced() {
        let Some(pool) = warm_pool(1).await else {
            return;
        };
        let killed = backend(&pool).await.unwrap();
        let url = crate::testing::postgres_admin_url().unwrap().unwrap();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(killed)
            .execute(&mut admin)
            .await
            .unwrap();
        while sqlx::query("SELECT 1 FROM pg_stat_activity WHERE pid = $1")
            .bind(killed)
            .fetch_optional(&mut admin)
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            backend(&pool).await.is_err(),
            "the dead connection's statement"
        );
        let replacement = backend(&pool).await.unwrap();
        assert_ne!(replacement, killed);
    }

    #[tokio::test]
    async fn statements_beyond_the_pool_wait_their_turn() {
        let Some(pool) = warm_pool(2).await else {
            return;
        };
        let statements = (0..24).map(|n| {
            sqlx::query_scalar::<_, i32>("SELECT $1 FROM pg_sleep(0.005)")
                .bind(n)
                .fetch_one(&pool)
        });
        let answers = futures::future::try_join_all(statements).await.unwrap();
        assert_eq!(answers, (0..24).collect::<Vec<_>>());
        assert!(pool.0.pool.size() <= 2);
        assert!(warm_count(&pool) <= 2);
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_is_rolled_back() {
        let Some(pool) = warm_pool(1).await else {
            return;
        };
        let mut lease = pool.lease().await.unwrap();
        let mut transaction = lease.begin().await.unwrap();
        sqlx::query("CREATE TEMP TABLE dropped_uncommitted (n int)")
            .execute(&mut *transaction)
            .await
            .unwrap();
        drop(transaction);
        drop(lease);
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('pg_temp.dropped_uncommitted')::text")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            table, None,
            "the statement ran inside the dropped transaction"
        );
    }
}
