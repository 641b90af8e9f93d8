//! Combining the layers into one score: each (layer, label) counts once, at its strongest
//! match; a layer contributes its strongest signal plus a share of the others, at most
//! [`LAYER_CAP`]; text that matched while hidden or encoded
//! adds a normalisation signal of its own. The text is reported when the sum reaches the
//! threshold, so one strong signal (an override of prior instructions, tag characters, a
//! fake system message, an image URL with a slot for data) or two weaker ones in different
//! layers (an `<INFORMATION>` block and a request to send a password) suffice, while one weak
//! signal (a "TODO:" with an order, a request to e-mail someone) does not.

use super::normalise::Notes;
use super::{Layer, Signal, Via};

/// Most one layer adds to the score.
const LAYER_CAP: f32 = 1.5;
/// Share of a layer's weaker signals added to its strongest: signals of one layer in
/// different sentences (a payment here, a deletion there) are what ordinary text has too,
/// while signals of different layers together are what an injection has.
const CORROBORATION: f32 = 0.3;

/// What the detector concluded about one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Sum over layers.
    pub score: f32,
    /// The threshold it was judged against.
    pub threshold: f32,
    /// What each layer found, strongest first, one per (layer, label).
    pub signals: Vec<Signal>,
}

impl Verdict {
    /// Whether the text is reported.
    pub fn fires(&self) -> bool {
        self.score >= self.threshold
    }

    /// The layers that found something, in pipeline order.
    pub fn layers(&self) -> Vec<Layer> {
        let mut l: Vec<Layer> = self.signals.iter().map(|s| s.layer).collect();
        l.sort_unstable();
        l.dedup();
        l
    }

    pub(crate) fn from_signals(mut all: Vec<Signal>, threshold: f32) -> Self {
        let concealed = all
            .iter()
            .find(|s| s.layer != Layer::Normalisation && s.via != Via::Text)
            .map(|s| (s.offset, s.via, s.matched.clone()));
        if let Some((offset, via, matched)) = concealed {
            all.push(Signal {
                layer: Layer::Normalisation,
                label: "instructions in concealed text",
                matched,
                offset,
                weight: 0.3,
                via,
            });
        }
        all.sort_by(|a, b| {
            (a.layer, a.label)
                .cmp(&(b.layer, b.label))
                .then(b.weight.total_cmp(&a.weight))
                .then(a.offset.cmp(&b.offset))
        });
        all.dedup_by(|b, a| a.layer == b.layer && a.label == b.label);
        let mut score = 0.0;
        let (mut top, mut rest) = (0.0f32, 0.0f32);
        for (i, s) in all.iter().enumerate() {
            rest += s.weight.min(top);
            top = top.max(s.weight);
            if all.get(i + 1).is_none_or(|n| n.layer != s.layer) {
                score += f32::min(top + CORROBORATION * rest, LAYER_CAP);
                (top, rest) = (0.0, 0.0);
            }
        }
        all.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.offset.cmp(&b.offset)));
        Verdict {
            score,
            threshold,
            signals: all,
        }
    }
}

/// What normalisation undid, as signals.
pub(crate) fn notes_to_signals(n: &Notes, out: &mut Vec<Signal>) {
    let mut push = |label, matched: String, offset, weight, via| {
        out.push(Signal {
            layer: Layer::Normalisation,
            label,
            matched,
            offset,
            weight,
            via,
        })
    };
    if n.tags > 0 {
        let text = super::snippet(&n.tag_text);
        let label = "text in invisible tag characters";
        push(
            label,
            text,
            n.tags_at,
            1.0,
            Via::Hidden(super::Hidden::Tags),
        );
    }
    if n.selectors > 0 {
        let text = super::snippet(&n.selector_text);
        let label = "text in variation selectors";
        push(
            label,
            text,
            n.selectors_at,
            1.0,
            Via::Hidden(super::Hidden::Selectors),
        );
    }
    if n.split_words > 0 {
        let label = "zero-width characters inside words";
        let weight = if n.split_words >= 3 { 0.4 } else { 0.2 };
        push(
            label,
            format!("{} of them", n.split_words),
            n.split_at,
            weight,
            Via::Text,
        );
    }
    if n.bidi > 0 {
        let label = "bidi override or isolate";
        push(
            label,
            format!("{} of them", n.bidi),
            n.bidi_at,
            0.3,
            Via::Text,
        );
    }
    if n.confusables > 0 {
        let label = "letters of another script that look Latin";
        let text = super::snippet(&n.confusable_word);
        push(label, text, n.confusable_at, 0.4, Via::Text);
    }
}
