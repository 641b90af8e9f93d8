//! The spool: a bounded on-disk queue of events the collector could not take yet.
//!
//! Used by the delivery worker while the collector is unreachable. Events are appended as NDJSON
//! to segment files under `<data dir>/spool/<server>/` ([`root`]), named `<sequence>-<pid>.ndjson`
//! so they sort oldest first; they are read back oldest first. Redelivery after a crash is
//! harmless: the collector ignores ids it already has.
//!
//! Ownership. A segment belongs to the process whose owner id is in its name, which is the
//! process holding the OS lock on `<id>.lock` in the folder (see `owner`; the id is the pid
//! unless another PID namespace has that pid too); only the owner reads, appends to or deletes
//! it. A segment whose owner is gone (its lock is free) is adopted by renaming it to the
//! adopter's pid under a sequence higher than any in the folder. The rename is the claim and it
//! is atomic: when several processes race for one segment (a starting `wrap` of that server,
//! another `wrap` draining [`Orphans`], `mcpwatch spool flush`), exactly one rename succeeds and
//! the others find the file gone and skip it. The fresh sequence keeps the new name unique, so
//! an adoption never replaces another file. Nothing is read from a segment before it is claimed,
//! so no one reads a file another process is still writing.
//!
//! Architecture Invariant: the spool never holds more than `max_bytes`; what does not fit is
//! counted, not written.

mod owner;
mod survey;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mcpwatch_core::Event;

use crate::error::CaptureError;

pub use survey::{survey, Orphans, SpoolStatus};

/// Where the spools of a data dir live: one folder per server below it.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("spool")
}

/// The file in a server's spool folder saying that the collector refused the token.
const TOKEN_REFUSED: &str = "token-refused";

/// Marks `dir` as holding events the collector refused for their token (HTTP `status`).
pub fn mark_token_refused(dir: &Path, status: u16) -> Result<(), CaptureError> {
    std::fs::create_dir_all(dir).map_err(|e| CaptureError::io(dir, e))?;
    let path = dir.join(TOKEN_REFUSED);
    std::fs::write(&path, format!("{status}\n")).map_err(|e| CaptureError::io(&path, e))
}

/// Removes the mark: a token was accepted since.
pub fn clear_token_refused(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(TOKEN_REFUSED));
}

/// The HTTP status of the last refusal, when `dir` is marked.
pub fn token_refused(dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(dir.join(TOKEN_REFUSED)).ok()?;
    text.trim().parse().ok()
}

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
    /// Held while this spool is open: what makes the segments named with `pid` ours.
    _owner: Option<owner::OwnerLock>,
}

impl Spool {
    /// Opens the spool in `dir`, adopting segments of processes that are gone.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CaptureError> {
        Self::open_as(dir, max_bytes, Claimant::this_process())
    }

    /// Opens the spool in `dir` for `me`: its own segments, and those of processes that are gone
    /// once the rename that adopts them has succeeded (see the module docs).
    pub(crate) fn open_as(dir: &Path, max_bytes: u64, me: Claimant) -> Result<Self, CaptureError> {
        std::fs::create_dir_all(dir).map_err(|e| CaptureError::io(dir, e))?;
        let lock = if me.lock {
            Some(owner::take(dir, me.pid)?)
        } else {
            None
        };
        let me = Claimant {
            pid: lock.as_ref().map_or(me.pid, |l| l.id),
            ..me
        };
        let listing = list(dir)?;
        // Above every sequence in the folder, whoever owns it, so adopted and new names are unique.
        let mut seq = listing.segments.iter().map(|f| f.seq).max().unwrap_or(0);
        let mut segments = VecDeque::new();
        for found in listing.segments {
            let path = if found.owner == me.pid {
                found.path
            } else if (me.alive)(dir, found.owner) {
                continue;
            } else {
                seq += 1;
                match claim(&found.path, &dir.join(segment_name(seq, me.pid))) {
                    Some(path) => path,
                    None => continue,
                }
            };
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            segments.push_back(Segment {
                path,
                size,
                read: 0,
            });
        }
        for leftover in listing.leftovers {
            if leftover.owner == me.pid || !(me.alive)(dir, leftover.owner) {
                // An interrupted checkpoint: the segment it came from is still whole.
                let _ = std::fs::remove_file(&leftover.path);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            pid: me.pid,
            max_bytes,
            segments,
            appender: None,
            seq,
            peeked: None,
            _owner: lock,
        })
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.read >= s.size)
    }

    /// Bytes not yet delivered.
    pub fn pending_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.size.saturating_sub(s.read))
            .sum()
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
            event.write_json(&mut buf);
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
            let path = self.dir.join(segment_name(seq, self.pid));
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

    /// Makes what was consumed durable, so whoever adopts this spool next does not send it
    /// again: rewrites the oldest segment without its delivered part (through a temporary file
    /// and an atomic rename, so a crash leaves the old or the new file, never a torn one). The
    /// segment still being appended to is left as it is.
    pub fn checkpoint(&mut self) -> Result<(), CaptureError> {
        self.peeked = None;
        let appending = self.appender.is_some() && self.segments.len() == 1;
        let Some(front) = self.segments.front_mut() else {
            return Ok(());
        };
        if front.read == 0 || appending {
            return Ok(());
        }
        if front.read >= front.size {
            let _ = std::fs::remove_file(&front.path);
            self.segments.pop_front();
            return Ok(());
        }
        let io = |e: std::io::Error| CaptureError::io(&front.path, e);
        let mut rest = Vec::new();
        let mut file = File::open(&front.path).map_err(io)?;
        file.seek(SeekFrom::Start(front.read)).map_err(io)?;
        file.take(front.size - front.read)
            .read_to_end(&mut rest)
            .map_err(io)?;
        let mut tmp = front.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let tmp_io = |e: std::io::Error| CaptureError::io(&tmp, e);
        let mut out = File::create(&tmp).map_err(tmp_io)?;
        out.write_all(&rest).map_err(tmp_io)?;
        out.sync_all().map_err(tmp_io)?;
        std::fs::rename(&tmp, &front.path).map_err(tmp_io)?;
        front.size = rest.len() as u64;
        front.read = 0;
        Ok(())
    }
}

/// Who adopts segments, and how it tells whether another owner still runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claimant {
    /// The adopting process's owner id (its pid, unless that id is locked by another).
    pub pid: u32,
    /// Whether the owner with this id in this folder still runs.
    pub alive: fn(&Path, u32) -> bool,
    /// Take the OS lock that makes the id ours (real processes; tests simulate owners).
    pub lock: bool,
}

impl Claimant {
    /// This process, judging others by whether they hold their owner lock.
    pub(crate) fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            alive: owner::held,
            lock: true,
        }
    }
}

/// Whether the owner `id` of segments in `dir` still runs: it holds its lock.
pub(crate) fn owner_alive(dir: &Path, id: u32) -> bool {
    owner::held(dir, id)
}

/// A file in a spool folder whose name carries a sequence and an owner.
#[derive(Debug)]
struct Found {
    seq: u64,
    owner: u32,
    path: PathBuf,
}

/// A spool folder's segments, oldest first, and the leftovers of interrupted checkpoints.
#[derive(Debug, Default)]
struct Listing {
    segments: Vec<Found>,
    leftovers: Vec<Found>,
}

fn list(dir: &Path) -> Result<Listing, CaptureError> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(|e| CaptureError::io(dir, e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let (name, leftover) = match name.strip_suffix(".tmp") {
            Some(stem) => (stem, true),
            None => (&*name, false),
        };
        let Some((seq, owner)) = parse_name(name) else {
            continue;
        };
        let found = Found {
            seq,
            owner,
            path: entry.path(),
        };
        if leftover {
            listing.leftovers.push(found);
        } else {
            listing.segments.push(found);
        }
    }
    listing.segments.sort_by_key(|f| (f.seq, f.owner));
    Ok(listing)
}

/// Takes a segment over by renaming it; `None` when another process took it first.
fn claim(from: &Path, to: &Path) -> Option<PathBuf> {
    match std::fs::rename(from, to) {
        Ok(()) => Some(to.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(
                "mcpwatch: cannot adopt the spool segment {}: {e}; it stays where it is",
                from.display()
            );
            None
        }
    }
}

fn segment_name(seq: u64, pid: u32) -> String {
    format!("{seq:020}-{pid}.ndjson")
}

fn parse_name(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".ndjson")?;
    let (seq, pid) = stem.split_once('-')?;
    Some((seq.parse().ok()?, pid.parse().ok()?))
}
