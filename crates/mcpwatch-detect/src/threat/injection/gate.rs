//! The gate in front of the phrase layers: every phrase's possible first bytes and last bytes
//! (extracted from its pattern) go into one Aho-Corasick automaton, and a text runs only the
//! phrases whose first bytes and last bytes both occur in it. Ordinary text contains few of
//! them, so most patterns never run. A pattern whose start cannot be reduced to a short list of
//! literals always runs; one whose end cannot is gated on its start alone.
//!
//! Both are necessary conditions: every match starts with one of the prefix literals and ends
//! with one of the suffix literals, so a text without them cannot match and is skipped safely.

use aho_corasick::AhoCorasick;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Most literals taken from one pattern; more and it always runs.
const MAX_LITERALS: usize = 300;

/// Which patterns may match a text.
#[derive(Debug)]
pub(crate) struct Gate {
    automaton: Option<AhoCorasick>,
    /// Pattern index of each literal of the automaton, and whether it is a suffix literal.
    owner: Vec<(usize, bool)>,
    /// Patterns gated on their suffixes as well as their prefixes.
    needs_suffix: Vec<bool>,
    /// Patterns that always run.
    always: Vec<usize>,
    patterns: usize,
}

/// The literals every match of `source` starts with (`kind` prefix) or ends with (suffix), when
/// there are few and none is empty.
fn literals(source: &str, kind: ExtractKind) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .multi_line(true)
        .build()
        .parse(source)
        .ok()?;
    let mut ex = Extractor::new();
    ex.kind(kind).limit_total(MAX_LITERALS * 4);
    let seq = ex.extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_LITERALS || lits.iter().any(|l| l.as_bytes().is_empty())
    {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

impl Gate {
    /// A gate for `sources` (the patterns as compiled).
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut lits, mut owner, mut always) = (Vec::new(), Vec::new(), Vec::new());
        let mut needs_suffix = Vec::new();
        for (i, s) in sources.into_iter().enumerate() {
            let Some(prefix) = literals(s, ExtractKind::Prefix) else {
                always.push(i);
                needs_suffix.push(false);
                continue;
            };
            owner.extend(std::iter::repeat_n((i, false), prefix.len()));
            lits.extend(prefix);
            let suffix = literals(s, ExtractKind::Suffix);
            needs_suffix.push(suffix.is_some());
            if let Some(suffix) = suffix {
                owner.extend(std::iter::repeat_n((i, true), suffix.len()));
                lits.extend(suffix);
            }
        }
        let patterns = needs_suffix.len();
        let automaton = AhoCorasick::new(&lits).ok();
        if automaton.is_none() {
            always = (0..patterns).collect();
        }
        Self {
            automaton,
            owner,
            needs_suffix,
            always,
            patterns,
        }
    }

    /// Which patterns may match `text`, by index.
    pub fn open(&self, text: &str) -> Vec<bool> {
        // Per pattern: bit 0, a prefix literal occurs; bit 1, a suffix literal occurs.
        let mut seen = vec![0u8; self.patterns];
        if let Some(ac) = &self.automaton {
            for m in ac.find_overlapping_iter(text) {
                let (i, suffix) = self.owner[m.pattern().as_usize()];
                seen[i] |= 1 << u8::from(suffix);
            }
        }
        let mut open: Vec<bool> = seen
            .iter()
            .zip(&self.needs_suffix)
            .map(|(&s, &needs)| s & 1 == 1 && (s & 2 == 2 || !needs))
            .collect();
        for &i in &self.always {
            open[i] = true;
        }
        open
    }
}
