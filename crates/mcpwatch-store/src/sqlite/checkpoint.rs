//! WAL checkpoints on their own thread, so the writer never copies pages into the database file
//! while submitters wait for their acknowledgement.
//!
//! With SQLite's automatic checkpoint the commit that crosses 1000 WAL pages copies them all to
//! the database file and syncs it before it returns: measured with benches/ingest.rs, that
//! was about a fifth of the writer's time per event, all of it on the acknowledgement path. Here
//! the writer's connection has automatic checkpoints off and pokes this thread instead, which
//! runs a PASSIVE checkpoint on a connection of its own (WAL lets it run beside the writer's
//! next transactions). Durability is unchanged: a commit is durable once it is in the WAL.
//!
//! Architecture Invariant: the WAL stays bounded. When it has grown past [`WAL_LIMIT`] anyway
//! (the thread fell behind, or cannot run), the writer checkpoints itself between transactions.
//!
//! That invariant is what lets the thread run at `SCHED_IDLE`: a checkpoint is a few
//! milliseconds of `pread`/`pwrite` in the kernel, and at normal priority a thread woken on its
//! core waited for all of it. Measured with `perf sched` while the gateway benchmark called
//! through a gateway with the collector on the same 2 cores: 18 of the 25 wake-ups of the
//! request path that waited more than 1 ms waited behind this thread (runs of 2.4-2.6 ms); at
//! `SCHED_IDLE` it was one of 48. A thread that wakes preempts an idle-class one at its next
//! return to user space. If other work keeps the cores busy, checkpoints starve, and the writer
//! takes them over at the limit: nothing is lost and no queue grows. Past the limit the thread
//! starts no checkpoint of its own: SQLite runs one checkpoint at a time, and a starved
//! idle-class thread in the middle of one would hold the lock the writer's checkpoint needs, so
//! the WAL could grow for as long as a flood kept the cores busy.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// Bytes of new event bodies after which the checkpoint thread is poked (about SQLite's default
/// of 1000 pages, counting the index entries).
const POKE_BYTES: usize = 2 << 20;
/// WAL file size past which the writer checkpoints itself.
pub(super) const WAL_LIMIT: u64 = 64 << 20;

pub(super) struct Checkpointer {
    poke: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    wal: PathBuf,
    since_poke: usize,
}

impl Checkpointer {
    /// Starts the thread with its own connection to the database at `path`.
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (poke, pokes) = sync_channel::<()>(1);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let thread_wal = wal.clone();
        let spawned = std::thread::Builder::new()
            .name("mcpwatch-checkpoint".into())
            .spawn(move || {
                run_idle();
                while pokes.recv().is_ok() {
                    // Past the limit the checkpoint is the writer's (see the module docs).
                    if wal_len(&thread_wal) > WAL_LIMIT {
                        continue;
                    }
                    if let Err(e) = checkpoint(&conn) {
                        tracing::debug!(error = %e, "background checkpoint failed; the writer checkpoints when the WAL grows");
                    }
                }
            });
        let (poke, thread) = match spawned {
            Ok(t) => (Some(poke), Some(t)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer checkpoints itself");
                (None, None)
            }
        };
        Ok(Self {
            poke,
            thread,
            wal,
            since_poke: 0,
        })
    }

    /// Called after every commit with about the bytes it wrote. The commit stands whatever
    /// happens here, so a failed checkpoint is logged, not returned.
    pub(super) fn committed(&mut self, conn: &Connection, bytes: usize) {
        self.since_poke += bytes;
        if self.since_poke < POKE_BYTES {
            return;
        }
        self.since_poke = 0;
        if let Some(poke) = &self.poke {
            match poke.try_send(()) {
                // Full: a checkpoint is already due; it will see these pages too.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => self.poke = None,
            }
        }
        let wal = wal_len(&self.wal);
        if self.poke.is_none() || wal > WAL_LIMIT {
            if let Err(e) = checkpoint(conn) {
                tracing::warn!(error = %e, wal_bytes = wal, "checkpoint failed; the WAL keeps growing until one succeeds");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.poke = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves the calling thread to the idle scheduling class (see the module docs). Lowering a
/// thread's own class needs no privilege; if it fails anyway, checkpoints run at normal
/// priority, as before.
fn run_idle() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        ) {
            tracing::debug!(error = ?e, "checkpoints run at normal priority: cannot use SCHED_IDLE");
        }
    }
}

fn wal_len(wal: &Path) -> u64 {
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

fn checkpoint(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Scheduling policies (field 41 of `/proc/self/task/TID/stat`) of this process's threads
    /// named like the checkpoint thread.
    fn checkpoint_policies() -> Vec<u32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let dir = task.expect("task").path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() != "mcpwatch-checkp" {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // The name in parentheses may hold spaces: count fields after its closing one.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if let Some(policy) = rest.split_whitespace().nth(38) {
                out.push(policy.parse().expect("policy is a number"));
            }
        }
        out
    }

    /// A database in WAL mode without automatic checkpoints, and its writing connection.
    fn wal_database(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("events.db");
        let writer = Connection::open(&path).expect("open");
        writer
            .query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .expect("wal");
        writer
            .execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x BLOB);")
            .expect("schema");
        (path, writer)
    }

    #[test]
    fn past_the_limit_the_thread_leaves_the_checkpoint_to_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = wal_database(dir.path());
        let mut ck = Checkpointer::start(&path).expect("start");
        // Written without telling the checkpointer, so that nothing checkpoints on the way.
        let blob = vec![7u8; 1 << 20];
        while wal_len(&ck.wal) <= WAL_LIMIT {
            writer
                .execute("INSERT INTO t VALUES (?1)", [&blob])
                .expect("insert");
        }
        let db_before = wal_len(&path);
        // The channel holds one poke: when the third send returns, the thread has finished
        // with the first.
        let poke = ck.poke.clone().expect("the thread runs");
        for _ in 0..3 {
            poke.send(()).expect("the thread takes pokes");
        }
        assert_eq!(
            wal_len(&path),
            db_before,
            "the checkpoint thread checkpointed a WAL past the limit"
        );
        // The next commit's check finds the WAL past the limit and checkpoints on the writer.
        ck.committed(&writer, POKE_BYTES);
        assert!(
            wal_len(&path) > WAL_LIMIT,
            "the writer did not checkpoint: the database file is {} bytes",
            wal_len(&path)
        );
    }

    #[test]
    fn the_checkpoint_thread_runs_in_the_idle_class() {
        const SCHED_IDLE: u32 = 5;
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _writer) = wal_database(dir.path());
        let _ck = Checkpointer::start(&path).expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let policies = checkpoint_policies();
            if !policies.is_empty() && policies.iter().all(|p| *p == SCHED_IDLE) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "checkpoint threads' policies: {policies:?}, want all {SCHED_IDLE}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
