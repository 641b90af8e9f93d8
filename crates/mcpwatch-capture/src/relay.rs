//! The stdio relay: bytes between the client and the server, unchanged, on their own threads.
//!
//! The first stage of `wrap`. Each direction is one OS thread doing blocking `read`/`write_all`,
//! exactly what a bare relay does; after a chunk is written on, the [`Tap`] cuts it into lines
//! and offers one copy of all the lines the chunk completed to a bounded queue with `try_send`.
//! The parser runs elsewhere; when it falls behind, copies are dropped and their lines counted,
//! the bytes still flow.
//!
//! Why one message per read and not per line: measured with `benches/relay.rs`, a `Vec` and a
//! channel send per line cost the relay thread an allocation, a copy and a possible wake-up of
//! the parser for every line; a pipelined read carries hundreds of lines. Both directions share
//! one queue so the parser sees lines in relay order (a response after its request). The
//! parser does not wait in `recv` while traffic flows (it polls, see `wrap`), so `try_send`
//! finds no waker to wake and makes no system call.
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
/// Default most hand-overs (reads, each with the lines it completed) waiting for the parser.
pub const DEFAULT_QUEUE_READS: usize = 16 * 1024;
/// Default most bytes waiting for the parser.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What the relay hands to the parser.
#[derive(Debug)]
pub enum Tapped {
    /// Complete lines, each ending with a newline.
    Lines(Direction, Vec<u8>),
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
    /// A queue of at most `reads` hand-overs and `max_bytes` bytes; the receiver goes to the
    /// parser.
    pub fn new(
        reads: usize,
        max_bytes: usize,
        health: Arc<CaptureHealth>,
    ) -> (Self, mpsc::Receiver<Tapped>) {
        let (tx, rx) = mpsc::channel(reads.max(1));
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

    /// Offers a hand-over of `lines` lines; drops and counts it when the queue is full.
    fn offer(&self, tapped: Tapped, lines: usize) {
        let len = match &tapped {
            Tapped::Lines(_, l) => l.len(),
            Tapped::Oversized(..) => 0,
        };
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped(lines, len);
            return;
        }
        if self.tx.try_send(tapped).is_err() {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped(lines, len);
        }
    }

    fn dropped(&self, lines: usize, len: usize) {
        CaptureHealth::add(&self.health.dropped_lines, lines as u64);
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
        if let Tapped::Lines(_, line) = tapped {
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
    /// The start of a line still without its newline.
    partial: Vec<u8>,
    /// Length so far of a line that went over the limit.
    oversized: Option<usize>,
    /// Complete lines of the current read, handed over together.
    batch: Vec<u8>,
    /// How many lines `batch` holds.
    batch_lines: usize,
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
            batch: Vec::new(),
            batch_lines: 0,
        }
    }

    /// Feeds bytes that were just relayed; hands over the lines they complete.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            self.end_line(&chunk[..pos + 1]);
            chunk = &chunk[pos + 1..];
        }
        self.extend(chunk);
        self.flush();
    }

    /// Hands over the complete lines gathered so far, in one message.
    fn flush(&mut self) {
        if self.batch_lines == 0 {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.queue
            .offer(Tapped::Lines(self.dir, batch), self.batch_lines);
        self.batch_lines = 0;
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

    /// Ends a line with `piece` (which holds its newline, except at the end of the stream).
    fn end_line(&mut self, piece: &[u8]) {
        let body = piece.strip_suffix(b"\n").unwrap_or(piece);
        if let Some(len) = self.oversized.take() {
            self.flush(); // keep the order of lines
            self.queue
                .offer(Tapped::Oversized(self.dir, len + body.len()), 1);
            return;
        }
        if self.partial.len() + body.len() > self.max_line {
            self.flush();
            let len = self.partial.len() + body.len();
            self.partial.clear();
            self.queue.offer(Tapped::Oversized(self.dir, len), 1);
            return;
        }
        if self.batch.is_empty() {
            // Sized for the whole read, so a pipelined read allocates once.
            self.batch.reserve(self.partial.len() + piece.len() + 4096);
        }
        self.batch.extend_from_slice(&self.partial);
        self.batch.extend_from_slice(body);
        self.batch.push(b'\n');
        self.batch_lines += 1;
        self.partial.clear();
        if self.partial.capacity() > 64 * 1024 {
            self.partial = Vec::new();
        }
    }

    /// End of the stream: a last line without a newline is still a frame.
    fn finish(&mut self) {
        if !self.partial.is_empty() || self.oversized.is_some() {
            self.end_line(&[]);
        }
        self.flush();
    }
}

/// Splits a [`Tapped::Lines`] payload into its lines (without their newlines).
pub fn lines(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = batch.strip_suffix(b"\n").unwrap_or(batch);
    body.split(|&b| b == b'\n')
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
        // The copy is queued before the peer can see the bytes, so a reply (relayed by the other
        // direction's thread into the same queue) is always queued after what it answers.
        // Offering is a non-blocking `try_send`: the relay still never waits on monitoring.
        tap.feed(&buf[..n]);
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            break;
        }
        total += n as u64;
    }
    tap.finish();
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
            .flat_map(|t| match t {
                Tapped::Lines(_, batch) => super::lines(batch)
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect(),
                Tapped::Oversized(_, n) => vec![format!("<{n} bytes>")],
            })
            .collect()
    }

    /// A peer that, whenever bytes reach it, checks their copies were already queued.
    struct Peer {
        rx: mpsc::Receiver<Tapped>,
        queued_lines: usize,
        written_lines: usize,
    }

    impl std::io::Write for Peer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            while let Ok(t) = self.rx.try_recv() {
                self.queued_lines += lines(&[t]).len();
            }
            self.written_lines += buf.iter().filter(|&&b| b == b'\n').count();
            assert!(
                self.queued_lines >= self.written_lines,
                "a line reached the peer before its copy was queued"
            );
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn copies_are_queued_before_the_peer_sees_the_bytes() {
        // Otherwise the peer's reply, queued by the other direction, can overtake its request.
        let health = Arc::new(CaptureHealth::default());
        let (q, rx) = TapQueue::new(100, 1 << 20, health);
        let tap = Tap::new(Direction::ClientToServer, q, 1024);
        let mut peer = Peer {
            rx,
            queued_lines: 0,
            written_lines: 0,
        };
        let input: &[u8] = b"{\"id\":1}\n{\"id\":2}\n";
        assert_eq!(pump(input, &mut peer, tap), input.len() as u64);
        assert_eq!(peer.written_lines, 2);
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
    fn a_full_queue_drops_copies_and_counts_their_lines() {
        let (got, dropped) = tapped(&[b"1\n", b"2\n3\n", b"4\n5\n", b"6\n"], 64, 2);
        assert_eq!(lines(&got), vec!["1", "2", "3"]);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn one_read_is_one_hand_over_and_order_survives_long_lines() {
        let big = vec![b'x'; 100];
        let chunk = [b"a\nb\n".as_slice(), &big, b"\nc\n"].concat();
        let (got, _) = tapped(&[&chunk], 64, 10);
        assert_eq!(got.len(), 3, "lines before, the long line, lines after");
        assert_eq!(lines(&got), vec!["a", "b", "<100 bytes>", "c"]);
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
