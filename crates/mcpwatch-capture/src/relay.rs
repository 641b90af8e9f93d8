//! The stdio relay: bytes between the client and the server, unchanged, on their own threads.
//!
//! The first stage of `wrap`. Each direction is one OS thread doing blocking `read`/`write_all`,
//! exactly what a bare relay does; after a chunk is written on, the [`Tap`] cuts it into lines
//! and offers a copy of each complete line to a bounded queue with `try_send`. The parser runs
//! elsewhere; when it falls behind, copies are dropped and counted, the bytes still flow.
//!
//! Architecture Invariant: the relay never waits on parsing, storage or the network.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::health::CaptureHealth;
use crate::session::Direction;

/// Default largest line that is parsed (bigger ones are relayed, not inspected).
pub const DEFAULT_MAX_LINE: usize = 4 * 1024 * 1024;
/// Default most lines waiting for the parser.
pub const DEFAULT_QUEUE_LINES: usize = 4096;
/// Default most bytes waiting for the parser.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What the relay hands to the parser.
#[derive(Debug)]
pub enum Tapped {
    /// One complete line, without its newline.
    Line(Direction, Vec<u8>),
    /// A line longer than the parse limit: its length.
    Oversized(Direction, usize),
}

/// The shared, bounded hand-over from relay threads to the parser.
#[derive(Debug, Clone)]
pub struct TapQueue {
    tx: mpsc::Sender<Tapped>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    health: Arc<CaptureHealth>,
}

impl TapQueue {
    /// A queue of at most `lines` lines and `max_bytes` bytes; the receiver goes to the parser.
    pub fn new(
        lines: usize,
        max_bytes: usize,
        health: Arc<CaptureHealth>,
    ) -> (Self, mpsc::Receiver<Tapped>) {
        let (tx, rx) = mpsc::channel(lines.max(1));
        let q = Self {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            health,
        };
        (q, rx)
    }

    /// The parser's handle for freeing the bytes of lines it has taken.
    pub fn releaser(&self) -> Releaser {
        Releaser {
            bytes: self.bytes.clone(),
        }
    }

    fn offer(&self, tapped: Tapped) {
        let len = match &tapped {
            Tapped::Line(_, l) => l.len(),
            Tapped::Oversized(..) => 0,
        };
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped(len);
            return;
        }
        if self.tx.try_send(tapped).is_err() {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped(len);
        }
    }

    fn dropped(&self, len: usize) {
        CaptureHealth::add(&self.health.dropped_lines, 1);
        CaptureHealth::add(&self.health.dropped_bytes, len as u64);
    }
}

/// Frees queue bytes as the parser takes lines (holds no sender, so the queue can close).
#[derive(Debug, Clone)]
pub struct Releaser {
    bytes: Arc<AtomicUsize>,
}

impl Releaser {
    /// The parser calls this when it has taken a line off the queue.
    pub fn release(&self, tapped: &Tapped) {
        if let Tapped::Line(_, line) = tapped {
            self.bytes.fetch_sub(line.len(), Ordering::Relaxed);
        }
    }
}

/// Cuts one direction's byte stream into lines for the parser.
#[derive(Debug)]
pub struct Tap {
    dir: Direction,
    queue: TapQueue,
    max_line: usize,
    partial: Vec<u8>,
    /// Length so far of a line that went over the limit.
    oversized: Option<usize>,
}

impl Tap {
    /// A tap for one direction.
    pub fn new(dir: Direction, queue: TapQueue, max_line: usize) -> Self {
        Self {
            dir,
            queue,
            max_line,
            partial: Vec::new(),
            oversized: None,
        }
    }

    /// Feeds bytes that were just relayed.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            self.end_line(&chunk[..pos]);
            chunk = &chunk[pos + 1..];
        }
        self.extend(chunk);
    }

    fn extend(&mut self, piece: &[u8]) {
        if let Some(len) = self.oversized.as_mut() {
            *len += piece.len();
        } else if self.partial.len() + piece.len() > self.max_line {
            self.oversized = Some(self.partial.len() + piece.len());
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(piece);
        }
    }

    fn end_line(&mut self, piece: &[u8]) {
        self.extend(piece);
        if let Some(len) = self.oversized.take() {
            self.queue.offer(Tapped::Oversized(self.dir, len));
            return;
        }
        let line = if self.partial.capacity() > 64 * 1024 {
            std::mem::take(&mut self.partial)
        } else {
            let line = self.partial.clone();
            self.partial.clear();
            line
        };
        self.queue.offer(Tapped::Line(self.dir, line));
    }
}

/// Copies `from` to `to` until end of input or a write error, tapping every chunk.
/// Returns the number of bytes relayed.
pub fn pump(mut from: impl Read, mut to: impl Write, mut tap: Tap) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            break;
        }
        total += n as u64;
        tap.feed(&buf[..n]);
    }
    // A last line without a newline is still a frame.
    if !tap.partial.is_empty() || tap.oversized.is_some() {
        tap.end_line(&[]);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tapped(chunks: &[&[u8]], max_line: usize, queue_lines: usize) -> (Vec<Tapped>, u64) {
        let health = Arc::new(CaptureHealth::default());
        let (q, mut rx) = TapQueue::new(queue_lines, 1 << 30, health.clone());
        let mut tap = Tap::new(Direction::ClientToServer, q, max_line);
        let input: Vec<u8> = chunks.concat();
        let mut out = Vec::new();
        // Feed chunk by chunk as reads would deliver them.
        for c in chunks {
            out.extend_from_slice(c);
            tap.feed(c);
        }
        assert_eq!(out, input);
        let mut got = Vec::new();
        while let Ok(t) = rx.try_recv() {
            got.push(t);
        }
        (got, CaptureHealth::get(&health.dropped_lines))
    }

    fn lines(t: &[Tapped]) -> Vec<String> {
        t.iter()
            .map(|t| match t {
                Tapped::Line(_, l) => String::from_utf8_lossy(l).into_owned(),
                Tapped::Oversized(_, n) => format!("<{n} bytes>"),
            })
            .collect()
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let (got, dropped) = tapped(&[b"{\"a\":", b"1}\n{\"b\"", b":2}\n\n"], 100, 10);
        assert_eq!(lines(&got), vec!["{\"a\":1}", "{\"b\":2}", ""]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn long_lines_are_reported_by_size_only() {
        let big = vec![b'x'; 250];
        let (got, _) = tapped(&[&big[..100], &big[100..], b"\nok\n"], 64, 10);
        assert_eq!(lines(&got), vec!["<250 bytes>", "ok"]);
    }

    #[test]
    fn a_full_queue_drops_copies_and_counts_them() {
        let (got, dropped) = tapped(&[b"1\n2\n3\n4\n5\n"], 64, 2);
        assert_eq!(lines(&got), vec!["1", "2"]);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn pump_copies_bytes_exactly() {
        let health = Arc::new(CaptureHealth::default());
        let (q, _rx) = TapQueue::new(1, 1 << 20, health);
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let n = pump(
            &input[..],
            &mut out,
            Tap::new(Direction::ServerToClient, q, 1024),
        );
        assert_eq!(n as usize, input.len());
        assert_eq!(out, input);
    }
}
