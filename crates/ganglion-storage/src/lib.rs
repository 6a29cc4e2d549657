//! Ganglion's storage: the schema, numbered migrations and every SQL query, over one pool that
//! speaks PostgreSQL (clusters) or SQLite (the embedded default).
//!
//! Functions take the connection first and are named for what they return. A write that spans
//! rows is called inside one transaction by its caller. This crate knows nothing of HTTP, gRPC
//! or Redis.

pub mod accounts;
pub mod events;
mod migrations;
pub mod rooms;
pub mod state;
pub mod streams;

use std::str::FromStr;

use ganglion_types::{ErrorClass, HasErrorClass};
pub use sqlx::AnyConnection as Conn;
use sqlx::{
    AnyPool,
    any::{AnyConnectOptions, AnyPoolOptions},
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

impl HasErrorClass for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            StorageError::Database(sqlx::Error::PoolTimedOut) => ErrorClass::Unavailable,
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

/// The database handle every service shares.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
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
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // A broken connection surfaces as a query error anyway; pinging on every acquire
            // costs a round trip per query.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; NORMAL sync is durable across
                        // process crashes, which is what the embedded default promises.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Db { pool, backend };
        migrations::run(&db).await?;
        Ok(db)
    }

    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.pool.begin().await?)
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" { None } else { Some(path.to_owned()) }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
