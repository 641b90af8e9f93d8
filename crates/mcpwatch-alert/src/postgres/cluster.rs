//! Cluster mode's leases (`serve --cluster`, issue #14): which node runs which detection task,
//! on the shared PostgreSQL store, with fencing.
//!
//! A task (`user/3`, `server/_`, `global`, …) has one row in `cluster_tasks`: its owner, an
//! epoch that grows every time the task changes hands, and a lease deadline on the database's
//! clock (never a node's). A node takes a task only when nobody holds it or its lease expired
//! ([`PgCluster::try_acquire`]), renews what it still holds with its heartbeat
//! ([`PgCluster::heartbeat`]), and every write a task makes is one transaction that first locks
//! the task's row and checks owner, epoch and deadline ([`AlertTx::fence`], used by
//! [`crate::Alerting::on_findings_fenced`]). So:
//! - a paused node that wakes after losing its lease gets [`AlertError::Fenced`] and writes
//!   nothing;
//! - a takeover (an `UPDATE` of the same row) waits for a fenced transaction in flight, and
//!   reads the position and snapshot that transaction committed.
//! - a fenced transaction whose node stops in the middle (SIGSTOP, a paused VM) does not hold
//!   the row for long: the database ends a session idle in it for [`FENCED_IDLE_TIMEOUT`],
//!   rolling it back, and the takeover goes ahead.
//!
//! The row also keeps the task's checkpoint: the last stream position whose effects are
//! committed, how many messages were left in its filter then, and every so often the engine's
//! snapshot at that position, which a new owner loads before replaying from it.
//!
//! Every time is `clock_timestamp()`, the database's clock as the statement runs (not the
//! transaction's start, which a fence check waiting on a lock would read late).

use std::time::Duration;

use mcpwatch_core::Timestamp;
use tokio_postgres::Row;

use super::{db_error, PgAlertStore, PgTx};
use crate::error::AlertError;
use crate::store::{AlertTx, Columns};

/// The lease a node holds on a task: valid while the task's row still names this owner and
/// epoch and its deadline has not passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The task, e.g. `user/3`.
    pub task: String,
    /// The node holding it.
    pub owner: String,
    /// Which tenure of the task this is; grows with every change of hands.
    pub epoch: i64,
}

/// What a task has done up to a point of its stream, written with its findings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The last stream sequence whose effects are committed.
    pub position: u64,
    /// Messages left in the task's filter at that point, as the owner saw.
    pub pending: Option<u64>,
    /// The engine's state at `position`, when it is time to keep one.
    pub snapshot: Option<Vec<u8>>,
}

/// A task a node just took: its lease, its stored position, and the latest snapshot with the
/// position it was taken at (replay from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The lease.
    pub fence: Fence,
    /// The last stream sequence whose effects are committed.
    pub position: u64,
    /// The latest engine snapshot and its position.
    pub snapshot: Option<(u64, Vec<u8>)>,
}

/// One task, for `mcpwatch cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The task.
    pub task: String,
    /// Its owner, if any (maybe with an expired lease).
    pub owner: Option<String>,
    /// The current epoch.
    pub epoch: i64,
    /// Milliseconds until the lease expires (negative: expired), if leased.
    pub expires_in_ms: Option<i64>,
    /// The last stream sequence whose effects are committed.
    pub position: u64,
    /// Messages left in its filter at that checkpoint.
    pub pending: Option<u64>,
    /// Where its latest snapshot was taken.
    pub snapshot_position: u64,
    /// The size of that snapshot.
    pub snapshot_bytes: usize,
    /// When it last checkpointed.
    pub updated_at: Option<Timestamp>,
}

/// One node, for `mcpwatch cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Its name (unique per process).
    pub node: String,
    /// What it says about itself (address, version).
    pub info: String,
    /// When it first sent a heartbeat.
    pub started_at: Timestamp,
    /// Milliseconds until its heartbeat expires (negative: expired).
    pub expires_in_ms: i64,
    /// Whether its heartbeat is current.
    pub alive: bool,
}

/// Leases and checkpoints of cluster mode, on the alert store's database.
#[derive(Clone)]
pub struct PgCluster {
    store: PgAlertStore,
}

impl PgAlertStore {
    /// The cluster's leases, on this store's database and connections.
    pub fn cluster(&self) -> PgCluster {
        PgCluster {
            store: self.clone(),
        }
    }
}

/// The longest task name, node name and node description.
const MAX_TASK: usize = 64;
const MAX_NODE: usize = 256;
const MAX_INFO: usize = 4096;
/// How many tasks one call may name.
const MAX_TASKS: usize = 10_000;
/// The largest engine snapshot kept (PostgreSQL's own limit for a value is 1 GB).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
/// The longest lease.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a fenced transaction may sit idle between two statements before the database ends
/// its session (a healthy node sends the next one within milliseconds).
pub const FENCED_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node row is kept after its heartbeat expired (for `cluster status`).
const KEEP_DEAD_NODES: &str = "1 day";

/// Tasks by family, then partition as a number (`user/2` before `user/10`, `user/_` last).
const TASK_ORDER: &str = "ORDER BY split_part(task, '/', 1), \
     CASE WHEN split_part(task, '/', 2) ~ '^[0-9]{1,9}$' THEN split_part(task, '/', 2)::int END NULLS LAST, task";

/// Milliseconds from now to a `timestamptz` column.
fn ms_until(col: &str) -> String {
    format!("(extract(epoch FROM ({col} - clock_timestamp())) * 1000)::bigint")
}

/// Microseconds since the epoch of a `timestamptz` column.
fn micros_of(col: &str) -> String {
    format!("(extract(epoch FROM {col}) * 1000000)::bigint")
}

fn name(kind: &str, s: &str, max: usize) -> Result<(), AlertError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(AlertError::Invalid(format!(
            "a cluster {kind} name must be 1 to {max} bytes without control characters: {:?}",
            s.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

fn ttl_secs(ttl: Duration) -> Result<f64, AlertError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(AlertError::Invalid(format!(
            "a cluster lease must last between a millisecond and {}h, not {ttl:?}",
            MAX_TTL.as_secs() / 3600
        )));
    }
    Ok(ttl.as_secs_f64())
}

fn signed(v: u64, what: &str) -> Result<i64, AlertError> {
    i64::try_from(v)
        .map_err(|_| AlertError::Invalid(format!("{what} {v} is past what the store keeps")))
}

fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, AlertError> {
    r.try_get(i).map_err(db_error)
}

/// Why a write under `fence` is refused, from the task's row as it is now (`None`: no row).
fn fenced(fence: &Fence, now: Option<(Option<String>, i64, bool)>) -> AlertError {
    let t = &fence.task;
    let message = match now {
        None => format!(
            "task {t} does not exist in the cluster's lease table: this node stands down for it"
        ),
        Some((owner, epoch, live)) if owner.as_deref() == Some(&fence.owner) && epoch == fence.epoch && !live => format!(
            "task {t}'s lease (epoch {epoch}) expired before this node renewed it: another node may take it over; this node stands down"
        ),
        Some((None, epoch, _)) => format!(
            "task {t} is no longer this node's (released, epoch {epoch}; this node held epoch {}): this node stands down",
            fence.epoch
        ),
        Some((Some(owner), epoch, _)) => format!(
            "task {t} is no longer this node's (owner {owner}, epoch {epoch}; this node held epoch {}): another node took it over; this node stands down",
            fence.epoch
        ),
    };
    AlertError::Fenced {
        task: t.clone(),
        message,
    }
}

/// [`AlertTx::fence`] on PostgreSQL: locks the task's row for the rest of the transaction and
/// checks it.
pub(super) fn lock_fence(tx: &PgTx<'_>, fence: &Fence) -> Result<(), AlertError> {
    // A node stopped (SIGSTOP, a VM pause) in the middle of this transaction would hold the
    // lease row, and the fingerprints, until it woke: the database ends its session once it
    // has sat idle that long, which releases them and rolls its writes back.
    tx.query(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
        args![format!("{}ms", FENCED_IDLE_TIMEOUT.as_millis())],
    )?;
    let rows = tx.query(
        "SELECT owner, epoch, coalesce(expires_at > clock_timestamp(), false) FROM cluster_tasks WHERE task = $1 FOR UPDATE",
        args![fence.task.clone()],
    )?;
    let Some(r) = rows.first() else {
        return Err(fenced(fence, None));
    };
    let (owner, epoch, live): (Option<String>, i64, bool) = (get(r, 0)?, get(r, 1)?, get(r, 2)?);
    if owner.as_deref() == Some(&fence.owner) && epoch == fence.epoch && live {
        Ok(())
    } else {
        Err(fenced(fence, Some((owner, epoch, live))))
    }
}

/// [`AlertTx::write_checkpoint`] on PostgreSQL. Call [`lock_fence`] first in the same
/// transaction; this only refuses a fence whose owner or epoch no longer match.
pub(super) fn write_checkpoint(
    tx: &PgTx<'_>,
    fence: &Fence,
    cp: &Checkpoint,
) -> Result<(), AlertError> {
    if let Some(s) = &cp.snapshot {
        if s.len() > MAX_SNAPSHOT_BYTES {
            return Err(AlertError::Invalid(format!(
                "the engine snapshot of task {} is {} bytes, more than the {} the store keeps; raise the snapshot interval's limits or narrow the task's rules",
                fence.task,
                s.len(),
                MAX_SNAPSHOT_BYTES
            )));
        }
    }
    let position = signed(cp.position, "stream position")?;
    let pending = cp.pending.map(|p| signed(p, "pending count")).transpose()?;
    let n = tx.execute(
        "UPDATE cluster_tasks SET position = $4, pending = $5, updated_at = clock_timestamp(), \
         snapshot = coalesce($6::bytea, snapshot), \
         snapshot_position = CASE WHEN $6::bytea IS NULL THEN snapshot_position ELSE $4 END \
         WHERE task = $1 AND owner = $2 AND epoch = $3",
        args![
            fence.task.clone(),
            fence.owner.clone(),
            fence.epoch,
            position,
            pending,
            cp.snapshot.clone()
        ],
    )?;
    if n == 0 {
        let rows = tx.query(
            "SELECT owner, epoch, coalesce(expires_at > clock_timestamp(), false) FROM cluster_tasks WHERE task = $1",
            args![fence.task.clone()],
        )?;
        let now = match rows.first() {
            Some(r) => Some((get(r, 0)?, get(r, 1)?, get(r, 2)?)),
            None => None,
        };
        return Err(fenced(fence, now));
    }
    Ok(())
}

fn task_row(r: &Row) -> Result<TaskRow, AlertError> {
    Ok(TaskRow {
        task: get(r, 0)?,
        owner: get(r, 1)?,
        epoch: get(r, 2)?,
        expires_in_ms: get(r, 3)?,
        position: unsigned(get(r, 4)?),
        pending: get::<Option<i64>>(r, 5)?.map(unsigned),
        snapshot_position: unsigned(get(r, 6)?),
        snapshot_bytes: unsigned(get(r, 7)?) as usize,
        updated_at: get::<Option<i64>>(r, 8)?.map(Timestamp::from_micros),
    })
}

fn node_row(r: &Row) -> Result<NodeRow, AlertError> {
    Ok(NodeRow {
        node: get(r, 0)?,
        info: get(r, 1)?,
        started_at: Timestamp::from_micros(r.int(2)?),
        expires_in_ms: r.int(3)?,
        alive: get(r, 4)?,
    })
}

fn node_sql(filter: &str) -> String {
    format!(
        "SELECT node, info, {}, {}, expires_at > clock_timestamp() FROM cluster_nodes {filter} ORDER BY node",
        micros_of("started_at"),
        ms_until("expires_at")
    )
}

impl PgCluster {
    /// Runs `f` in one transaction and commits it.
    fn in_tx<T>(
        &self,
        f: impl FnOnce(&PgTx<'_>) -> Result<T, AlertError>,
    ) -> Result<T, AlertError> {
        let mut tx = self.store.begin_pg("BEGIN")?;
        let out = f(&tx)?;
        tx.commit_pg()?;
        Ok(out)
    }

    /// Adds the rows of tasks not in the table yet, unowned; existing rows are left alone.
    pub fn ensure_tasks(&self, tasks: &[String]) -> Result<(), AlertError> {
        if tasks.len() > MAX_TASKS {
            return Err(AlertError::Invalid(format!(
                "{} cluster tasks, more than {MAX_TASKS}",
                tasks.len()
            )));
        }
        for t in tasks {
            name("task", t, MAX_TASK)?;
        }
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO cluster_tasks(task) SELECT unnest($1::text[]) ON CONFLICT (task) DO NOTHING",
                args![tasks.to_vec()],
            )
        })?;
        Ok(())
    }

    /// This node's heartbeat: records it as alive until `ttl` from now (with `info` about it),
    /// and renews, for `ttl`, every task it holds whose lease has not expired. Returns the
    /// leases it still holds, by task; a task whose lease expired is neither renewed nor
    /// returned, and the caller stands down for it (another node may have it already).
    pub fn heartbeat(
        &self,
        node: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Vec<Fence>, AlertError> {
        name("node", node, MAX_NODE)?;
        if info.len() > MAX_INFO {
            return Err(AlertError::Invalid(format!(
                "a cluster node's description is {} bytes, more than {MAX_INFO}",
                info.len()
            )));
        }
        let secs = ttl_secs(ttl)?;
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO cluster_nodes(node, info, started_at, expires_at) \
                 VALUES ($1, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)) \
                 ON CONFLICT (node) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at",
                args![node.to_owned(), info.to_owned(), secs],
            )?;
            tx.execute(
                format!("DELETE FROM cluster_nodes WHERE expires_at < clock_timestamp() - interval '{KEEP_DEAD_NODES}'"),
                args![],
            )?;
            // Rows locked in task order, so two renewals never wait on each other in a circle;
            // a row a fenced transaction holds is renewed once that commits.
            let rows = tx.query(
                "UPDATE cluster_tasks SET expires_at = clock_timestamp() + make_interval(secs => $2) \
                 WHERE task IN (SELECT task FROM cluster_tasks WHERE owner = $1 AND expires_at > clock_timestamp() \
                                ORDER BY task FOR UPDATE) \
                 RETURNING task, epoch",
                args![node.to_owned(), secs],
            )?;
            let mut held = rows
                .iter()
                .map(|r| {
                    Ok(Fence {
                        task: get(r, 0)?,
                        owner: node.to_owned(),
                        epoch: get(r, 1)?,
                    })
                })
                .collect::<Result<Vec<_>, AlertError>>()?;
            held.sort_by(|a, b| a.task.cmp(&b.task));
            Ok(held)
        })
    }

    /// Nodes whose heartbeat is current, by name.
    pub fn live_nodes(&self) -> Result<Vec<NodeRow>, AlertError> {
        self.in_tx(|tx| {
            tx.query(node_sql("WHERE expires_at > clock_timestamp()"), args![])?
                .iter()
                .map(node_row)
                .collect()
        })
    }

    /// Takes `task` for `node` for `ttl`, if nobody holds it or its lease expired (a new epoch),
    /// or renews it if `node` holds it already (the same epoch); `None` if another node holds
    /// it. Returns the lease with the task's stored position and latest snapshot. Many nodes
    /// may race for one task: the row's lock makes one of them win, and a takeover waits for
    /// a fenced transaction of the old owner in flight.
    pub fn try_acquire(
        &self,
        task: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Claimed>, AlertError> {
        name("task", task, MAX_TASK)?;
        name("node", node, MAX_NODE)?;
        let secs = ttl_secs(ttl)?;
        self.in_tx(|tx| {
            let rows = tx.query(
                "UPDATE cluster_tasks SET \
                   epoch = CASE WHEN owner = $2 AND expires_at > clock_timestamp() THEN epoch ELSE epoch + 1 END, \
                   owner = $2, expires_at = clock_timestamp() + make_interval(secs => $3) \
                 WHERE task = $1 AND (owner IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp() OR owner = $2) \
                 RETURNING epoch, position, snapshot_position, snapshot",
                args![task.to_owned(), node.to_owned(), secs],
            )?;
            let Some(r) = rows.first() else {
                let known = tx.query("SELECT 1 FROM cluster_tasks WHERE task = $1", args![task.to_owned()])?;
                if known.is_empty() {
                    return Err(AlertError::NotFound(format!(
                        "no cluster task {task}; the cluster adds its tasks at start (ensure_tasks)"
                    )));
                }
                return Ok(None);
            };
            let snapshot: Option<Vec<u8>> = get(r, 3)?;
            let snapshot_position = unsigned(get(r, 2)?);
            Ok(Some(Claimed {
                fence: Fence {
                    task: task.to_owned(),
                    owner: node.to_owned(),
                    epoch: get(r, 0)?,
                },
                position: unsigned(get(r, 1)?),
                snapshot: snapshot.map(|s| (snapshot_position, s)),
            }))
        })
    }

    /// Gives a task up (it is anybody's at once), if `fence` still holds it; otherwise a no-op.
    pub fn release(&self, fence: &Fence) -> Result<(), AlertError> {
        self.in_tx(|tx| {
            tx.execute(
                "UPDATE cluster_tasks SET owner = NULL, expires_at = NULL WHERE task = $1 AND owner = $2 AND epoch = $3",
                args![fence.task.clone(), fence.owner.clone(), fence.epoch],
            )
        })?;
        Ok(())
    }

    /// Writes a checkpoint alone (no findings), fenced: [`AlertError::Fenced`] if the task is no
    /// longer `fence`'s, and then nothing is written.
    pub fn checkpoint(&self, fence: &Fence, cp: &Checkpoint) -> Result<(), AlertError> {
        self.in_tx(|tx| {
            tx.fence(fence)?;
            tx.write_checkpoint(fence, cp)
        })
    }

    /// Every node (alive or not, by name) and every task (by family, then partition number),
    /// for `mcpwatch cluster status`.
    pub fn status(&self) -> Result<(Vec<NodeRow>, Vec<TaskRow>), AlertError> {
        self.in_tx(|tx| {
            let nodes = tx
                .query(node_sql(""), args![])?
                .iter()
                .map(node_row)
                .collect::<Result<Vec<_>, _>>()?;
            let sql = format!(
                "SELECT task, owner, epoch, {}, position, pending, snapshot_position, \
                 coalesce(octet_length(snapshot), 0)::bigint, {} FROM cluster_tasks {TASK_ORDER}",
                ms_until("expires_at"),
                micros_of("updated_at")
            );
            let tasks = tx
                .query(sql, args![])?
                .iter()
                .map(task_row)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((nodes, tasks))
        })
    }

    /// A node shutting down cleanly: every task it holds is released (anybody's at once) and
    /// its node row deleted.
    pub fn forget_node(&self, node: &str) -> Result<(), AlertError> {
        name("node", node, MAX_NODE)?;
        self.in_tx(|tx| {
            tx.execute(
                "UPDATE cluster_tasks SET owner = NULL, expires_at = NULL \
                 WHERE task IN (SELECT task FROM cluster_tasks WHERE owner = $1 ORDER BY task FOR UPDATE)",
                args![node.to_owned()],
            )?;
            tx.execute(
                "DELETE FROM cluster_nodes WHERE node = $1",
                args![node.to_owned()],
            )
        })?;
        Ok(())
    }

    /// The key of the MAC on events a node relays from its ingest API to the stream
    /// (`mcpwatch_nats::relay`), made by the first node that asks from the database's random
    /// source (`gen_random_uuid`, hashed) and the same for every node after.
    pub fn relay_key(&self) -> Result<[u8; 32], AlertError> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO cluster_secrets(name, secret) VALUES ('relay', \
                 sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'))) \
                 ON CONFLICT (name) DO NOTHING",
                args![],
            )?;
            let rows = tx.query(
                "SELECT secret FROM cluster_secrets WHERE name = 'relay'",
                args![],
            )?;
            let secret: Vec<u8> = rows
                .first()
                .and_then(|r| r.try_get(0).ok())
                .unwrap_or_default();
            secret.try_into().map_err(|_| {
                AlertError::Invalid(
                    "the cluster's relay key in cluster_secrets is not 32 bytes; delete the row and restart the nodes"
                        .into(),
                )
            })
        })
    }
}
