//! The layers after normalisation, run on each view of the text (the text itself and each
//! encoded run decoded from it): instruction and delimiter phrases, action requests that do
//! not belong in data, and exfiltration channels (Markdown images and links, auto-loading
//! HTML). Each match becomes a [`Signal`] with its layer, what matched and where.

use regex::Regex;

use super::gate::Gate;
use super::lexicon::{compile, imperative_at, phrases, Phrase, Target, TARGETS, VERBS, VERBS_CJK};
use super::normalise::{Hidden, View};
use super::{snippet, Layer, Signal, Via};

/// Matches of one pattern looked at per view; more add nothing to the score.
const MAX_MATCHES: usize = 64;
/// How far after a verb its objects are looked for.
const OBJECT_WINDOW: usize = 200;

/// Every compiled pattern of the layers.
#[derive(Debug)]
pub(crate) struct Layers {
    phrases: Vec<Phrase>,
    /// Says which patterns may match a text, by index: the phrases, then the rest in the
    /// order of [`Slot`].
    gate: Gate,
    verb: Regex,
    targets: Vec<(Target, Regex)>,
    /// The same gate for the targets alone, run on the window after a verb.
    target_gate: Gate,
    hidden: Regex,
    md_image: Regex,
    md_link: Regex,
    html_load: Regex,
}

/// Index of a pattern after the phrases in the gate.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Hidden,
    MdImage,
    MdLink,
    HtmlLoad,
    Verb,
    /// The targets follow, in the order of [`TARGETS`].
    Targets,
}

/// Where a view's offsets point in the input.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place {
    /// The text itself.
    Text,
    /// An encoded run decoded, at this input offset.
    Decoded(usize, super::decode::Encoding),
}

/// Which patterns may match one view, as the gate said.
struct Open<'a> {
    open: &'a [bool],
    phrases: usize,
    /// Whether windows are gated too.
    gated: bool,
}

impl Open<'_> {
    fn slot(&self, s: Slot) -> bool {
        self.open[self.phrases + s as usize]
    }

    fn target(&self, i: usize) -> bool {
        self.open[self.phrases + Slot::Targets as usize + i]
    }
}

impl Layers {
    pub fn new() -> Self {
        let (phrases, mut sources) = phrases();
        let mut one = |p: &str| {
            let (re, src) = compile(p);
            sources.push(src);
            re
        };
        // In the order of `Slot`.
        let hidden = one(
            r"<!--[\s\S]*?(?:-->|\z)|^\[(?://|comment)\]:\s*<?#?>?\s*\([^\n]*\)|<[a-z]+[^>]*?style\s*=\s*[\x22'][^\x22']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0|opacity\s*:\s*0)[^>]*>[\s\S]*?</",
        );
        let md_image = one(r"!\[[^\]\n]*\]\(\s*<?([^\s)>]+)");
        let md_link = one(r"(?:^|[^!])\[[^\]\n]*\]\(\s*<?([^\s)>]+)");
        let html_load = one(
            r"<\s*(?:img|image|iframe|frame|script|link|embed|object|video|audio|source|input|body|meta|track)\b[^>]*?\b(?:src|href|data|background|poster|srcset|content)\s*=\s*[\x22']?([^\x22'\s>]+)",
        );
        let verb = one(&format!(r"\b{VERBS}(?:\b|\s|$)|{VERBS_CJK}"));
        let targets = TARGETS.iter().map(|(t, p)| (*t, one(p))).collect();
        let target_sources = &sources[sources.len() - TARGETS.len()..];
        Self {
            target_gate: Gate::new(target_sources.iter().map(String::as_str)),
            gate: Gate::new(sources.iter().map(String::as_str)),
            phrases,
            verb,
            targets,
            hidden,
            md_image,
            md_link,
            html_load,
        }
    }

    /// How many patterns the gate decides on.
    pub fn pattern_count(&self) -> usize {
        self.phrases.len() + Slot::Targets as usize + self.targets.len()
    }

    /// Every pattern in gate order, and the gate, for the tests.
    #[cfg(test)]
    pub fn patterns(&self) -> (Vec<&Regex>, &Gate) {
        let mut all: Vec<&Regex> = self.phrases.iter().map(|p| &p.re).collect();
        all.extend([
            &self.hidden,
            &self.md_image,
            &self.md_link,
            &self.html_load,
            &self.verb,
        ]);
        all.extend(self.targets.iter().map(|(_, re)| re));
        (all, &self.gate)
    }

    /// Runs every layer on `view`; signals go to `out`. With `gated` false, every pattern
    /// runs (to check, in the tests, that the gates skip only what cannot match).
    pub fn scan(
        &self,
        view: &mut View,
        place: Place,
        allowed: &[String],
        gated: bool,
        out: &mut Vec<Signal>,
    ) {
        let open = match gated {
            true => self.gate.open(&view.text),
            false => vec![true; self.pattern_count()],
        };
        let open = Open {
            open: &open,
            phrases: self.phrases.len(),
            gated,
        };
        if open.slot(Slot::Hidden) {
            for m in self.hidden.find_iter(&view.text).take(MAX_MATCHES) {
                view.hidden.push((m.start(), m.end(), Hidden::Comment));
            }
        }
        let view = &*view;
        let at = |pos: usize| match place {
            Place::Text => view.original_offset(pos),
            Place::Decoded(a, _) => a,
        };
        let via = |pos: usize| match (place, view.hidden_at(pos)) {
            (Place::Decoded(_, e), _) => Via::Encoded(e),
            (Place::Text, Some(h)) => Via::Hidden(h),
            (Place::Text, None) => Via::Text,
        };
        let mut push = |layer, label, weight, s: usize, e: usize| {
            out.push(Signal {
                layer,
                label,
                matched: snippet(&view.text[s..floor(&view.text, e)]),
                offset: at(s),
                weight,
                via: via(s),
            });
        };
        for p in self
            .phrases
            .iter()
            .zip(open.open)
            .filter_map(|(p, &o)| o.then_some(p))
        {
            let matches = p.re.find_iter(&view.text);
            let ordered = matches.filter(|m| !p.imperative || imperative_at(&view.text, m.start()));
            for m in ordered.take(MAX_MATCHES) {
                let s = trim_start(&view.text, m.start(), m.end());
                let (label, weight) = match p.label {
                    MENTION if !describes(&view.text, s) => (OVERRIDE, 0.9),
                    l => (l, p.weight),
                };
                push(p.layer, label, weight, s, m.end());
            }
        }
        // Every action request names a target; with none possible, no verb is looked at.
        let targets = (0..self.targets.len()).any(|i| open.target(i));
        if open.slot(Slot::Verb) && targets {
            self.actions(&view.text, &open, &mut push);
        }
        self.channels(&view.text, &open, allowed, &mut push);
    }

    /// Action requests: an imperative verb with an object that does not belong in data.
    fn actions(
        &self,
        text: &str,
        open: &Open<'_>,
        push: &mut impl FnMut(Layer, &'static str, f32, usize, usize),
    ) {
        let verbs = self.verb.find_iter(text);
        let ordered = verbs.filter(|m| imperative_at(text, m.start()) || is_cjk(m.as_str()));
        for m in ordered.take(MAX_MATCHES) {
            let s = trim_start(text, m.start(), m.end());
            let end = sentence_end(text, m.end());
            // Objects are looked for only after an ordering verb, in its sentence.
            let window = &text[m.end()..end];
            let (mut kinds, mut last) = (0u32, m.end());
            let here = match open.gated {
                true => self.target_gate.open(window),
                false => vec![true; self.targets.len()],
            };
            for (i, (t, re)) in self.targets.iter().enumerate() {
                // A target the gates closed cannot match in the text or in this window.
                if !open.target(i) || !here[i] {
                    continue;
                }
                if let Some(o) = re.find(window) {
                    kinds |= 1 << *t as u32;
                    last = last.max(m.end() + o.end());
                }
            }
            let has = |t: Target| kinds & (1 << t as u32) != 0;
            let outside = has(Target::Address) || has(Target::Url);
            let verb = &text[s..m.end()];
            let kind = verb_kind(verb);
            let (label, weight) = if has(Target::Credential) && outside && kind.moves() {
                ("credential sent out", 0.8)
            } else if has(Target::Bulk) && outside && kind.moves() {
                ("bulk data sent out", 0.7)
            } else if has(Target::Bulk) && kind == Verb::Destroys {
                ("bulk deletion", 0.6)
            } else if has(Target::Tool) && kind == Verb::Calls {
                let harmful = [
                    "delete", "remove", "transfer", "send", "drop", "wipe", "pay",
                ]
                .iter()
                .any(|w| text[m.end()..end].contains(w));
                ("tool call requested", if harmful { 0.7 } else { 0.4 })
            } else if has(Target::Script) && outside {
                ("download and run", 0.6)
            } else if has(Target::Account) && kind.moves() {
                ("payment to an account", 0.6)
            } else if has(Target::Credential) && kind.moves() {
                ("credential requested", 0.5)
            } else if has(Target::Access) && kind == Verb::Changes {
                let wide = outside
                    || ["permanent", "full", "admin", "owner", "unrestricted"]
                        .iter()
                        .any(|w| text[s..end].contains(w));
                ("access granted", if wide { 0.5 } else { 0.4 })
            } else if has(Target::Money) && kind.moves() {
                ("payment", 0.3)
            } else if outside {
                ("sent to an outside address", 0.2)
            } else {
                continue;
            };
            // An order written as a task item is addressed to whoever works through the list.
            let (label, weight) = match task_label_before(text, s) {
                true => (label, weight * 1.6),
                false => (label, weight),
            };
            push(
                Layer::Action,
                label,
                weight,
                s,
                last.min(s + 160).min(text.len()),
            );
        }
    }

    /// Exfiltration channels: URLs that load by themselves and carry data in their query.
    fn channels(
        &self,
        text: &str,
        open: &Open<'_>,
        allowed: &[String],
        push: &mut impl FnMut(Layer, &'static str, f32, usize, usize),
    ) {
        for (re, slot, loads) in [
            (&self.md_image, Slot::MdImage, true),
            (&self.html_load, Slot::HtmlLoad, true),
            (&self.md_link, Slot::MdLink, false),
        ] {
            if !open.slot(slot) {
                continue;
            }
            for c in re.captures_iter(text).take(MAX_MATCHES) {
                let (Some(all), Some(url)) = (c.get(0), c.get(1)) else {
                    continue;
                };
                // A slot may hold spaces: `?q=[INSERT CONVERSATION HERE]`.
                let after = &text[url.end()..floor(text, url.end() + 80)];
                let slot_rest = after.split([')', '\n']).next().unwrap_or("");
                let Some(carries) = carried_data(url.as_str(), slot_rest, allowed) else {
                    continue;
                };
                let (label, weight) = match (loads, carries) {
                    (true, Carried::DataSlot | Carried::NamedData) => {
                        ("auto-loading URL carries data", 1.0)
                    }
                    (true, Carried::Slot) => ("auto-loading URL with a slot", 1.0),
                    (true, Carried::Encoded) => ("auto-loading URL with encoded query", 0.3),
                    (false, Carried::DataSlot) => ("link with a slot for data", 0.9),
                    (false, Carried::Slot) => ("link with a slot", 0.3),
                    (_, Carried::PathSlot) => ("URL template", 0.2),
                    (false, Carried::NamedData | Carried::Encoded) => continue,
                };
                let s = trim_start(text, all.start(), all.end());
                push(
                    Layer::Exfiltration,
                    label,
                    weight,
                    s,
                    all.end().min(s + 160),
                );
            }
        }
    }
}

/// What an action verb does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// Sends, pays, copies, reads: moves the object somewhere.
    Moves,
    /// Deletes.
    Destroys,
    /// Grants, changes, resets.
    Changes,
    /// Opens, visits, downloads, runs.
    Navigates,
    /// Calls a tool.
    Calls,
}

impl Verb {
    fn moves(self) -> bool {
        matches!(self, Verb::Moves | Verb::Changes)
    }
}

fn verb_kind(verb: &str) -> Verb {
    const DESTROYS: &[&str] = &[
        "delete",
        "remove",
        "erase",
        "wipe",
        "purge",
        "destroy",
        "losche",
        "entferne",
        "supprime",
        "efface",
        "borra",
        "elimina",
        "cancella",
        "exclua",
        "apague",
        "удали",
        "删除",
        "削除",
    ];
    const CHANGES: &[&str] = &[
        "grant", "give", "invite", "add", "change", "reset", "update", "set", "disable", "unlock",
        "gib",
    ];
    const NAVIGATES: &[&str] = &[
        "visit", "open", "navigate", "go to", "click", "download", "install", "run", "execute",
        "create", "schedule", "book", "buy", "sell", "purchase",
    ];
    let has = |list: &[&str]| list.iter().any(|w| verb.contains(w));
    if verb.ends_with("call") || verb.ends_with("invoke") {
        Verb::Calls
    } else if has(DESTROYS) {
        Verb::Destroys
    } else if has(NAVIGATES) {
        Verb::Navigates
    } else if has(CHANGES) {
        Verb::Changes
    } else {
        Verb::Moves
    }
}

/// What a URL carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// A slot for the model to fill with data: `{data}`, `<summary>`, `[secret]`, `$HISTORY`.
    DataSlot,
    /// Some other slot in the query: `?id={id}`.
    Slot,
    /// A slot in the path only, as templates have.
    PathSlot,
    /// A parameter named for what it exfiltrates (`data=`, `secret=`, `history=`).
    NamedData,
    /// A long encoded value.
    Encoded,
}

fn carried_data(url: &str, slot_rest: &str, allowed: &[String]) -> Option<Carried> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("//"))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..host_end].rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    let trusted = allowed.iter().any(|a| {
        host == a
            || host
                .strip_suffix(a.as_str())
                .is_some_and(|p| p.ends_with('.'))
    });
    if trusted || host.is_empty() {
        return None;
    }
    let tail = &rest[host_end..];
    let slot = |s: &str| {
        s.contains(['{', '}', '<', '>', '[', ']', '$'])
            || ["%7b", "%7d", "%3c", "%3e", "%5b", "%5d"]
                .iter()
                .any(|p| s.contains(p))
    };
    // Templates put slots in paths too (`/{{ user }}.png`); data goes out in the query.
    let query_at = tail.find(['?', '#']);
    let in_query = query_at.is_some_and(|q| slot(&tail[q..]));
    if in_query {
        const DATA: &[&str] = &[
            "data",
            "email",
            "conversation",
            "summary",
            "history",
            "secret",
            "password",
            "key",
            "token",
            "chat",
            "message",
            "info",
            "name",
            "address",
            "context",
            "memory",
            "content",
            "user",
            "ssn",
            "card",
            "code",
            "credential",
        ];
        let lower = format!("{tail}{slot_rest}").to_ascii_lowercase();
        let named = DATA.iter().any(|d| lower.contains(d));
        return Some(if named {
            Carried::DataSlot
        } else {
            Carried::Slot
        });
    }
    if slot(tail) {
        return Some(Carried::PathSlot);
    }
    let (_, query) = tail.split_once('?')?;
    const NAMED: &[&str] = &[
        "data",
        "d",
        "secret",
        "secrets",
        "exfil",
        "leak",
        "conversation",
        "conv",
        "history",
        "chat",
        "summary",
        "payload",
        "memory",
        "context",
        "password",
        "pwd",
        "token",
        "apikey",
        "api_key",
        "key",
        "ssn",
        "cc",
        "creds",
        "credentials",
        "stolen",
        "dump",
    ];
    let mut carried = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if NAMED.contains(&k) && v.len() >= 3 && !v.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Carried::NamedData);
        }
        if v.len() >= 24 {
            carried = Some(Carried::Encoded);
        }
    }
    carried
}

const MENTION: &str = "mention of ignoring instructions";
const OVERRIDE: &str = "override of prior instructions";

/// Whether the phrase at `at` describes ignoring instructions rather than ordering it: a
/// gerund, or a verb after "to", a modal, a subject or a frequency adverb ("attackers may ask
/// the model to ignore its instructions", "users often ignore the previous instructions").
fn describes(text: &str, at: usize) -> bool {
    const DESCRIPTIVE: &[&str] = &[
        "to",
        "can",
        "could",
        "may",
        "might",
        "will",
        "would",
        "shall",
        "not",
        "never",
        "don't",
        "dont",
        "doesn't",
        "didn't",
        "won't",
        "cannot",
        "can't",
        "you",
        "they",
        "it",
        "he",
        "she",
        "we",
        "i",
        "model",
        "ai",
        "assistant",
        "llm",
        "agent",
        "agents",
        "models",
        "attacker",
        "attackers",
        "someone",
        "users",
        "user",
        "them",
        "him",
        "her",
        "often",
        "sometimes",
        "usually",
        "always",
        "frequently",
        "typically",
        "rarely",
        "generally",
        "who",
        "which",
        "that",
        "how",
        "or",
        "safely",
        "should",
        "must",
    ];
    let verb = text[at..]
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    if verb.ends_with("ing") || verb.ends_with("ed") || verb.ends_with('s') {
        return true;
    }
    let before = text[..at].trim_end();
    if before.ends_with(|c: char| !c.is_alphanumeric() && c != '\'') {
        return false; // a sentence, clause or line starts here
    }
    let prev = before
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '\''))
        .next()
        .unwrap_or("");
    DESCRIPTIVE.contains(&prev)
}

/// Whether the verb at `at` is ordered as a task: "TODO: send…", "Action required: transfer…".
fn task_label_before(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end();
    let before = before.strip_suffix("please").unwrap_or(before).trim_end();
    let Some(label) = before.strip_suffix(':') else {
        return false;
    };
    let label = label.trim_end();
    [
        "todo",
        "to-do",
        "action required",
        "action item",
        "task",
        "next step",
        "ai task",
    ]
    .iter()
    .any(|l| label.ends_with(l))
}

/// Whether `s` is written in a script without spaces, where imperatives have no position.
fn is_cjk(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x9FFF | 0xF900..=0xFAFF))
}

/// `i`, or the char boundary before it, at most the length of `text`.
fn floor(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Start of a match without the punctuation and space of its imperative position.
fn trim_start(text: &str, s: usize, e: usize) -> usize {
    text[s..e]
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric() || matches!(c, '<' | '[' | '#' | '!' | '('))
        .map_or(s, |(i, _)| s + i)
}

/// End of the sentence that starts before `from`: the next full stop followed by a space, or
/// the end of the line, at most [`OBJECT_WINDOW`] bytes on.
fn sentence_end(text: &str, from: usize) -> usize {
    let limit = floor(text, from + OBJECT_WINDOW);
    let window = &text.as_bytes()[from..limit];
    for (i, &b) in window.iter().enumerate() {
        let next = window.get(i + 1).copied().unwrap_or(b' ');
        let stop = matches!(b, b'.' | b'!' | b'?' | b';') && next.is_ascii_whitespace();
        if b == b'\n' || b == b'<' || stop {
            return from + i;
        }
    }
    limit
}
