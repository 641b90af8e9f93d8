//! The gate in front of the layers: for every pattern (phrases, action verbs and targets,
//! hidden markup, exfiltration channels) two sets of literals are extracted, one of which every
//! match must start with (or contain, see below) and one of which it must end with. All of
//! them go into one Aho-Corasick automaton, and a text runs only the patterns both of whose
//! sets occur in it. Ordinary text contains few of them, so most patterns never run, and text
//! that opens none costs one pass of the automaton.
//!
//! A pattern whose own start cannot be reduced to a short list of literals (`(?m)^\s*`,
//! `(?:^|[.!?]\s*)`, `[a-z0-9._%+-]{1,64}@`) is gated on a part of it every match must pass
//! through: in a concatenation every item matches, so the literals that the rest of the
//! concatenation from some item on starts with must occur too; of the items that give a short
//! list, the one with the longest literals is used. The same goes for ends. A pattern for
//! which neither can be found always runs.
//!
//! Both sets are necessary conditions, so a text without them cannot match and skipping it is
//! safe; the unit tests check it on the corpus by running every pattern on every text.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Most literals taken from one pattern; more and another part of it is tried. The automaton
/// has to stay small enough for the cache: with thousands of literals its table is megabytes
/// and every byte of text costs a cache miss.
const MAX_LITERALS: usize = 64;
/// Literals from this many bytes on are rare enough in ordinary text; among sets of them, the
/// smaller set is the better gate.
const LONG_ENOUGH: usize = 4;

/// Which patterns may match a text.
#[derive(Debug)]
pub(crate) struct Gate {
    automaton: Option<AhoCorasick>,
    /// Pattern index of each literal of the automaton, and whether it is a suffix literal.
    owner: Vec<(usize, bool)>,
    /// Patterns gated on their suffixes as well as their prefixes.
    needs_suffix: Vec<bool>,
    /// Per folded byte, the patterns that have it as a one-byte prefix (`[0]`) or suffix
    /// (`[1]`) literal, as bits: a table lookup per byte, where the automaton would report
    /// a match at nearly every byte.
    bytes: [Box<[u128; 256]>; 2],
    /// Patterns that always run.
    always: Vec<usize>,
    patterns: usize,
}

/// Literals of one pattern: every match contains one of them.
type Literals = Vec<Vec<u8>>;

/// How selective a set of short literals is: a longer shortest literal first, then fewer
/// literals.
fn selectivity(lits: &Literals) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = lits.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(LONG_ENOUGH), std::cmp::Reverse(lits.len()))
}

/// The characters of a class (such as `\d`, which is Unicode), when there are few enough.
fn class_literals(class: &Class) -> Option<Literals> {
    let mut out = Literals::new();
    match class {
        Class::Unicode(c) => {
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    if out.len() >= MAX_LITERALS * 4 {
                        return None;
                    }
                    out.push(shorten(ch.to_string().as_bytes(), true));
                }
            }
        }
        Class::Bytes(c) => {
            for r in c.ranges() {
                out.extend((r.start()..=r.end()).map(|b| vec![fold(b)]));
            }
        }
    }
    small(out)
}

/// The literals every match of `hir` starts with (`prefix`) or ends with (otherwise), when
/// there are few and none is empty.
fn extract(hir: &Hir, prefix: bool) -> Option<Literals> {
    let kind = if prefix {
        ExtractKind::Prefix
    } else {
        ExtractKind::Suffix
    };
    let mut ex = Extractor::new();
    ex.kind(kind).limit_total(MAX_LITERALS * 8);
    let seq = ex.extract(hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    let out: Literals = lits.iter().map(|l| shorten(l.as_bytes(), prefix)).collect();
    small(out)
}

/// Literals longer than this are cut to it (their start, for a prefix; their end, for a
/// suffix): still a part of every match, and a smaller automaton.
const MAX_LITERAL_LEN: usize = 8;

/// A literal as the gate looks for it: whitespace folded (see [`fold`]), at most
/// [`MAX_LITERAL_LEN`] bytes.
fn shorten(l: &[u8], prefix: bool) -> Vec<u8> {
    let l = match prefix {
        true => &l[..l.len().min(MAX_LITERAL_LEN)],
        false => &l[l.len().saturating_sub(MAX_LITERAL_LEN)..],
    };
    l.iter().map(|&b| fold(b)).collect()
}

/// The byte the gate reads for `b`: every ASCII space character as a space, so that a
/// literal written with `\s` is one literal rather than one per kind of space. A literal
/// that occurs in a text occurs, folded, in the folded text.
fn fold(b: u8) -> u8 {
    match b {
        b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => b' ',
        b => b,
    }
}

/// `lits` deduplicated, when there are few enough.
fn small(mut lits: Literals) -> Option<Literals> {
    lits.sort();
    lits.dedup();
    (!lits.is_empty() && lits.len() <= MAX_LITERALS).then_some(lits)
}

/// Literals one of which every match of `hir` contains: its own prefix (or suffix) literals,
/// or, where those are short or cannot be had, those of a part every match passes through.
/// Parts nearest the start (for a prefix; the end, for a suffix) are preferred, so that the
/// two sets of a pattern come from different parts of it and both say something.
fn necessary(hir: &Hir, prefix: bool) -> Option<Literals> {
    let mut candidates: Vec<Literals> = Vec::new();
    candidates.extend(extract(hir, prefix));
    match hir.kind() {
        HirKind::Class(c) => candidates.extend(class_literals(c)),
        HirKind::Capture(c) => candidates.extend(necessary(&c.sub, prefix)),
        // At least one repetition matches.
        HirKind::Repetition(r) if r.min >= 1 => candidates.extend(necessary(&r.sub, prefix)),
        HirKind::Alternation(alts) => {
            // Every branch must give a set; a match contains one of their union.
            let mut union: Literals = Vec::new();
            for a in alts {
                union.extend(necessary(a, prefix)?);
            }
            candidates.extend(small(union));
        }
        HirKind::Concat(items) => {
            let order: Vec<usize> = match prefix {
                true => (0..items.len()).collect(),
                false => (0..items.len()).rev().collect(),
            };
            for k in order {
                // Matches of items[k..] start, and of items[..=k] end, inside every match.
                let part = if prefix {
                    Hir::concat(items[k..].to_vec())
                } else {
                    Hir::concat(items[..=k].to_vec())
                };
                candidates.extend(extract(&part, prefix));
                candidates.extend(necessary(&items[k], prefix));
            }
        }
        _ => {}
    }
    let good = |c: &&Literals| c.iter().all(|l| l.len() >= LONG_ENOUGH);
    if let Some(c) = candidates.iter().find(good) {
        return Some(c.clone());
    }
    candidates.into_iter().max_by_key(selectivity)
}

fn parse(source: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .multi_line(true)
        .build()
        .parse(source)
        .ok()
}

impl Gate {
    /// A gate for `sources` (the patterns as compiled).
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut lits, mut owner, mut always) = (Vec::new(), Vec::new(), Vec::new());
        let mut needs_suffix = Vec::new();
        let mut bytes = [Box::new([0u128; 256]), Box::new([0u128; 256])];
        for (i, s) in sources.into_iter().enumerate() {
            let hir = parse(s);
            let prefix = hir.as_ref().and_then(|h| necessary(h, true));
            let suffix = hir.as_ref().and_then(|h| necessary(h, false));
            // A pattern with only an end to gate on is gated on that end.
            let (first, second) = match (prefix, suffix) {
                (Some(p), s) => (p, s),
                (None, Some(s)) => (s, None),
                (None, None) => {
                    always.push(i);
                    needs_suffix.push(false);
                    continue;
                }
            };
            needs_suffix.push(second.is_some());
            for (set, suffix) in [(Some(first), false), (second, true)] {
                for l in set.into_iter().flatten() {
                    match &l[..] {
                        &[b] if i < 128 => bytes[usize::from(suffix)][usize::from(b)] |= 1 << i,
                        _ => {
                            owner.push((i, suffix));
                            lits.push(l);
                        }
                    }
                }
            }
        }
        let patterns = needs_suffix.len();
        // A DFA: one table lookup per byte, however many literals there are.
        let automaton = AhoCorasickBuilder::new()
            .kind(Some(AhoCorasickKind::DFA))
            .build(&lits)
            .ok();
        if automaton.is_none() {
            always = (0..patterns).collect();
        }
        Self {
            automaton,
            owner,
            needs_suffix,
            bytes,
            always,
            patterns,
        }
    }

    /// Patterns that run on every text, by index.
    #[cfg(test)]
    pub fn always(&self) -> &[usize] {
        &self.always
    }

    /// Which patterns may match `text`, by index.
    pub fn open(&self, text: &str) -> Vec<bool> {
        // Per pattern: bit 0, a prefix literal occurs; bit 1, a suffix literal occurs.
        let mut seen = vec![0u8; self.patterns];
        let (mut first, mut last) = (0u128, 0u128);
        let folded: Vec<u8> = text
            .bytes()
            .map(|b| {
                let f = fold(b);
                first |= self.bytes[0][usize::from(f)];
                last |= self.bytes[1][usize::from(f)];
                f
            })
            .collect();
        for (i, s) in seen.iter_mut().enumerate().take(128) {
            *s |= u8::from(first >> i & 1 == 1) | u8::from(last >> i & 1 == 1) << 1;
        }
        if let Some(ac) = &self.automaton {
            for m in ac.find_overlapping_iter(&folded) {
                let (i, suffix) = self.owner[m.pattern().as_usize()];
                seen[i] |= 1 << u8::from(suffix);
            }
        }
        let mut open: Vec<bool> = seen
            .into_iter()
            .zip(&self.needs_suffix)
            .map(|(s, &needs)| s & 1 == 1 && (s & 2 == 2 || !needs))
            .collect();
        for &i in &self.always {
            open[i] = true;
        }
        open
    }
}
