//! Normalisation, the first layer of `prompt_injection`: turns the text a tool returned into
//! the text the other layers read, and records what it had to undo.
//!
//! Per character, in one pass: compatibility folding (NFKD, the decomposition half of NFKC, then
//! combining marks dropped, which also folds accents: "précédentes" reads "precedentes"),
//! lower case, TR39 confusable skeletons for letters inside Latin words ("Іgnоrе" with Cyrillic
//! І and о reads "ignore"), zero-width and bidi controls removed, Unicode tag characters
//! (U+E0020..U+E007E, invisible ASCII) decoded in place, and runs of variation selectors that
//! smuggle bytes decoded in place. Then per word, keywords misspelt by one edit are corrected
//! (see [`super::lexicon::Fuzzy`]).
//!
//! Every position in the result maps back to a byte offset of the input, so findings can say
//! where in the original text they matched.

use unicode_normalization::char::{canonical_combining_class, decompose_compatible};

use super::lexicon::Fuzzy;

/// Characters that render as nothing and are removed.
fn is_zero_width(c: char) -> bool {
    matches!(c as u32, 0x200B..=0x200D | 0x2060..=0x2064 | 0xFEFF | 0x00AD | 0x180E | 0x034F
        | 0x115F | 0x1160 | 0x3164 | 0xFFA0)
}

/// Bidirectional controls, removed; the overrides and isolates among them are reported.
fn is_bidi(c: char) -> bool {
    matches!(c as u32, 0x200E | 0x200F | 0x061C | 0x202A..=0x202E | 0x2066..=0x2069)
}

fn is_selector(c: char) -> Option<u8> {
    match c as u32 {
        v @ 0xFE00..=0xFE0F => Some((v - 0xFE00) as u8),
        v @ 0xE0100..=0xE01EF => Some((v - 0xE0100 + 16) as u8),
        _ => None,
    }
}

/// What kind of hidden text a range of the normalised text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Unicode tag characters.
    Tags,
    /// Bytes in variation selectors.
    Selectors,
    /// An HTML or Markdown comment, or markup styled invisible.
    Comment,
}

/// Normalised text with a map back to the input.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Lower-case, folded text the layers read.
    pub text: String,
    /// (offset in `text`, offset in the input) wherever their difference changes.
    checkpoints: Vec<(u32, u32)>,
    /// Ranges of `text` that were invisible in the input.
    pub hidden: Vec<(usize, usize, Hidden)>,
}

impl View {
    /// Byte offset in the input of the character at `at` in `text`.
    pub fn original_offset(&self, at: usize) -> usize {
        let i = self.checkpoints.partition_point(|&(n, _)| n as usize <= at);
        match i.checked_sub(1).map(|i| self.checkpoints[i]) {
            Some((n, o)) => (o as usize + at).saturating_sub(n as usize),
            None => at,
        }
    }

    /// The map back to the input, for the tests.
    #[cfg(test)]
    pub fn checkpoints(&self) -> &[(u32, u32)] {
        &self.checkpoints
    }

    /// Whether `at` lies in a hidden range, and which.
    pub fn hidden_at(&self, at: usize) -> Option<Hidden> {
        self.hidden
            .iter()
            .find(|(s, e, _)| (*s..*e).contains(&at))
            .map(|h| h.2)
    }
}

/// What normalisation removed or decoded: each is evidence of its own.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Tag characters decoded, the first offset and the decoded text (bounded).
    pub tags: usize,
    pub tags_at: usize,
    pub tag_text: String,
    /// Variation-selector runs decoded to text.
    pub selectors: usize,
    pub selectors_at: usize,
    pub selector_text: String,
    /// Zero-width characters between two letters (splitting words), first offset.
    pub split_words: usize,
    pub split_at: usize,
    /// Bidi overrides and isolates, first offset.
    pub bidi: usize,
    pub bidi_at: usize,
    /// Letters of another script read as Latin, first offset and the word as written.
    pub confusables: usize,
    pub confusable_at: usize,
    pub confusable_word: String,
}

struct Out<'f> {
    view: View,
    delta: i64,
    word: String,
    word_at: usize,
    fuzzy: &'f Fuzzy,
}

impl<'f> Out<'f> {
    /// An empty result for normalising `text`.
    fn new(text: &str, fuzzy: &'f Fuzzy) -> Self {
        Out {
            view: View {
                text: String::with_capacity(text.len() + 16),
                ..View::default()
            },
            delta: 0,
            word: String::new(),
            word_at: 0,
            fuzzy,
        }
    }

    fn mark(&mut self, orig: usize) {
        let d = orig as i64 - self.view.text.len() as i64;
        if d != self.delta {
            self.delta = d;
            let n = u32::try_from(self.view.text.len()).unwrap_or(u32::MAX);
            self.view
                .checkpoints
                .push((n, u32::try_from(orig).unwrap_or(u32::MAX)));
        }
    }

    /// A character of a word, at input offset `orig`.
    fn letter(&mut self, orig: usize, c: char) {
        if self.word.is_empty() {
            self.word_at = orig;
        }
        self.word.push(c);
    }

    /// Ends the current word: writes it, corrected when it is a misspelt keyword.
    fn flush(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let word = std::mem::take(&mut self.word);
        self.mark(self.word_at);
        match self.fuzzy.correct(&word) {
            Some(k) => self.view.text.push_str(k),
            None => self.view.text.push_str(&word),
        }
        self.word = word;
        self.word.clear();
    }

    fn other(&mut self, orig: usize, c: char) {
        self.flush();
        self.mark(orig);
        self.view.text.push(c);
    }
}

/// Latin letter(s) a character is confusable with (TR39 skeleton), when that is one ASCII
/// letter or digit.
fn latin_lookalike(c: char) -> Option<char> {
    let mut buf = [0u8; 4];
    let mut sk = unicode_security::skeleton(c.encode_utf8(&mut buf));
    let first = sk.next()?;
    (sk.next().is_none() && first.is_ascii_alphanumeric() && first != c)
        .then(|| first.to_ascii_lowercase())
}

/// Whether the word starting at `rest` should be read as Latin: it has an ASCII letter, or
/// every letter of it looks like one and the word before it was Latin.
fn latin_word(rest: &str, prev_latin: bool) -> bool {
    let mut all_confusable = true;
    for c in rest.chars() {
        if is_zero_width(c) || is_bidi(c) || canonical_combining_class(c) != 0 {
            continue;
        }
        if !c.is_alphanumeric() {
            break;
        }
        if c.is_ascii_alphabetic() {
            return true;
        }
        if all_confusable && !c.is_ascii() && latin_lookalike(lower(c)).is_none() {
            all_confusable = false;
        }
    }
    all_confusable && prev_latin
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Normalises `text` (already bounded by the caller).
pub(crate) fn normalise(text: &str, fuzzy: &Fuzzy) -> (View, Notes) {
    if text.is_ascii() {
        return (normalise_ascii(text, fuzzy), Notes::default());
    }
    normalise_unicode(text, fuzzy)
}

/// Normalisation of ASCII text, which has nothing invisible, no confusables and nothing to
/// fold but case: words lower-cased (misspelt keywords corrected), everything else copied.
/// The result is what [`normalise_unicode`] gives for the same text, by a shorter way.
fn normalise_ascii(text: &str, fuzzy: &Fuzzy) -> View {
    let mut out = Out::new(text, fuzzy);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            out.mark(i);
            out.view.text.push(char::from(b[i]));
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        out.word.push_str(&text[start..i]);
        out.word.make_ascii_lowercase();
        out.word_at = start;
        out.flush();
    }
    out.view
}

/// Normalises any text, character by character.
pub(crate) fn normalise_unicode(text: &str, fuzzy: &Fuzzy) -> (View, Notes) {
    let mut out = Out::new(text, fuzzy);
    let mut notes = Notes::default();
    let mut latin: Option<bool> = None; // is the current word read as Latin
    let mut prev_latin = false;
    let mut word_has_ascii = false;
    let mut prev: char = ' ';
    let mut flag_tags = false;
    let mut selectors: Vec<u8> = Vec::new();
    let mut selectors_at = 0;
    let mut tag_start: Option<usize> = None;

    for (i, c) in text.char_indices() {
        if let Some(b) = is_selector(c) {
            if selectors.is_empty() {
                selectors_at = i;
            }
            if selectors.len() < 4096 {
                selectors.push(b);
            }
            continue;
        }
        if !selectors.is_empty() {
            flush_selectors(&mut out, &mut notes, &mut selectors, selectors_at);
        }
        let cp = c as u32;
        if (0xE0000..=0xE007F).contains(&cp) {
            if (0xE0020..=0xE007E).contains(&cp) && !flag_tags {
                let a = char::from_u32(cp - 0xE0000)
                    .unwrap_or(' ')
                    .to_ascii_lowercase();
                if notes.tags == 0 {
                    notes.tags_at = i;
                }
                notes.tags += 1;
                if notes.tag_text.len() < 120 {
                    notes.tag_text.push(a);
                }
                let at = out.view.text.len() + out.word.len();
                tag_start.get_or_insert(at);
                if a.is_ascii_alphanumeric() {
                    out.letter(i, a);
                } else {
                    out.other(i, a);
                }
            } else if cp == 0xE007F {
                flag_tags = false;
            }
            continue;
        }
        if let Some(s) = tag_start.take() {
            out.flush();
            let e = out.view.text.len();
            out.view.hidden.push((s, e, Hidden::Tags));
        }
        if cp == 0x1F3F4 {
            flag_tags = true; // subdivision flags (England, Scotland, Wales) are tag sequences
        } else if c != '\u{200d}' {
            flag_tags = false;
        }
        if is_zero_width(c) {
            let next_letter = text[i + c.len_utf8()..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
            if prev.is_alphanumeric() && next_letter && c != '\u{200d}' {
                if notes.split_words == 0 {
                    notes.split_at = i;
                }
                notes.split_words += 1;
            }
            continue;
        }
        if is_bidi(c) {
            if !matches!(cp, 0x200E | 0x200F | 0x061C) {
                if notes.bidi == 0 {
                    notes.bidi_at = i;
                }
                notes.bidi += 1;
            }
            continue;
        }
        prev = c;
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                word_has_ascii |= c.is_ascii_alphabetic();
                out.letter(i, c.to_ascii_lowercase());
            } else {
                prev_latin = word_has_ascii || latin == Some(true);
                latin = None;
                word_has_ascii = false;
                out.other(i, c);
            }
            continue;
        }
        fold(
            c,
            i,
            text,
            &mut out,
            &mut notes,
            &mut latin,
            prev_latin || word_has_ascii,
        );
        if !c.is_alphanumeric() && canonical_combining_class(c) == 0 {
            prev_latin = word_has_ascii || latin == Some(true);
            latin = None;
            word_has_ascii = false;
        }
    }
    if !selectors.is_empty() {
        flush_selectors(&mut out, &mut notes, &mut selectors, selectors_at);
    }
    out.flush();
    if let Some(s) = tag_start {
        let e = out.view.text.len();
        out.view.hidden.push((s, e, Hidden::Tags));
    }
    (out.view, notes)
}

/// Folds one non-ASCII character: compatibility decomposition, marks dropped, lower case,
/// confusables inside Latin words.
fn fold(
    c: char,
    i: usize,
    text: &str,
    out: &mut Out<'_>,
    notes: &mut Notes,
    latin: &mut Option<bool>,
    prev_latin: bool,
) {
    let mut parts = ['\0'; 8];
    let mut n = 0;
    decompose_compatible(c, |d| {
        if n < parts.len() {
            parts[n] = d;
            n += 1;
        }
    });
    for &d in &parts[..n] {
        if canonical_combining_class(d) != 0 {
            continue;
        }
        for l in d.to_lowercase() {
            if canonical_combining_class(l) != 0 {
                continue;
            }
            if l.is_ascii() {
                if l.is_ascii_alphanumeric() {
                    out.letter(i, l);
                } else if l == '\u{2028}' || l == '\u{2029}' {
                    out.other(i, '\n');
                } else {
                    out.other(i, l);
                }
                continue;
            }
            if !l.is_alphanumeric() {
                let l = if matches!(l, '\u{2028}' | '\u{2029}') {
                    '\n'
                } else {
                    l
                };
                out.other(i, l);
                continue;
            }
            let as_latin = *latin.get_or_insert_with(|| latin_word(&text[i..], prev_latin));
            match as_latin.then(|| latin_lookalike(l)).flatten() {
                Some(a) => {
                    if notes.confusables == 0 {
                        notes.confusable_at = i;
                        notes.confusable_word = word_at(text, i);
                    }
                    notes.confusables += 1;
                    out.letter(i, a);
                }
                None => out.letter(i, l),
            }
        }
    }
}

/// The word of `text` around byte offset `i`, for evidence.
fn word_at(text: &str, i: usize) -> String {
    let start = text[..i]
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_alphanumeric())
        .map_or(0, |(j, c)| j + c.len_utf8());
    text[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || is_zero_width(*c))
        .take(40)
        .collect()
}

fn flush_selectors(out: &mut Out<'_>, notes: &mut Notes, bytes: &mut Vec<u8>, at: usize) {
    // One or two selectors follow emoji and CJK ideographs legitimately; a run carries bytes.
    if bytes.len() >= 4 {
        if let Some(t) = super::decode::as_text(bytes) {
            if notes.selectors == 0 {
                notes.selectors_at = at;
                notes.selector_text = t.chars().take(120).collect();
            }
            notes.selectors += 1;
            out.flush();
            let s = out.view.text.len();
            out.other(at, ' ');
            for c in t.chars() {
                out.other(at, lower(c));
            }
            out.other(at, ' ');
            let e = out.view.text.len();
            out.view.hidden.push((s, e, Hidden::Selectors));
        }
    }
    bytes.clear();
}
