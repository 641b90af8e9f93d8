//! The alert store backends the lifecycle and delivery tests run on: every such test is written
//! once and run twice, on `alerts.db` (SQLite) and on a real PostgreSQL (a fresh cluster from
//! `mcpwatch_store::testing::TempPostgres`), so both backends are held to the same behaviour.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_alert::postgres::PgAlertStore;
use mcpwatch_alert::store::{AlertStore, SqliteAlertStore};
use mcpwatch_store::testing::TempPostgres;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// Runs the rest of the test (until the guard drops) on `b`.
pub fn use_backend(b: Backend) -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BACKEND.with(|c| c.set(Backend::Sqlite));
        }
    }
    BACKEND.with(|c| c.set(b));
    Reset
}

/// Where a test's alerts live, kept for the length of the test; open it again for a restart.
pub struct StoreHome {
    pub dir: tempfile::TempDir,
    pg: Option<(TempPostgres, String)>,
}

impl StoreHome {
    /// A fresh, empty store on the backend the test runs on.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = match BACKEND.with(Cell::get) {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = TempPostgres::start();
                let url = pg.create_database("alerts");
                Some((pg, url))
            }
        };
        Self { dir, pg }
    }

    /// Opens the store (as a new process would: a new node name on PostgreSQL).
    pub fn open(&self) -> Arc<dyn AlertStore> {
        match &self.pg {
            None => Arc::new(SqliteAlertStore::open(self.dir.path()).unwrap()),
            Some((_, url)) => {
                let node = format!("test-{}", next_node());
                Arc::new(PgAlertStore::open(url, &node, Duration::from_secs(5)).unwrap())
            }
        }
    }
}

fn next_node() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Defines each test twice, `NAME::sqlite` and `NAME::postgres`.
#[allow(unused_macros, reason = "the channel tests need no store")]
macro_rules! on_both_backends {
    ($($(#[$attr:meta])* fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$attr])*
            #[test]
            fn sqlite() {
                let _b = $crate::common::backend::use_backend($crate::common::backend::Backend::Sqlite);
                $body
            }
            $(#[$attr])*
            #[test]
            fn postgres() {
                let _b = $crate::common::backend::use_backend($crate::common::backend::Backend::Postgres);
                $body
            }
        }
    )*};
    ($($(#[$attr:meta])* async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$attr])*
            #[tokio::test]
            async fn sqlite() {
                let _b = $crate::common::backend::use_backend($crate::common::backend::Backend::Sqlite);
                $body
            }
            $(#[$attr])*
            #[tokio::test]
            async fn postgres() {
                let _b = $crate::common::backend::use_backend($crate::common::backend::Backend::Postgres);
                $body
            }
        }
    )*};
}
