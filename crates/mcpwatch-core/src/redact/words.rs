//! Splitting key names into words: `X-Api-Key`, `apiKey` and `API_KEY` all give `api key`.

/// Most words of a key that are told apart; the rest count as part of the last.
pub(crate) const MAX_KEY_WORDS: usize = 16;

/// The byte spans of the words of `key` (see [`words`]), without allocating.
pub(crate) fn word_spans(key: &str, out: &mut [(usize, usize); MAX_KEY_WORDS]) -> usize {
    let mut n = 0;
    let mut push = |start: usize, end: usize, n: &mut usize| {
        if *n < MAX_KEY_WORDS {
            out[*n] = (start, end);
            *n += 1;
        } else {
            out[MAX_KEY_WORDS - 1].1 = end;
        }
    };
    let mut start: Option<usize> = None;
    let mut prev: Option<char> = None;
    let mut chars = key.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, c)| c);
        if !c.is_alphanumeric() {
            if let Some(s) = start.take() {
                push(s, i, &mut n);
            }
        } else {
            let boundary = c.is_uppercase()
                && prev.is_some_and(|p| {
                    p.is_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
                });
            if boundary {
                if let Some(s) = start.take() {
                    push(s, i, &mut n);
                }
            }
            start.get_or_insert(i);
        }
        prev = Some(c);
    }
    if let Some(s) = start {
        push(s, key.len(), &mut n);
    }
    n
}

/// Splits a key into lowercase words at separators and camelCase boundaries:
/// `X-Api-Key` and `apiKey` both give `[api, key]` (after `x`).
pub(crate) fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
