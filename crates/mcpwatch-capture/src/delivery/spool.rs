//! The spool: a bounded on-disk queue of events the collector could not take yet.
//!
//! Used by the delivery worker while the collector is unreachable. Events are appended as NDJSON
//! to segment files under `<data dir>/spool/<server>/`, named `<sequence>-<pid>.ndjson` so
//! they sort oldest first; they are read back oldest first. Segments left by a process that is
//! gone are adopted (renamed to this process) at start, so nothing spooled is lost across
//! restarts. Redelivery after a crash is harmless: the collector ignores ids it already has.
//!
//! Architecture Invariant: the spool never holds more than `max_bytes`; what does not fit is
//! counted, not written.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mcpwatch_core::Event;

use crate::error::CaptureError;

/// A segment is closed for appending at this size.
const SEGMENT_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    size: u64,
    read: u64,
}

/// A bounded queue of events on disk.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    pid: u32,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    appender: Option<File>,
    seq: u64,
    peeked: Option<(u64, usize)>,
}

impl Spool {
    /// Opens the spool in `dir`, adopting segments of processes that are gone.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CaptureError> {
        std::fs::create_dir_all(dir).map_err(|e| CaptureError::io(dir, e))?;
        let pid = std::process::id();
        let mut names: Vec<(u64, u32, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| CaptureError::io(dir, e))? {
            let Ok(entry) = entry else { continue };
            if let Some((seq, owner)) = parse_name(&entry.file_name().to_string_lossy()) {
                names.push((seq, owner, entry.path()));
            }
        }
        names.sort();
        let mut segments = VecDeque::new();
        let mut seq = 0;
        for (s, owner, path) in names {
            let path = if owner == pid {
                path
            } else if !process_alive(owner) {
                let adopted = dir.join(format!("{s:020}-{pid}.ndjson"));
                if std::fs::rename(&path, &adopted).is_err() {
                    continue; // another process adopted it first
                }
                adopted
            } else {
                continue;
            };
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            seq = seq.max(s + 1);
            segments.push_back(Segment {
                path,
                size,
                read: 0,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            pid,
            max_bytes,
            segments,
            appender: None,
            seq,
            peeked: None,
        })
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.read >= s.size)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Appends events; returns how many did not fit (not written).
    pub fn append(&mut self, events: &[Event]) -> Result<usize, CaptureError> {
        let mut used = self.bytes();
        let mut buf = Vec::new();
        let mut written = 0;
        for event in events {
            let start = buf.len();
            if serde_json::to_writer(&mut buf, event).is_err() {
                buf.truncate(start);
                continue;
            }
            buf.push(b'\n');
            let len = (buf.len() - start) as u64;
            if used + len > self.max_bytes {
                buf.truncate(start);
                break;
            }
            used += len;
            written += 1;
        }
        if !buf.is_empty() {
            self.write(&buf)?;
        }
        Ok(events.len() - written)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), CaptureError> {
        let need_new = match self.segments.back() {
            Some(last) => self.appender.is_none() || last.size >= SEGMENT_BYTES,
            None => true,
        };
        if need_new {
            // Always start a fresh segment: never append to one another process may have written.
            let seq = self.next_seq();
            let path = self.dir.join(format!("{seq:020}-{}.ndjson", self.pid));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(|e| CaptureError::io(&path, e))?;
            self.appender = Some(file);
            self.segments.push_back(Segment {
                path,
                size: 0,
                read: 0,
            });
        }
        let (Some(file), Some(last)) = (self.appender.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        file.write_all(buf)
            .map_err(|e| CaptureError::io(&last.path, e))?;
        last.size += buf.len() as u64;
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Up to `max` of the oldest events, without removing them (see [`Spool::consume`]).
    /// Lines that do not parse (a torn write) are skipped.
    pub fn peek(&mut self, max: usize) -> Result<Vec<Event>, CaptureError> {
        self.peeked = None;
        while let Some(front) = self.segments.front() {
            if front.read < front.size {
                break;
            }
            let done = self.segments.pop_front();
            if self.segments.is_empty() {
                self.appender = None;
            }
            if let Some(done) = done {
                let _ = std::fs::remove_file(&done.path);
            }
        }
        let Some(front) = self.segments.front() else {
            return Ok(Vec::new());
        };
        let mut file = File::open(&front.path).map_err(|e| CaptureError::io(&front.path, e))?;
        file.seek(SeekFrom::Start(front.read))
            .map_err(|e| CaptureError::io(&front.path, e))?;
        let mut rest = Vec::new();
        file.take(front.size - front.read)
            .read_to_end(&mut rest)
            .map_err(|e| CaptureError::io(&front.path, e))?;
        let mut events = Vec::new();
        let mut consumed = 0usize;
        for line in rest.split_inclusive(|b| *b == b'\n') {
            if events.len() == max || !line.ends_with(b"\n") {
                break;
            }
            consumed += line.len();
            if let Ok(e) = serde_json::from_slice::<Event>(line) {
                events.push(e);
            }
        }
        if consumed == 0 && !rest.is_empty() && rest.len() as u64 == front.size - front.read {
            // A torn last line with nothing after it: skip it.
            consumed = rest.len();
        }
        self.peeked = Some((consumed as u64, events.len()));
        Ok(events)
    }

    /// Removes what the last [`Spool::peek`] returned (after the collector took it).
    pub fn consume(&mut self) {
        if let (Some((bytes, _)), Some(front)) = (self.peeked.take(), self.segments.front_mut()) {
            front.read += bytes;
        }
    }
}

fn parse_name(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".ndjson")?;
    let (seq, pid) = stem.split_once('-')?;
    Some((seq.parse().ok()?, pid.parse().ok()?))
}

fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

#[cfg(test)]
mod tests {
    use mcpwatch_core::{Level, Timestamp};

    use super::*;

    fn ev(i: usize) -> Event {
        Event {
            id: format!("id-{i}"),
            timestamp: Timestamp::from_micros(1_790_000_000_000_000),
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
}
