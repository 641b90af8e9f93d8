//! Property tests of what attackers feed the capture edge: resource URIs (any spelling of a
//! path gets the verdict of the path itself), globs (the linear-time matcher agrees with a
//! plain backtracking one) and the stdio relay (output byte-equal to input, and the tap
//! sees exactly the lines that passed). Bounded by proptest's `PROPTEST_CASES` (256 by
//! default; see the README for long runs).

use std::io::Read;
use std::sync::Arc;

use proptest::prelude::*;

use crate::classify::Glob;
use crate::health::CaptureHealth;
use crate::relay::{self, pump, Tap, TapQueue, Tapped};
use crate::session::Direction;
use crate::uri::normalize;

/// Glob semantics written the obvious, exponential way.
fn reference_glob(p: &[char], t: &[char]) -> bool {
    match p {
        [] => t.is_empty(),
        ['*', '*', '/', rest @ ..] => {
            reference_glob(rest, t)
                || (0..t.len()).any(|i| t[i] == '/' && reference_glob(rest, &t[i + 1..]))
        }
        ['*', '*', rest @ ..] => (0..=t.len()).any(|i| reference_glob(rest, &t[i..])),
        ['*', rest @ ..] => {
            for i in 0..=t.len() {
                if reference_glob(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        ['?', rest @ ..] => t.first().is_some_and(|c| *c != '/') && reference_glob(rest, &t[1..]),
        [c, rest @ ..] => t.first() == Some(c) && reference_glob(rest, &t[1..]),
    }
}

/// One way to write a path segment, and what it means.
#[derive(Debug, Clone)]
enum Step {
    Name(&'static str, bool),
    Dot,
    DotDot,
    Empty,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::sample::select(vec!["etc", "tmp", "passwd", "home", ".ssh", "a-b_c~"]), any::<bool>())
            .prop_map(|(n, e)| Step::Name(n, e)),
        1 => Just(Step::Dot),
        1 => Just(Step::DotDot),
        1 => Just(Step::Empty),
    ]
}

/// Percent-encodes every other unreserved character of a name.
fn encoded(name: &str) -> String {
    name.bytes()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                format!("%{b:02x}")
            } else {
                char::from(b).to_string()
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn globs_agree_with_a_backtracking_matcher(
        pattern in "[ab/*?]{0,8}",
        text in "[ab/]{0,10}",
    ) {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(Glob::new(&pattern).matches(&text), reference_glob(&p, &t), "{} vs {}", pattern, text);
    }

    #[test]
    fn normalizing_never_panics_and_is_idempotent(uri in "[a-zA-Z]{1,4}:[/a-zA-Z0-9.%~:@?#-]{0,24}") {
        if let Ok(once) = normalize(&uri) {
            prop_assert_eq!(normalize(&once), Ok(once.clone()), "{}", uri);
        }
    }

    #[test]
    fn any_spelling_of_a_path_gets_the_paths_verdict(
        steps in prop::collection::vec(step(), 0..8),
        upper_scheme in any::<bool>(),
        authority in prop::sample::select(vec!["//", "///", "//localhost/", "//LocalHost/", "/"]),
    ) {
        let mut segments: Vec<&str> = Vec::new();
        let mut written = Vec::new();
        for s in &steps {
            match s {
                Step::Name(n, enc) => {
                    segments.push(n);
                    written.push(if *enc { encoded(n) } else { n.to_string() });
                }
                Step::Dot => written.push(".".into()),
                Step::DotDot => {
                    segments.pop();
                    written.push("%2E.".into());
                }
                Step::Empty => written.push(String::new()),
            }
        }
        // `file:` + `//etc` would name host `etc`: another URI, refused on its own.
        prop_assume!(authority != "/" || written.first().is_none_or(|w| !w.is_empty()));
        let scheme = if upper_scheme { "FILE:" } else { "file:" };
        let sep = if authority == "//" { "/" } else { "" };
        let spelled = format!("{scheme}{authority}{sep}{}", written.join("/"));
        let trailing = matches!(steps.last(), Some(Step::Dot | Step::DotDot | Step::Empty)) || segments.is_empty();
        let canonical = format!("file:///{}{}", segments.join("/"), if trailing && !segments.is_empty() { "/" } else { "" });
        prop_assert_eq!(normalize(&spelled), Ok(canonical.clone()), "{}", spelled);
        let deny = Glob::new("file:///etc/**");
        prop_assert_eq!(deny.matches(&normalize(&spelled).unwrap_or_default()), deny.matches(&canonical));
    }

    #[test]
    fn the_relay_copies_bytes_exactly_and_taps_exactly_the_lines(
        lines in prop::collection::vec("[a-z{}\":]{0,40}", 0..20),
        cut in prop::collection::vec(1usize..64, 1..10),
        trailing_newline in any::<bool>(),
        max_line in 8usize..48,
    ) {
        let mut input = lines.join("\n").into_bytes();
        if trailing_newline && !lines.is_empty() {
            input.push(b'\n');
        }
        let (queue, mut rx) = TapQueue::new(1 << 16, 1 << 24, Arc::new(CaptureHealth::default()));
        let reader = Chunks { data: input.clone(), at: 0, cut, turn: 0 };
        let mut out = Vec::new();
        let n = pump(reader, &mut out, Tap::new(Direction::ClientToServer, queue, max_line));
        prop_assert_eq!(n as usize, input.len());
        prop_assert_eq!(&out, &input);
        let mut seen: Vec<String> = Vec::new();
        while let Ok(t) = rx.try_recv() {
            match t {
                Tapped::Lines(_, batch) => seen.extend(relay::lines(&batch).map(|l| String::from_utf8_lossy(l).into_owned())),
                Tapped::Oversized(_, len) => seen.push(format!("<{len}>")),
            }
        }
        let mut expected: Vec<String> = lines
            .iter()
            .map(|l| if l.len() > max_line { format!("<{}>", l.len()) } else { l.clone() })
            .collect();
        // An empty last line without a newline is no frame; the stream just ended.
        if !trailing_newline && expected.last().is_some_and(String::is_empty) {
            expected.pop();
        }
        prop_assert_eq!(seen, expected);
    }
}

/// A reader that hands out its data in the sizes `cut` cycles through.
struct Chunks {
    data: Vec<u8>,
    at: usize,
    cut: Vec<usize>,
    turn: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.cut[self.turn % self.cut.len()].min(buf.len());
        self.turn += 1;
        let n = size.min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
