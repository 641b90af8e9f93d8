//! Spool tests: bounds and order, and the ownership rules that keep concurrent processes (wraps
//! starting, orphan drains, `mcpwatch spool flush`) from losing or double-reading a segment.
//!
//! Processes are simulated by [`Claimant`]s with made-up pids above any real one, so liveness is
//! decided by [`alive`], not by the machine.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Barrier};

use mcpwatch_core::{Level, Timestamp};

use super::survey::survey_with;
use super::*;

/// Pids from here on are "running" processes; no real pid is this high.
const LIVE: u32 = 1_000_000_000;
/// Pids from here on are processes that are gone.
const DEAD: u32 = 2_000_000_000;

fn alive(_: &Path, pid: u32) -> bool {
    (LIVE..DEAD).contains(&pid)
}

fn process(pid: u32) -> Claimant {
    Claimant {
        pid,
        alive,
        lock: false,
    }
}

fn ev(i: usize) -> Event {
    ev_at(i, 1_790_000_000_000_000)
}

fn ev_at(i: usize, micros: i64) -> Event {
    Event {
        id: format!("id-{i}"),
        timestamp: Timestamp::from_micros(micros),
        level: Level::Info,
        category: "system".into(),
        source: "wrap:t".into(),
        event_type: "x".into(),
        message: "m".repeat(100),
        metadata: Default::default(),
        tags: vec![],
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// Writes a segment as process `owner` would have left it.
fn segment(dir: &Path, seq: u64, owner: u32, events: &[Event]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("creates the folder");
    let path = dir.join(segment_name(seq, owner));
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).expect("serialises"));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("writes");
    path
}

/// Everything a spool yields, consuming as it goes.
fn drain(spool: &mut Spool) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let batch = spool.peek(3).expect("reads");
        spool.consume();
        if batch.is_empty() && spool.is_empty() {
            return got;
        }
        got.extend(ids(&batch));
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn oldest_first_bounded_and_counted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut spool = Spool::open(dir.path(), 2_000).expect("opens");
    let all: Vec<Event> = (0..20).map(ev).collect();
    let overflow = spool.append(&all[..5]).expect("appends");
    assert_eq!(overflow, 0);
    let overflow = spool.append(&all[5..]).expect("appends");
    assert!(overflow > 0, "the spool must be bounded");
    assert!(spool.bytes() <= 2_000);
    let first = spool.peek(3).expect("reads");
    assert_eq!(ids(&first), vec!["id-0", "id-1", "id-2"]);
    // Not consumed: the same events again.
    assert_eq!(ids(&spool.peek(3).expect("reads")), ids(&first));
    spool.consume();
    let next = spool.peek(100).expect("reads");
    assert_eq!(next[0].id, "id-3");
    assert_eq!(next.len(), 20 - overflow - 3);
    spool.consume();
    assert!(spool.peek(10).expect("reads").is_empty());
    assert!(spool.is_empty());
}

#[test]
fn segments_of_a_dead_process_are_adopted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // A segment written by a pid that cannot exist, and a torn line at its end.
    let orphan = dir.path().join(format!("{:020}-{}.ndjson", 1, i32::MAX));
    let mut text = serde_json::to_string(&ev(1)).unwrap_or_default();
    text.push('\n');
    text.push_str("{\"torn");
    std::fs::write(&orphan, text).expect("writes");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("opens");
    spool.append(&[ev(2)]).expect("appends");
    assert_eq!(ids(&spool.peek(10).expect("reads")), vec!["id-1"]);
    spool.consume();
    assert!(spool.peek(10).expect("reads").is_empty());
    spool.consume();
    assert_eq!(ids(&spool.peek(10).expect("reads")), vec!["id-2"]);
    assert!(!orphan.exists());
}

#[test]
fn adoption_never_replaces_a_segment() {
    // Two wraps of one server that started together both began at sequence 1.
    let dir = tempfile::tempdir().expect("a temp dir");
    segment(dir.path(), 1, DEAD, &[ev(1)]);
    segment(dir.path(), 1, DEAD + 1, &[ev(2)]);
    segment(dir.path(), 2, DEAD, &[ev(3)]);
    let mut spool = Spool::open_as(dir.path(), 1 << 20, process(LIVE)).expect("opens");
    assert_eq!(
        files(dir.path()),
        vec![
            segment_name(3, LIVE),
            segment_name(4, LIVE),
            segment_name(5, LIVE)
        ],
        "each adopted under its own fresh name, in the old order"
    );
    assert_eq!(drain(&mut spool), vec!["id-1", "id-2", "id-3"]);
    assert!(
        files(dir.path()).is_empty(),
        "delivered segments are removed"
    );
}

#[test]
fn segments_of_running_processes_are_left_alone() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let theirs = segment(dir.path(), 7, LIVE + 1, &[ev(1)]);
    let mut spool = Spool::open_as(dir.path(), 1 << 20, process(LIVE)).expect("opens");
    assert!(spool.is_empty());
    spool.append(&[ev(2)]).expect("appends");
    assert_eq!(
        files(dir.path()),
        vec![segment_name(7, LIVE + 1), segment_name(8, LIVE)],
        "new segments sort after every segment in the folder, whoever owns it"
    );
    assert_eq!(drain(&mut spool), vec!["id-2"]);
    assert!(theirs.exists(), "the running owner delivers it itself");
}

#[test]
fn concurrent_adopters_split_the_segments_without_overlap() {
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("a temp dir");
        let all: Vec<Event> = (0..60).map(ev).collect();
        for (i, e) in all.iter().enumerate() {
            segment(
                dir.path(),
                i as u64 + 1,
                DEAD + (i % 3) as u32,
                std::slice::from_ref(e),
            );
        }
        let adopters = 4;
        let start = Arc::new(Barrier::new(adopters));
        let threads: Vec<_> = (0..adopters)
            .map(|k| {
                let (dir, start) = (dir.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut spool =
                        Spool::open_as(&dir, 1 << 20, process(LIVE + k as u32)).expect("opens");
                    drain(&mut spool)
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in threads {
            seen.extend(t.join().expect("an adopter"));
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "round {round}: read twice: {seen:?}"
        );
        assert_eq!(seen.len(), all.len(), "round {round}: lost: {seen:?}");
        assert!(files(dir.path()).is_empty(), "round {round}");
    }
}

#[test]
fn checkpoint_keeps_only_what_was_not_delivered() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let all: Vec<Event> = (0..5).map(ev).collect();
    segment(dir.path(), 1, DEAD, &all[..3]);
    segment(dir.path(), 2, DEAD, &all[3..]);
    let mut first = Spool::open_as(dir.path(), 0, process(LIVE)).expect("opens");
    assert_eq!(ids(&first.peek(2).expect("reads")), vec!["id-0", "id-1"]);
    first.consume();
    assert_eq!(ids(&first.peek(2).expect("reads")), vec!["id-2"]);
    // Peeked but not acknowledged: stays.
    first.checkpoint().expect("checkpoints");
    drop(first);
    assert!(
        files(dir.path()).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        files(dir.path())
    );
    // The first owner is gone (its pid no longer runs, as after it exits).
    let gone = Claimant {
        pid: LIVE + 1,
        alive: |dir, pid| alive(dir, pid) && pid != LIVE,
        lock: false,
    };
    let mut next = Spool::open_as(dir.path(), 0, gone).expect("opens");
    assert_eq!(drain(&mut next), vec!["id-2", "id-3", "id-4"]);
}

#[test]
fn checkpoint_leaves_the_segment_being_appended_to() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut spool = Spool::open_as(dir.path(), 1 << 20, process(LIVE)).expect("opens");
    spool.append(&[ev(1), ev(2)]).expect("appends");
    spool.peek(1).expect("reads");
    spool.consume();
    spool.checkpoint().expect("checkpoints");
    spool.append(&[ev(3)]).expect("appends");
    assert_eq!(drain(&mut spool), vec!["id-2", "id-3"]);
}

#[test]
fn leftovers_of_an_interrupted_checkpoint_are_removed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let seg = segment(dir.path(), 1, DEAD, &[ev(1), ev(2)]);
    let mut leftover = seg.clone().into_os_string();
    leftover.push(".tmp");
    std::fs::write(&leftover, "half a rewrite").expect("writes");
    let running = segment(dir.path(), 2, LIVE + 1, &[ev(3)]);
    let mut running_leftover = running.into_os_string();
    running_leftover.push(".tmp");
    std::fs::write(&running_leftover, "in progress").expect("writes");
    let mut spool = Spool::open_as(dir.path(), 0, process(LIVE)).expect("opens");
    assert!(!Path::new(&leftover).exists());
    assert!(
        Path::new(&running_leftover).exists(),
        "a running process's checkpoint is its own business"
    );
    assert_eq!(drain(&mut spool), vec!["id-1", "id-2"]);
}

/// A root with servers `a` (orphaned), `b` (running), `own` (orphaned, but the caller's own).
fn three_servers(root: &Path) {
    segment(&root.join("a"), 1, DEAD, &[ev(1), ev(2)]);
    segment(&root.join("a"), 2, DEAD + 1, &[ev(3)]);
    segment(&root.join("b"), 1, LIVE + 9, &[ev(4)]);
    segment(&root.join("own"), 1, DEAD, &[ev(5)]);
}

#[test]
fn orphans_skip_the_own_spool_and_running_owners() {
    let root = tempfile::tempdir().expect("a temp dir");
    three_servers(root.path());
    let own = root.path().join("own");
    let mut orphans = Orphans::new_as(root.path(), Some(&own), process(LIVE));
    let mut got = Vec::new();
    while let Some(batch) = orphans.peek(2).expect("reads") {
        assert_eq!(orphans.server(), Some("a"));
        got.extend(ids(&batch));
        orphans.consume();
    }
    assert_eq!(got, vec!["id-1", "id-2", "id-3"]);
    assert!(files(&root.path().join("a")).is_empty());
    assert_eq!(
        files(&root.path().join("b")),
        vec![segment_name(1, LIVE + 9)]
    );
    assert_eq!(files(&own), vec![segment_name(1, DEAD)]);
}

#[test]
fn orphans_of_a_missing_root_are_none() {
    let root = tempfile::tempdir().expect("a temp dir");
    let mut orphans = Orphans::new_as(&root.path().join("spool"), None, process(LIVE));
    assert_eq!(orphans.peek(10).expect("reads"), None);
    assert_eq!(
        survey_with(&root.path().join("spool"), alive).expect("reads"),
        vec![]
    );
}

#[test]
fn two_orphan_drains_never_deliver_the_same_segment() {
    for round in 0..10 {
        let root = tempfile::tempdir().expect("a temp dir");
        let mut n = 0;
        for server in ["a", "b", "c", "d"] {
            for seq in 1..=8 {
                segment(&root.path().join(server), seq, DEAD, &[ev(n), ev(n + 1)]);
                n += 2;
            }
        }
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2u32)
            .map(|k| {
                let (root, start) = (root.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    let mut orphans = Orphans::new_as(&root, None, process(LIVE + k));
                    start.wait();
                    let mut got = Vec::new();
                    while let Some(batch) = orphans.peek(1).expect("reads") {
                        got.extend(ids(&batch));
                        orphans.consume();
                    }
                    got
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in threads {
            seen.extend(t.join().expect("a drain"));
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "round {round}: delivered twice");
        assert_eq!(seen.len(), n, "round {round}: lost some");
    }
}

#[test]
fn survey_counts_events_owners_and_the_oldest_time() {
    let root = tempfile::tempdir().expect("a temp dir");
    let a = root.path().join("a");
    let orphan = segment(&a, 1, DEAD, &[ev_at(1, 3_000_000), ev_at(2, 1_000_000)]);
    let mut torn = std::fs::read(&orphan).expect("reads");
    torn.extend_from_slice(b"{\"torn");
    std::fs::write(&orphan, torn).expect("writes");
    segment(&a, 2, LIVE + 3, &[ev_at(3, 2_000_000)]);
    std::fs::create_dir_all(root.path().join("empty")).expect("creates");
    let status = survey_with(root.path(), alive).expect("reads");
    let bytes = std::fs::metadata(&orphan).expect("exists").len()
        + std::fs::metadata(a.join(segment_name(2, LIVE + 3)))
            .expect("exists")
            .len();
    assert_eq!(
        status,
        vec![SpoolStatus {
            server: "a".into(),
            segments: 2,
            events: 3,
            bytes,
            oldest: Some(Timestamp::from_micros(1_000_000)),
            live_owners: vec![LIVE + 3],
            orphaned_segments: 1,
            orphaned_events: 2,
            token_refused: None,
        }],
        "the empty folder is not listed"
    );
    // Surveying takes nothing over.
    assert_eq!(
        files(&a),
        vec![segment_name(1, DEAD), segment_name(2, LIVE + 3)]
    );
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_owners_segments() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // A running process that is not a wrap has the pid the dead owner had.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep runs");
    segment(dir.path(), 1, other.id(), &[ev(1), ev(2)]);
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("opens");
    let got = ids(&spool.peek(10).expect("reads"));
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(
        got,
        ["id-1", "id-2"],
        "adopted: nobody holds the owner lock"
    );
}

#[test]
fn the_same_pid_in_another_pid_namespace_is_a_different_owner() {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = root.path().join("srv");
    let dir = &dir;
    std::fs::create_dir_all(dir).expect("mkdir");
    let me = std::process::id();
    // Another namespace's process with our pid owns a segment and holds its lock.
    let theirs = owner::take(dir, me).expect("locks");
    assert_eq!(theirs.id, me);
    segment(dir, 1, me, &[ev(1)]);

    let mut spool = Spool::open(dir, 1 << 20).expect("opens");
    assert!(
        spool.peek(10).expect("reads").is_empty(),
        "not ours to read"
    );
    spool.append(&[ev(2)]).expect("appends");
    let names = files(dir);
    let own: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".ndjson") && !n.ends_with(&format!("-{me}.ndjson")))
        .collect();
    assert_eq!(
        own.len(),
        1,
        "our events go under an id of our own: {names:?}"
    );
    let status = survey(root.path()).expect("surveys");
    let row = status.iter().find(|s| s.server == "srv").expect("listed");
    assert_eq!(row.orphaned_segments, 0, "both owners run: {row:?}");
    assert_eq!(row.live_owners.len(), 2, "{row:?}");

    // Once the other process is gone its segment is adopted.
    drop(theirs);
    drop(spool);
    let mut next = Spool::open(dir, 1 << 20).expect("opens");
    let mut got = drain(&mut next);
    got.sort();
    assert_eq!(got, ["id-1", "id-2"]);
}
