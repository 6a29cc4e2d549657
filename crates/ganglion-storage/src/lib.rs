//! Ganglion's storage: the schema, numbered migrations and every SQL query, over one pool that
//! speaks PostgreSQL (clusters) or SQLite (the embedded default).
//!
//! Functions take the connection first and are named for what they return. A write that spans
//! rows is called inside one transaction by its caller. This crate knows nothing of HTTP, gRPC
//! or Redis.

pub mod accounts;
pub mod auth_chains;
pub mod events;
pub mod federation;
pub mod federation_reads;
pub mod key_backup;
pub mod keys;
pub mod media;
mod migrations;
pub mod presence;
pub mod push_actions;
pub mod pushers;
pub mod relations;
pub mod replication;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod secrets;
pub mod server_keys;
pub mod state;
pub mod streams;
pub mod to_device;
pub mod user_directory;

use std::{str::FromStr, sync::Arc};

use ganglion_types::{ErrorClass, HasErrorClass};
pub use sqlx::AnyConnection as Conn;
use sqlx::{
    AnyConnection, AnyPool, Connection,
    any::{AnyConnectOptions, AnyPoolOptions},
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

/// Counts connection-level failures (I/O, protocol). A connection from [`Db::conn`] that was
/// out while the count moved may be the broken one, so it is closed instead of reused.
static CONNECTION_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the error means the connection (or the server behind it) is gone: I/O failures, and
/// PostgreSQL's connection-exception (08) and operator-intervention (57P) classes.
fn is_connection_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
            true
        }
        sqlx::Error::Database(error) => {
            error.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> StorageError {
        if is_connection_failure(&error) {
            CONNECTION_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        StorageError::Database(error)
    }
}

impl HasErrorClass for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            // The database is down, restarting or overloaded: the request may succeed later (503).
            StorageError::Database(error)
                if is_connection_failure(error)
                    || matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) =>
            {
                ErrorClass::Unavailable
            }
            // A value PostgreSQL's text cannot hold (a NUL from a path segment, say): the
            // client's input, not the server, is at fault; SQLite stores it as given.
            StorageError::Database(sqlx::Error::Database(error))
                if error.code().is_some_and(|code| code == "22021" || code == "22P05") =>
            {
                ErrorClass::InvalidParam
            }
            _ => ErrorClass::Internal,
        }
    }
}

impl StorageError {
    /// Whether the error is a unique-constraint violation (a lost race on an insert).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StorageError::Database(sqlx::Error::Database(error)) => error.is_unique_violation(),
            _ => false,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The database handle every service shares. Transactions come from `pool`; plain reads and
/// single-statement writes from `readers`, which hands connections back without sqlx's
/// ping-on-release (a round trip to the connection's worker for every `conn()`).
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    readers: Arc<ReadPool>,
}

struct ReadPool {
    options: AnyConnectOptions,
    backend: Backend,
    idle: parking_lot::Mutex<Vec<AnyConnection>>,
    permits: Arc<tokio::sync::Semaphore>,
    size: usize,
    /// Shared by every clone of the [`Db`]: set once the process's metrics exist.
    metrics: std::sync::OnceLock<Arc<ganglion_metrics::DatabaseMetrics>>,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool").field("available", &self.permits.available_permits()).finish()
    }
}

/// Where a query gets its connection: one at hand (a connection, a transaction) or one taken
/// from the pool only when a query first needs it ([`LazyConn`]), so that a request answered
/// from memory touches no database.
pub trait Connect: Send {
    fn connection(&mut self) -> impl std::future::Future<Output = Result<&mut Conn>> + Send;
}

impl Connect for AnyConnection {
    async fn connection(&mut self) -> Result<&mut Conn> {
        Ok(self)
    }
}

impl Connect for DbConn {
    async fn connection(&mut self) -> Result<&mut Conn> {
        Ok(&mut **self)
    }
}

impl Connect for sqlx::Transaction<'_, sqlx::Any> {
    async fn connection(&mut self) -> Result<&mut Conn> {
        Ok(&mut **self)
    }
}

impl Connect for Tx {
    async fn connection(&mut self) -> Result<&mut Conn> {
        Ok(&mut ***self)
    }
}

/// A transaction from [`Db::begin`]: sqlx's, timed from begin to commit or rollback. Dropping it
/// uncommitted rolls it back.
pub struct Tx {
    tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
    began: std::time::Instant,
    readers: Arc<ReadPool>,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.tx.take().expect("transaction is open until commit").commit().await
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::Transaction<'static, sqlx::Any>;

    fn deref(&self) -> &Self::Target {
        self.tx.as_ref().expect("transaction is open until commit")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.tx.as_mut().expect("transaction is open until commit")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(metrics) = self.readers.metrics.get() {
            metrics.held(true, self.began.elapsed());
        }
    }
}

/// A read connection taken from [`Db::conn`] on first use; [`LazyConn::used`] tells whether
/// any query needed one.
pub struct LazyConn {
    db: Db,
    conn: Option<DbConn>,
}

impl LazyConn {
    /// Whether a connection was taken (some query went to the database).
    pub fn used(&self) -> bool {
        self.conn.is_some()
    }
}

impl Connect for LazyConn {
    #[track_caller]
    fn connection(&mut self) -> impl std::future::Future<Output = Result<&mut Conn>> + Send {
        // Where a request first needed the database: `RUST_LOG=ganglion_storage::lazy=debug`
        // tells operators which read memory did not answer.
        let caller = std::panic::Location::caller();
        async move {
            let conn = match self.conn.take() {
                Some(conn) => conn,
                None => {
                    tracing::debug!(target: "ganglion_storage::lazy", at = %caller, "first database read");
                    self.db.conn().await?
                }
            };
            Ok(&mut **self.conn.insert(conn))
        }
    }
}

/// A connection from [`Db::conn`]; returned to the pool when dropped.
pub struct DbConn {
    conn: Option<AnyConnection>,
    failures_at_acquire: u64,
    readers: Arc<ReadPool>,
    acquired: std::time::Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for DbConn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        self.conn.as_ref().expect("connection is present until drop")
    }
}

impl std::ops::DerefMut for DbConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("connection is present until drop")
    }
}

impl Drop for DbConn {
    fn drop(&mut self) {
        // A connection dropped mid-query is still fine to reuse: sqlx waits for the previous
        // command to finish before running the next one on it.
        if let Some(metrics) = self.readers.metrics.get() {
            metrics.held(false, self.acquired.elapsed());
        }
        let failures = CONNECTION_FAILURES.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(conn) = self.conn.take()
            && failures == self.failures_at_acquire
        {
            self.readers.idle.lock().push(conn);
        }
    }
}

async fn prepare(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        // WAL lets readers proceed during a write; NORMAL sync is durable across process
        // crashes, which is what the embedded default promises.
        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
        // Each connection has its own page cache; the OS page cache already holds the file.
        sqlx::query("PRAGMA cache_size = -1024").execute(&mut *conn).await?;
    }
    Ok(())
}

impl Db {
    /// Connects, applies the pragmas SQLite needs for concurrent readers, and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let sqlite_dir =
            sqlite_path(url).and_then(|path| std::path::Path::new(&path).parent().map(|p| p.to_owned()));
        if let Some(parent) = sqlite_dir.filter(|_| backend == Backend::Sqlite) {
            let _ = std::fs::create_dir_all(parent);
        }
        let options = AnyConnectOptions::from_str(url)?;
        // SQLite takes one writer at a time: a few connections for transactions are plenty.
        let transaction_connections =
            if backend == Backend::Sqlite { max_connections.min(4) } else { max_connections };
        let pool = AnyPoolOptions::new()
            .max_connections(transaction_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A broken connection surfaces as a query error anyway; pinging on every acquire
            // costs a round trip per query.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| Box::pin(prepare(conn, backend)))
            .connect_with(options.clone())
            .await?;
        let readers = Arc::new(ReadPool {
            options,
            backend,
            idle: parking_lot::Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(max_connections as usize)),
            size: max_connections as usize,
            metrics: std::sync::OnceLock::new(),
        });
        let db = Db { pool, backend, readers };
        migrations::run(&db).await?;
        Ok(db)
    }

    /// A connection for reads and single-statement writes.
    pub async fn conn(&self) -> Result<DbConn> {
        let asked = std::time::Instant::now();
        let permit = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.readers.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| StorageError::Database(sqlx::Error::PoolTimedOut))?
        .map_err(|_| StorageError::Database(sqlx::Error::PoolClosed))?;
        let failures_at_acquire = CONNECTION_FAILURES.load(std::sync::atomic::Ordering::Relaxed);
        let idle = self.readers.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let mut conn = AnyConnection::connect_with(&self.readers.options).await?;
                prepare(&mut conn, self.readers.backend).await?;
                conn
            }
        };
        let acquired = std::time::Instant::now();
        if let Some(metrics) = self.readers.metrics.get() {
            metrics.waited(false, acquired - asked);
        }
        Ok(DbConn {
            conn: Some(conn),
            failures_at_acquire,
            readers: self.readers.clone(),
            acquired,
            _permit: permit,
        })
    }

    /// Times connection waits and uses in `metrics` from now on (every clone of this handle).
    pub fn count_in(&self, metrics: Arc<ganglion_metrics::DatabaseMetrics>) {
        let _ = self.readers.metrics.set(metrics);
    }

    /// Connections of the read pool in use, its size, and the transaction pool's open and idle
    /// connections (for metrics).
    pub fn pool_use(&self) -> PoolUse {
        PoolUse {
            reads_in_use: self.readers.size - self.readers.permits.available_permits(),
            reads_max: self.readers.size,
            transactions_open: self.pool.size() as usize,
            transactions_idle: self.pool.num_idle(),
        }
    }

    /// Whether the database answers a query (readiness checks).
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    /// A connection taken only when a query first needs one.
    pub fn lazy(&self) -> LazyConn {
        LazyConn { db: self.clone(), conn: None }
    }

    pub async fn begin(&self) -> Result<Tx> {
        let asked = std::time::Instant::now();
        let tx = if self.backend == Backend::Sqlite {
            // A deferred transaction that reads, then writes while another connection writes,
            // fails at once with SQLITE_BUSY (busy_timeout cannot help it); taking the write
            // lock up front makes concurrent writers wait their turn instead.
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        };
        let began = std::time::Instant::now();
        if let Some(metrics) = self.readers.metrics.get() {
            metrics.waited(true, began - asked);
        }
        Ok(Tx { tx: Some(tx), began, readers: self.readers.clone() })
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" { None } else { Some(path.to_owned()) }
}

/// How busy the database connections are; see [`Db::pool_use`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub reads_in_use: usize,
    pub reads_max: usize,
    pub transactions_open: usize,
    pub transactions_idle: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
