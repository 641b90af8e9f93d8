//! `prompt_injection` (SPEC 6.3): a layered detector for instructions aimed at the model in
//! text a tool, resource or prompt hands it, and in tool descriptions.
//!
//! The layers, in order, each named in the evidence of what it found:
//! 1. [`normalise`] (`normalisation`): NFKC folding, TR39 confusables, zero-width and bidi
//!    controls removed, tag characters and variation-selector bytes decoded, HTML/Markdown
//!    comments marked as hidden; [`decode`] adds base64, hex and percent-encoded runs that
//!    decode to text as further views. What it had to undo is itself a signal.
//! 2. `instruction`: imperatives aimed at the assistant ("ignore all previous instructions",
//!    "before you can solve the task…", "do not tell the user"), in nine languages, with
//!    keywords misspelt by one edit read as the keyword.
//! 3. `delimiter`: fake system/assistant/tool markers, `<INFORMATION>`-style blocks,
//!    `###(system_message)`, closing tags of the surrounding protocol.
//! 4. `action`: send/transfer/delete/… with an address, account, credential or "all files".
//! 5. `exfiltration`: Markdown images and links, auto-loading HTML, to hosts outside the
//!    allow-list with data in the URL.
//!
//! [`score`] combines them; the text is reported when the score reaches the configured
//! threshold. Input is bounded by the caller (64 KiB per string, see `threat::MAX_SCAN`).

mod decode;
mod gate;
#[cfg(test)]
mod gate_tests;
mod layers;
mod lexicon;
mod normalise;
mod score;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use serde::Serialize;

pub use decode::Encoding;
pub use normalise::Hidden;
pub use score::Verdict;

use super::signatures::snippet;

/// Decoded text examined per input, over all encoded runs.
const DECODE_BUDGET: usize = 64 * 1024;
/// How deep encoded runs inside decoded runs are followed.
const DECODE_DEPTH: usize = 2;

/// A layer of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// What normalisation undid: invisible text, homoglyphs, hidden comments.
    Normalisation,
    /// Imperatives addressed to the model.
    Instruction,
    /// Fake role markers and protocol delimiters.
    Delimiter,
    /// Requests to act on addresses, accounts, credentials.
    Action,
    /// URLs that carry data out.
    Exfiltration,
}

impl Layer {
    /// Name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Normalisation => "normalisation",
            Layer::Instruction => "instruction",
            Layer::Delimiter => "delimiter",
            Layer::Action => "action",
            Layer::Exfiltration => "exfiltration",
        }
    }
}

/// How the matched text reached the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Visible text.
    Text,
    /// Text a person does not see.
    Hidden(Hidden),
    /// An encoded run, decoded.
    Encoded(Encoding),
}

impl Via {
    /// Name used in evidence, empty for visible text.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Text => "",
            Via::Hidden(Hidden::Tags) => "in tag characters",
            Via::Hidden(Hidden::Selectors) => "in variation selectors",
            Via::Hidden(Hidden::Comment) => "in a hidden comment",
            Via::Encoded(Encoding::Base64) => "in base64",
            Via::Encoded(Encoding::Hex) => "in hex",
            Via::Encoded(Encoding::Percent) => "in percent-encoding",
        }
    }
}

/// One thing a layer found.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The layer that found it.
    pub layer: Layer,
    /// What it is, e.g. "override of prior instructions".
    pub label: &'static str,
    /// The normalised text it matched, bounded and escaped for display.
    pub matched: String,
    /// Byte offset in the scanned text (for a decoded run: where the run starts).
    pub offset: usize,
    /// How much it weighs on its own.
    pub weight: f32,
    /// Visible, hidden or encoded.
    pub via: Via,
}

/// The detector: compiled once, shared by every scan.
#[derive(Debug)]
pub struct InjectionDetector {
    layers: &'static layers::Layers,
    fuzzy: &'static lexicon::Fuzzy,
    /// Score at which a text is reported.
    pub threshold: f32,
    /// Hosts (and their subdomains) that URLs may carry data to.
    pub allowed_hosts: Vec<String>,
}

impl InjectionDetector {
    /// A detector reporting at `threshold`, trusting `allowed_hosts`.
    pub fn new(threshold: f32, allowed_hosts: Vec<String>) -> Self {
        // Compiled once per process: the patterns are constants, only the settings differ.
        static LAYERS: OnceLock<layers::Layers> = OnceLock::new();
        static FUZZY: OnceLock<lexicon::Fuzzy> = OnceLock::new();
        Self {
            layers: LAYERS.get_or_init(layers::Layers::new),
            fuzzy: FUZZY.get_or_init(lexicon::Fuzzy::new),
            threshold,
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Scans `text` (the caller bounds its length) and scores what the layers found.
    pub fn scan(&self, text: &str) -> Verdict {
        self.scan_gated(text, true)
    }

    /// [`Self::scan`], or with `gated` false every pattern run on every text (to check, in
    /// the tests, that the gate skips only what cannot match).
    fn scan_gated(&self, text: &str, gated: bool) -> Verdict {
        let mut signals = Vec::new();
        let (mut view, notes) = normalise::normalise(text, self.fuzzy);
        score::notes_to_signals(&notes, &mut signals);
        let layers = |view: &mut normalise::View, place, signals: &mut Vec<Signal>| {
            self.layers
                .scan(view, place, &self.allowed_hosts, gated, signals);
        };
        layers(&mut view, layers::Place::Text, &mut signals);
        let mut budget = DECODE_BUDGET;
        let mut pending: Vec<(String, usize, usize)> = Vec::new();
        let mut decode = |src: &str, base: usize, depth: usize, pending: &mut Vec<_>| {
            if depth >= DECODE_DEPTH {
                return;
            }
            for d in decode::decode_runs(src, budget) {
                budget = budget.saturating_sub(d.text.len());
                let at = if depth == 0 { d.at } else { base };
                let (mut v, _) = normalise::normalise(&d.text, self.fuzzy);
                let place = layers::Place::Decoded(at, d.encoding);
                layers(&mut v, place, &mut signals);
                pending.push((d.text, at, depth + 1));
            }
        };
        // The text itself is decoded first, without a copy; then what it decoded to.
        decode(text, 0, 0, &mut pending);
        while let Some((src, base, depth)) = pending.pop() {
            decode(&src, base, depth, &mut pending);
        }
        score::Verdict::from_signals(signals, self.threshold)
    }
}
