//! Every server's spool under one root: what each holds ([`survey`]), and the spools of
//! processes that are gone, taken over and read back one server at a time ([`Orphans`]).
//!
//! Used by `mcpwatch spool status` and `mcpwatch spool flush`, and by the delivery worker of
//! `wrap`, which drains the spools of other server names in the background so events are not
//! stranded when a server is renamed or rarely used. Taking over is [`Spool::open`]'s adoption,
//! so it is safe against every other process doing the same (see the parent module).

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use mcpwatch_core::{Event, Timestamp};
use serde::Deserialize;

use super::{list, owner_alive, Claimant, Spool};
use crate::error::CaptureError;

/// What one server's spool holds, read without taking anything over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpoolStatus {
    /// The server's folder name: its `--name`, made safe as a file name.
    pub server: String,
    /// Segment files.
    pub segments: usize,
    /// Complete events (a torn last line is not one).
    pub events: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// The earliest event time.
    pub oldest: Option<Timestamp>,
    /// Running processes that own segments here; each delivers its own.
    pub live_owners: Vec<u32>,
    /// Segments whose process is gone: what `mcpwatch spool flush` delivers.
    pub orphaned_segments: usize,
    /// Events in those segments.
    pub orphaned_events: u64,
    /// The collector refused the token of the process that spooled here (HTTP 401 or 403).
    pub token_refused: Option<u16>,
}

/// The spools under `root` that hold segments, by server name. A snapshot: segments taken over
/// or delivered while it reads are left out.
pub fn survey(root: &Path) -> Result<Vec<SpoolStatus>, CaptureError> {
    survey_with(root, owner_alive)
}

pub(crate) fn survey_with(
    root: &Path,
    alive: fn(&Path, u32) -> bool,
) -> Result<Vec<SpoolStatus>, CaptureError> {
    let mut out = Vec::new();
    for (server, dir) in servers(root, None)? {
        let listing = list(&dir)?;
        let mut status = SpoolStatus {
            server,
            token_refused: super::token_refused(&dir),
            ..SpoolStatus::default()
        };
        let mut live = BTreeSet::new();
        for found in listing.segments {
            let Some(content) = read_segment(&found.path)? else {
                continue;
            };
            let running = alive(&dir, found.owner);
            status.segments += 1;
            status.bytes += content.bytes;
            status.events += content.events;
            status.oldest = match (status.oldest, content.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if running {
                live.insert(found.owner);
            } else {
                status.orphaned_segments += 1;
                status.orphaned_events += content.events;
            }
        }
        status.live_owners = live.into_iter().collect();
        if status.segments > 0 {
            out.push(status);
        }
    }
    Ok(out)
}

/// What a segment file holds.
struct SegmentContent {
    bytes: u64,
    events: u64,
    oldest: Option<Timestamp>,
}

/// The part of an event the survey needs.
#[derive(Deserialize)]
struct Stamp {
    timestamp: Timestamp,
}

/// Reads one segment; `None` when it is gone (delivered or taken over meanwhile).
fn read_segment(path: &Path) -> Result<Option<SegmentContent>, CaptureError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CaptureError::io(path, e)),
    };
    let mut content = SegmentContent {
        bytes: bytes.len() as u64,
        events: 0,
        oldest: None,
    };
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break; // torn, or still being written
        }
        if let Ok(stamp) = serde_json::from_slice::<Stamp>(line) {
            content.events += 1;
            content.oldest = Some(
                content
                    .oldest
                    .map_or(stamp.timestamp, |o| o.min(stamp.timestamp)),
            );
        }
    }
    Ok(Some(content))
}

/// The server folders under `root` by name, except `skip`; none when `root` does not exist.
fn servers(root: &Path, skip: Option<&OsString>) -> Result<Vec<(String, PathBuf)>, CaptureError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CaptureError::io(root, e)),
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| skip != Some(&e.file_name()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    Ok(out)
}

/// The spools under a root whose owners are gone, taken over one server at a time and read
/// oldest first, like one [`Spool`] per server: [`Orphans::peek`], deliver, [`Orphans::consume`].
///
/// A server's segments are adopted only when its turn comes, so a process that stops early
/// holds little; what it took over becomes an orphan again when it exits. Segments of running
/// processes are never touched: they deliver their own.
#[derive(Debug)]
pub struct Orphans {
    root: PathBuf,
    skip: Option<OsString>,
    me: Claimant,
    /// Server folders not looked at yet; `None` until the root is first read.
    pending: Option<VecDeque<(String, PathBuf)>>,
    current: Option<(String, Spool)>,
}

impl Orphans {
    /// The orphaned spools under `root`, except `own` (the caller's own spool folder, if it is
    /// under `root`). Reads nothing until the first [`Orphans::peek`].
    pub fn new(root: &Path, own: Option<&Path>) -> Self {
        Self::new_as(root, own, Claimant::this_process())
    }

    pub(crate) fn new_as(root: &Path, own: Option<&Path>, me: Claimant) -> Self {
        let skip = own
            .filter(|own| own.parent() == Some(root))
            .and_then(Path::file_name)
            .map(OsString::from);
        Self {
            root: root.to_path_buf(),
            skip,
            me,
            pending: None,
            current: None,
        }
    }

    /// The server whose events the last [`Orphans::peek`] returned.
    pub fn server(&self) -> Option<&str> {
        self.current.as_ref().map(|(name, _)| name.as_str())
    }

    /// Up to `max` of the oldest events of the current server, taking the next server's spool
    /// over when this one is done; `None` when every server has been drained. After an error
    /// (one server's spool cannot be read) the next call goes on with the next server.
    pub fn peek(&mut self, max: usize) -> Result<Option<Vec<Event>>, CaptureError> {
        loop {
            if self.current.is_none() {
                let Some((name, dir)) = self.next_server()? else {
                    return Ok(None);
                };
                // No appends: what does not reach the collector stays in the adopted segments.
                let spool = Spool::open_as(&dir, 0, self.me)?;
                self.current = Some((name, spool));
            }
            let Some((_, spool)) = self.current.as_mut() else {
                continue;
            };
            let events = match spool.peek(max) {
                Ok(events) => events,
                Err(e) => {
                    self.current = None;
                    return Err(e);
                }
            };
            if !events.is_empty() {
                return Ok(Some(events));
            }
            spool.consume(); // past a torn line, if that was all
            if spool.is_empty() {
                self.current = None;
            }
        }
    }

    /// Removes what the last [`Orphans::peek`] returned (after the collector took it).
    pub fn consume(&mut self) {
        if let Some((_, spool)) = self.current.as_mut() {
            spool.consume();
        }
    }

    /// Makes what was consumed durable before stopping early (see [`Spool::checkpoint`]).
    pub fn checkpoint(&mut self) -> Result<(), CaptureError> {
        match self.current.as_mut() {
            Some((_, spool)) => spool.checkpoint(),
            None => Ok(()),
        }
    }

    fn next_server(&mut self) -> Result<Option<(String, PathBuf)>, CaptureError> {
        if self.pending.is_none() {
            // Read once: after an error there is nothing left to look at.
            let found = servers(&self.root, self.skip.as_ref());
            self.pending = Some(
                found
                    .as_ref()
                    .map_or_else(|_| Vec::new(), Vec::clone)
                    .into(),
            );
            found?;
        }
        Ok(self.pending.as_mut().and_then(VecDeque::pop_front))
    }
}
