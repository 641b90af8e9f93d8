//! The shared store: PostgreSQL, for when several mcpwatch processes keep one history (SPEC 10).
//!
//! Events live in a table partitioned by day on their timestamp (partitions made ahead of time
//! and on demand), so retention drops whole days instantly. The primary key is `(id, ts)`, as a
//! partitioned table's unique key must include the partition key; a batch is one multi-row
//! `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT DO NOTHING`. Bodies are text, not jsonb (jsonb
//! halves the insert rate). Statistics come from rollup tables that each writer maintains in
//! the same transaction as its events, as rows of its own (a `writer` column) that queries sum,
//! so several writers never contend on one rollup row.
//!
//! The traits are synchronous (the writer is a thread, queries run on blocking threads); the
//! store runs `tokio-postgres` on a small runtime of its own and waits on a channel, which works
//! from any thread, inside another runtime or not.

pub(crate) mod progress;
mod reader;
mod schema;
mod writer;

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{DbError, EventReader, EventWriter, Store, StoreError};

pub use reader::PgReader;
pub use writer::PgWriter;

/// Query arguments, owned so that a query can move to the store's runtime.
pub type Args = Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>;

/// The arguments as tokio-postgres takes them.
pub fn refs(args: &Args) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Connections kept by one store (queries and the writer share them).
const POOL_SIZE: usize = 8;

/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a query waits for a free connection.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a store reaches its database: a pool of connections driven by a small runtime of its
/// own, usable from any thread. The alert store (`mcpwatch-alert`) shares this with the event
/// store, so both report an unreachable database the same way.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    rt: Arc<Rt>,
    /// The URL with the password hidden, for messages.
    shown: String,
}

/// The store's own runtime, shut down without blocking whatever thread drops it.
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Db {
    /// Connects to `url` (`postgres://user:password@host:port/database`): one clear error
    /// saying what to do for a bad URL; connections are made when first needed.
    pub fn connect(url: &str) -> Result<Db, StoreError> {
        let shown = hide_password(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "invalid store URL `{shown}`: {e}; write it as postgres://user:password@host:port/database"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            // An unreachable host fails in seconds, not at the system's TCP timeout.
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mcpwatch-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the PostgreSQL client: {e}"))
            })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot set up connections to `{shown}`: {e}"))
            })?;
        Ok(Db {
            pool,
            rt: Arc::new(Rt(Some(rt))),
            shown,
        })
    }

    /// The URL, password hidden.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits for it.
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (pool, shown) = (self.pool.clone(), self.shown.clone());
        self.block(async move {
            match pool.get().await {
                Ok(conn) => f(conn).await,
                Err(e) => Err(pool_error(&shown, e)),
            }
        })
    }

    /// Runs `fut` on the store's runtime and waits for it.
    pub fn block<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .0
            .as_ref()
            .expect("the runtime lives as long as the store");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the PostgreSQL store was shut down".into()))?
    }

    /// A connection of the pool, for a caller that keeps it across several steps.
    pub fn connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let (pool, shown) = (self.pool.clone(), self.shown.clone());
        self.block(async move { pool.get().await.map_err(|e| pool_error(&shown, e)) })
    }
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    db: Db,
    writer_name: String,
    reader: Arc<PgReader>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`), creating or migrating
    /// the schema. `writer_name` tells this process's rollup rows from other writers'.
    pub fn open(url: &str, writer_name: &str) -> Result<Self, StoreError> {
        let db = Db::connect(url)?;
        let shown = db.shown.clone();
        db.run(move |mut conn| async move { schema::migrate(&mut conn, &shown).await })?;
        Ok(Self {
            reader: Arc::new(PgReader::new(db.clone())),
            db,
            writer_name: writer_name.to_owned(),
        })
    }

    /// The URL, password hidden.
    pub fn shown_url(&self) -> &str {
        &self.db.shown
    }
}

impl Store for PgStore {
    fn writer(&self) -> Result<Box<dyn EventWriter>, StoreError> {
        Ok(Box::new(PgWriter::new(self.db.clone(), &self.writer_name)?))
    }

    fn reader(&self) -> Arc<dyn EventReader> {
        self.reader.clone()
    }
}

/// Whether `url` names a PostgreSQL store rather than a directory.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn pool_error(shown: &str, e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => connect_error(shown, e),
        other => StoreError::Unavailable(format!(
            "cannot reach the PostgreSQL store `{shown}`: {other}"
        )),
    }
}

/// One clear message, saying what to do, for a connection that failed.
fn connect_error(shown: &str, e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres says "error connecting to server" and keeps the reason as the source.
    let code = e.code().map(|c| c.code().to_owned());
    let e = match std::error::Error::source(&e) {
        Some(cause) if code.is_none() => format!("{e}: {cause}"),
        _ => e.to_string(),
    };
    let msg = match code.as_deref() {
        // invalid_catalog_name
        Some("3D000") => format!(
            "the database in `{shown}` does not exist: {e}; create it (e.g. `createdb NAME` as a PostgreSQL superuser) or fix the database name in the URL"
        ),
        // invalid_password, invalid_authorization_specification
        Some("28P01" | "28000") => format!(
            "PostgreSQL refused the login for `{shown}`: {e}; check the user and password (put the password in an environment variable and write [store] url = \"postgres://user:${{PGPASSWORD}}@host/db\")"
        ),
        Some(_) => format!("PostgreSQL refused the connection to `{shown}`: {e}"),
        None => format!(
            "cannot connect to PostgreSQL at `{shown}`: {e}; check that the server is running and that the host and port in the URL are right"
        ),
    };
    StoreError::Unavailable(msg)
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(DbError::new(e))
    }
}

#[cfg(test)]
mod tests;
