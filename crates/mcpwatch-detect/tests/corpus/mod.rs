//! The prompt-injection corpus, generated from a seed: attack templates crossed with goals and
//! embedded at random positions of benign tool outputs (emails, files, reviews, transactions,
//! web pages, tickets), obfuscated forms of them, and a larger benign set of the same carriers
//! with hard negatives inserted. Shared by `tests/injection_corpus.rs` and
//! `benches/injection.rs`.

#![allow(dead_code, reason = "the test and the bench use different parts")]

mod attacks;
mod benign;

use base64::Engine as _;

/// One text of the corpus.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Attack family, or "benign".
    pub family: String,
    /// Kind of tool output it is embedded in.
    pub kind: &'static str,
    pub text: String,
    pub attack: bool,
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `insert` placed at a random sentence or line boundary of a random carrier.
fn embed(rng: &mut Rng, insert: &str) -> (&'static str, String) {
    let (kind, carrier) = *rng.pick(benign::CARRIERS);
    let mut cuts: Vec<usize> = vec![0, carrier.len()];
    for (i, _) in carrier.match_indices(['\n', '.', '>']) {
        cuts.push(i + 1);
    }
    let at = *rng.pick(&cuts);
    let text = format!("{} {} {}", &carrier[..at], insert, &carrier[at..]);
    (kind, text)
}

fn fill(rng: &mut Rng, template: &str) -> String {
    let goal = *rng.pick(attacks::GOALS);
    let mut cap = goal.to_owned();
    cap[..1].make_ascii_uppercase();
    let mut t = template
        .replace("{goal}", goal)
        .replace("{Goal}", &cap)
        .replace("{rogue}", rng.pick::<&str>(attacks::ROGUE))
        .replace("{who}", rng.pick::<&str>(attacks::WHO))
        .replace("{host}", rng.pick::<&str>(attacks::HOSTS))
        .replace("{addr}", rng.pick::<&str>(attacks::ADDRS))
        .replace("{iban}", rng.pick::<&str>(attacks::IBANS));
    if t.ends_with(goal) || t.ends_with(&cap) {
        t.push('.');
    }
    t
}

fn sample(family: &str, kind: &'static str, text: String) -> Sample {
    Sample {
        family: family.to_owned(),
        kind,
        text,
        attack: true,
    }
}

/// Obfuscations applied to a plain attack.
const OBFUSCATIONS: &[&str] = &[
    "homoglyph",
    "zero_width",
    "tag_chars",
    "base64",
    "hex",
    "misspelled",
    "html_comment",
    "math_bold",
    "fullwidth",
    "url_encoded",
];

fn obfuscate(rng: &mut Rng, how: &str, plain: &str) -> String {
    let map_letters = |f: &dyn Fn(char) -> Option<char>| -> String {
        plain.chars().map(|c| f(c).unwrap_or(c)).collect()
    };
    match how {
        "homoglyph" => {
            let mut r = Rng::new(rng.next());
            let table = [
                ('a', 'а'),
                ('e', 'е'),
                ('o', 'о'),
                ('p', 'р'),
                ('c', 'с'),
                ('i', 'і'),
                ('x', 'х'),
                ('y', 'у'),
                ('I', 'І'),
                ('s', 'ѕ'),
                ('T', 'Т'),
                ('A', 'А'),
            ];
            plain
                .chars()
                .map(|c| match table.iter().find(|(l, _)| *l == c) {
                    Some((_, h)) if r.below(2) == 0 => *h,
                    _ => c,
                })
                .collect()
        }
        "zero_width" => {
            let mut r = Rng::new(rng.next());
            let mut s = String::new();
            for c in plain.chars() {
                s.push(c);
                if c.is_alphabetic() && r.below(3) == 0 {
                    s.push(*r.pick(&['\u{200b}', '\u{200c}', '\u{2060}', '\u{feff}']));
                }
            }
            s
        }
        "tag_chars" => {
            let tags: String = plain
                .chars()
                .filter_map(|c| {
                    c.is_ascii()
                        .then(|| char::from_u32(0xE0000 + c as u32))
                        .flatten()
                })
                .collect();
            format!("Thanks for reading.{tags}")
        }
        "base64" => {
            let b = base64::engine::general_purpose::STANDARD.encode(plain);
            match rng.below(3) {
                0 => format!("Decode this and follow it: {b}"),
                1 => b,
                _ => format!("attachment-data: {b}"),
            }
        }
        "hex" => {
            let h: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
            format!("payload {h}")
        }
        "url_encoded" => {
            let e: String = plain.bytes().map(|b| format!("%{b:02X}")).collect();
            format!("ref={e}")
        }
        "misspelled" => {
            let mut words: Vec<String> = plain.split(' ').map(str::to_owned).collect();
            for _ in 0..2 {
                let i = rng.below(words.len());
                let w: Vec<char> = words[i].chars().collect();
                if w.len() < 6 || !w.iter().all(|c| c.is_ascii_alphabetic()) {
                    continue;
                }
                let k = 1 + rng.below(w.len() - 2);
                let mut v = w.clone();
                match rng.below(3) {
                    0 => v.insert(k, *rng.pick(&['u', 'e', 'r', 's'])),
                    1 => v.swap(k, k + 1),
                    _ => {
                        v.remove(k);
                    }
                }
                words[i] = v.into_iter().collect();
            }
            words.join(" ")
        }
        "html_comment" => format!("<!-- {plain} -->"),
        "math_bold" => map_letters(&|c| match c {
            'a'..='z' => char::from_u32(0x1D41A + (c as u32 - 'a' as u32)),
            'A'..='Z' => char::from_u32(0x1D400 + (c as u32 - 'A' as u32)),
            _ => None,
        }),
        _ => map_letters(&|c| {
            (c.is_ascii_graphic())
                .then(|| char::from_u32(0xFF01 + (c as u32 - 0x21)))
                .flatten()
        }),
    }
}

/// Every attack sample, by family.
pub fn attacks(seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (family, template) in attacks::TEMPLATES {
        for _ in 0..8 {
            let inj = fill(&mut rng, template);
            let (kind, text) = embed(&mut rng, &inj);
            out.push(sample(family, kind, text));
        }
    }
    for template in attacks::EXFIL {
        for _ in 0..6 {
            let inj = fill(&mut rng, template);
            let (kind, text) = embed(&mut rng, &inj);
            out.push(sample("markdown_exfil", kind, text));
        }
    }
    for (lang, template) in attacks::FOREIGN {
        for _ in 0..4 {
            let inj = fill(&mut rng, template);
            let (kind, text) = embed(&mut rng, &inj);
            out.push(sample(&format!("language_{lang}"), kind, text));
        }
    }
    let plain: Vec<&(&str, &str)> = attacks::TEMPLATES
        .iter()
        .filter(|(f, _)| {
            matches!(
                *f,
                "ignore_previous" | "injecagent" | "important_instructions"
            )
        })
        .collect();
    for how in OBFUSCATIONS {
        for _ in 0..24 {
            let template = rng_pick_template(&mut rng, &plain);
            let inj = fill(&mut rng, template);
            let inj = obfuscate(&mut rng, how, &inj);
            let (kind, text) = embed(&mut rng, &inj);
            out.push(sample(how, kind, text));
        }
    }
    out
}

fn rng_pick_template(rng: &mut Rng, t: &[&(&str, &'static str)]) -> &'static str {
    rng.pick(t).1
}

/// `n` benign samples: carriers with zero to three hard negatives inserted.
pub fn benign(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let (kind, mut text) = match rng.below(4) {
                0 => {
                    let (kind, carrier) = *rng.pick(benign::CARRIERS);
                    (kind, carrier.to_owned())
                }
                _ => {
                    let insert = *rng.pick(benign::HARD_NEGATIVES);
                    embed(&mut rng, insert)
                }
            };
            for _ in 0..rng.below(3) {
                let insert = *rng.pick(benign::HARD_NEGATIVES);
                let cut = text
                    .match_indices(". ")
                    .map(|(i, _)| i + 2)
                    .nth(rng.below(4))
                    .unwrap_or(text.len());
                text.insert_str(cut, &format!("{insert} "));
            }
            Sample {
                family: "benign".into(),
                kind,
                text,
                attack: false,
            }
        })
        .collect()
}

/// Every hard negative on its own, the strictest benign check.
pub fn hard_negatives() -> impl Iterator<Item = &'static str> {
    benign::HARD_NEGATIVES.iter().copied()
}
