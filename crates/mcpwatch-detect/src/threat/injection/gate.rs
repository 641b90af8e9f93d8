//! The gate in front of the phrase layers: every phrase's possible first bytes (extracted from
//! its pattern) go into one Aho-Corasick automaton, and a text runs only the phrases whose
//! first bytes occur in it. Ordinary text contains few of them, so most patterns never run;
//! a pattern whose start cannot be reduced to a short list of literals always runs.

use aho_corasick::AhoCorasick;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Most literals taken from one pattern; more and it always runs.
const MAX_LITERALS: usize = 300;

/// Which patterns may match a text.
#[derive(Debug)]
pub(crate) struct Gate {
    automaton: Option<AhoCorasick>,
    /// Pattern index of each literal of the automaton.
    owner: Vec<usize>,
    /// Patterns that always run.
    always: Vec<usize>,
    patterns: usize,
}

/// The literals every match of `source` starts with, when there are few and none is empty.
fn prefixes(source: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .multi_line(true)
        .build()
        .parse(source)
        .ok()?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix).limit_total(MAX_LITERALS * 4);
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
        let mut patterns = 0;
        for (i, s) in sources.into_iter().enumerate() {
            patterns += 1;
            match prefixes(s) {
                Some(p) => {
                    owner.extend(std::iter::repeat_n(i, p.len()));
                    lits.extend(p);
                }
                None => always.push(i),
            }
        }
        let automaton = AhoCorasick::new(&lits).ok();
        if automaton.is_none() {
            always = (0..patterns).collect();
        }
        Self {
            automaton,
            owner,
            always,
            patterns,
        }
    }

    /// Which patterns may match `text`, by index.
    pub fn open(&self, text: &str) -> Vec<bool> {
        let mut open = vec![false; self.patterns];
        for &i in &self.always {
            open[i] = true;
        }
        if let Some(ac) = &self.automaton {
            for m in ac.find_overlapping_iter(text) {
                open[self.owner[m.pattern().as_usize()]] = true;
            }
        }
        open
    }
}
