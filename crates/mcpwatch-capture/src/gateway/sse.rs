//! Server-sent events, incrementally: splits a byte stream into events (at blank lines, `\n`
//! or `\r\n`), yields each event's `data:` payload for the tracker, and can rewrite events whose
//! payload must change (a `tools/list` result filtered by policy).
//!
//! The buffer is bounded: an event larger than the limit is skipped without being parsed, and
//! counted; a rewriter then ends the stream rather than pass on what it could not filter.

/// Splits a stream of chunks into complete SSE events.
pub struct SseSplitter {
    buf: Vec<u8>,
    max_event: usize,
    skipping: bool,
}

impl SseSplitter {
    /// A splitter that holds at most `max_event` bytes of an unfinished event.
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_event,
            skipping: false,
        }
    }

    /// Feeds a chunk; calls `on_event` with each complete raw event (without its blank line).
    /// Returns how many oversized events were skipped.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) -> usize {
        let mut skipped = 0;
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some((end, next)) = event_end(&self.buf[start..]) {
            if self.skipping {
                self.skipping = false;
            } else {
                on_event(&self.buf[start..start + end]);
            }
            start += next;
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max_event {
            if !self.skipping {
                skipped += 1;
            }
            self.skipping = true;
            // Keep the tail, which may hold the start of the blank line that ends the event.
            let keep = self.buf.len().min(3);
            self.buf.drain(..self.buf.len() - keep);
        }
        skipped
    }

    /// Bytes of an unfinished event, for a rewriter to pass on at the end of the stream.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Where the first event in `buf` ends: (length of the event, offset after its blank line).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some((nl, nl + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// The `data:` payload of one event: its data lines joined by `\n`; `None` without data.
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

/// Whether the event names itself with a non-empty SSE `id:`, which a client may resume the
/// stream from with `Last-Event-ID`.
pub fn has_event_id(event: &[u8]) -> bool {
    event.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.strip_prefix(b"id:")
            .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            .is_some_and(|v| !v.is_empty())
    })
}

/// The event with its data replaced by `data` (one line; JSON has no raw newlines), other
/// fields (`id:`, `event:`, `retry:`, comments) kept in order, plus the blank line.
pub fn with_data(event: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + data.len());
    let mut written = false;
    for line in event.split(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\r").unwrap_or(line);
        if bare.starts_with(b"data:") {
            if !written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data);
                out.push(b'\n');
                written = true;
            }
            continue;
        }
        out.extend_from_slice(bare);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str], max: usize) -> (Vec<String>, usize) {
        let mut s = SseSplitter::new(max);
        let mut events = Vec::new();
        let mut skipped = 0;
        for c in chunks {
            skipped += s.feed(c.as_bytes(), |e| {
                events.push(String::from_utf8_lossy(e).into_owned())
            });
        }
        (events, skipped)
    }

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let (events, skipped) = split(
            &[
                "event: message\ndata: {\"a\"",
                ":1}\n\nid: 2\r\ndata: x\r\n\r\n",
                "data: tail",
            ],
            1 << 20,
        );
        assert_eq!(
            events,
            ["event: message\ndata: {\"a\":1}", "id: 2\r\ndata: x\r"]
        );
        assert_eq!(skipped, 0);
        assert_eq!(
            event_data(events[0].as_bytes()).as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(event_data(events[1].as_bytes()).as_deref(), Some(&b"x"[..]));
        assert_eq!(
            event_data(b"data: a\ndata: b").as_deref(),
            Some(&b"a\nb"[..])
        );
        assert_eq!(event_data(b": comment"), None);
        assert!(has_event_id(events[1].as_bytes()));
        assert!(!has_event_id(events[0].as_bytes()));
        assert!(
            !has_event_id(b"id:\ndata: x"),
            "an empty id resets, it names nothing"
        );
    }

    #[test]
    fn oversized_events_are_skipped_and_the_next_one_is_found() {
        let big = format!("data: {}", "x".repeat(100));
        let (events, skipped) = split(&[&big[..50], &big[50..], "\n\ndata: ok\n\n"], 16);
        assert_eq!(events, ["data: ok"]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn rewriting_keeps_the_other_fields() {
        assert_eq!(
            with_data(b"event: message\nid: 7\ndata: {\"old\":1}", b"{\"new\":2}"),
            b"event: message\nid: 7\ndata: {\"new\":2}\n\n"
        );
    }
}
