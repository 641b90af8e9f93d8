//! Finding the servers in a client config and rewriting their launch lines in place.
//!
//! Watching a stdio server changes two values and nothing else: `command` becomes the
//! absolute path of `mcpwatch`, and `"wrap", "--name", NAME, "--", <the old command>` is
//! inserted at the front of `args` (the old command's literal is copied byte for byte, so
//! escapes and Windows paths survive). `env`, `cwd` and unknown keys are never touched.
//! Unwatching removes exactly what watching inserted, so a round trip gives the original bytes;
//! a wrapped line that was reformatted by hand is still unwrapped, with `args` rewritten.

use std::ops::Range;

use super::jsonc::{Kind, Node};

/// How a client talks to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
    /// A `type` this tool does not know; such servers are listed and left alone.
    Other(String),
}

impl Transport {
    pub fn label(&self) -> &str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
            Transport::Other(t) => t,
        }
    }
}

/// One server entry of a config file.
#[derive(Debug)]
pub struct Server<'a> {
    /// The key in the server map.
    pub name: String,
    /// Where the map is, for listings: `mcpServers`, `servers`, or `projects["/p"].mcpServers`.
    pub section: String,
    pub transport: Transport,
    pub node: &'a Node,
}

impl Server<'_> {
    /// `mcpwatch wrap` already runs it.
    pub fn watched(&self) -> bool {
        wrapped(self.node).is_some()
    }

    /// The launch line or URL, for listings.
    pub fn target(&self) -> String {
        if let Some(url) = ["url", "serverUrl"]
            .iter()
            .find_map(|k| self.node.get(k).and_then(Node::as_str))
        {
            return url.to_string();
        }
        let mut line = self
            .node
            .get("command")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string();
        for a in self
            .node
            .get("args")
            .and_then(Node::as_array)
            .unwrap_or(&[])
        {
            line.push(' ');
            line.push_str(a.as_str().unwrap_or("?"));
        }
        line
    }
}

/// Every server in the file: top-level `mcpServers` (Claude Desktop, Cursor, Windsurf,
/// Claude Code), `servers` (VS Code) and Claude Code's per-project `projects.*.mcpServers`.
pub fn servers(root: &Node) -> Vec<Server<'_>> {
    let mut out = Vec::new();
    for key in ["mcpServers", "servers"] {
        if let Some(map) = root.get(key) {
            collect(map, key.to_string(), &mut out);
        }
    }
    for project in root.get("projects").map(Node::members).unwrap_or(&[]) {
        if let Some(map) = project.value.get("mcpServers") {
            let section = format!("projects[{:?}].mcpServers", project.key);
            collect(map, section, &mut out);
        }
    }
    out
}

fn collect<'a>(map: &'a Node, section: String, out: &mut Vec<Server<'a>>) {
    for m in map.members() {
        if !matches!(m.value.kind, Kind::Object(_)) {
            continue;
        }
        out.push(Server {
            name: m.key.clone(),
            section: section.clone(),
            transport: transport(&m.value),
            node: &m.value,
        });
    }
}

fn transport(server: &Node) -> Transport {
    match server.get("type").and_then(Node::as_str) {
        Some("stdio") => Transport::Stdio,
        Some("http" | "sse" | "streamable-http" | "streamableHttp") => Transport::Http,
        Some(other) => Transport::Other(other.to_string()),
        None if server.get("command").is_some() => Transport::Stdio,
        None => Transport::Http,
    }
}

/// A replacement of `range` in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// Why a server was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("already watched")]
    AlreadyWatched,
    #[error("not watched")]
    NotWatched,
    #[error("{0} server: only stdio servers are wrapped")]
    NotStdio(String),
    #[error("http server: pass --gateway ADDR to route it through `mcpwatch gateway`")]
    NoGateway,
    #[error("sse server: the gateway speaks Streamable HTTP only")]
    Sse,
    #[error("its URL is missing or not an http(s) URL")]
    BadUrl,
    #[error("the gateway's upstream names hold only letters, digits, `.`, `_` and `-`")]
    UpstreamName,
    #[error("another server of this name goes through the gateway to {0}; the gateway has one upstream per name")]
    UpstreamTaken(String),
    #[error("`command` is missing or not a string")]
    BadCommand,
    #[error("`args` is not a list")]
    BadArgs,
    #[error("the wrap line has no command after `--`")]
    NoCommandAfterDashes,
}

/// The arguments `watch` puts in front of the server's own, up to and including its command.
fn wrap_prefix(name_literal: &str, command_literal: &str) -> String {
    format!("\"wrap\", \"--name\", {name_literal}, \"--\", {command_literal}")
}

/// What `watch` puts between the wrapped command and the server's own first argument, which
/// begins with `next`: nothing for no arguments, a comma before a line break (so that no line
/// ends in a space), else a comma and a space. `unwatch` reads it back the same way.
fn separator(empty: bool, next: Option<u8>) -> &'static str {
    match (empty, next) {
        (true, _) => "",
        (false, Some(b'\n' | b'\r')) => ",",
        (false, _) => ", ",
    }
}

/// The member `watch` adds in front of `command` when a server has no `args`.
fn added_args(prefix: &str) -> String {
    format!("\"args\": [{prefix}], ")
}

/// JSON text of a string.
pub fn literal(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The edits that put `server` behind `mcpwatch wrap --name <name>`, run by `bin`.
pub fn watch(text: &str, server: &Server<'_>, bin: &str) -> Result<Vec<Edit>, Skip> {
    if server.transport != Transport::Stdio {
        return Err(Skip::NotStdio(server.transport.label().to_string()));
    }
    if server.watched() {
        return Err(Skip::AlreadyWatched);
    }
    let command = server.node.get("command").ok_or(Skip::BadCommand)?;
    command.as_str().ok_or(Skip::BadCommand)?;
    let command_literal = &text[command.span.clone()];
    let prefix = wrap_prefix(&literal(&server.name), command_literal);
    let mut edits = vec![Edit {
        range: command.span.clone(),
        text: literal(bin),
    }];
    match server.node.get("args") {
        // Before `command`, not after it: `"command": X, "args": []` (empty args, the usual
        // order) then stays distinguishable from an `args` that watch added.
        None => {
            let at = server.node.member("command").map_or(0, |m| m.span.start);
            edits.push(Edit {
                range: at..at,
                text: added_args(&prefix),
            });
        }
        Some(args) => {
            let items = args.as_array().ok_or(Skip::BadArgs)?;
            let at = args.span.start + 1;
            let sep = separator(items.is_empty(), text.as_bytes().get(at).copied());
            edits.push(Edit {
                range: at..at,
                text: format!("{prefix}{sep}"),
            });
        }
    }
    Ok(edits)
}

/// A server `mcpwatch wrap` runs: its args array and the index of the wrapped command in it.
fn wrapped(server: &Node) -> Option<(&Node, usize)> {
    let command = server.get("command")?.as_str()?;
    let file = command.rsplit(['/', '\\']).next().unwrap_or(command);
    if !matches!(file, "mcpwatch" | "mcpwatch.exe") {
        return None;
    }
    let args = server.get("args")?;
    let items = args.as_array()?;
    if items.first()?.as_str()? != "wrap" {
        return None;
    }
    let dashes = items.iter().position(|a| a.as_str() == Some("--"))?;
    Some((args, dashes + 1))
}

/// The edits that take `server` out from behind `mcpwatch wrap`, restoring the line it had.
pub fn unwatch(text: &str, server: &Server<'_>) -> Result<Vec<Edit>, Skip> {
    let Some((args, at)) = wrapped(server.node) else {
        return Err(Skip::NotWatched);
    };
    let items = args.as_array().unwrap_or(&[]);
    let original = items.get(at).ok_or(Skip::NoCommandAfterDashes)?;
    original.as_str().ok_or(Skip::NoCommandAfterDashes)?;
    let command = server.node.get("command").ok_or(Skip::BadCommand)?;
    let mut edits = vec![Edit {
        range: command.span.clone(),
        text: text[original.span.clone()].to_string(),
    }];
    edits.push(restore_args(text, server, args, items, at));
    Ok(edits)
}

/// The edit that gives `args` back its own elements: the exact inverse of `watch` when the
/// text is as `watch` left it, else the remaining elements written out on one line.
fn restore_args(text: &str, server: &Server<'_>, args: &Node, items: &[Node], at: usize) -> Edit {
    let original = &items[at];
    let inner = args.span.start + 1;
    let name = items.get(2).map(|n| &text[n.span.clone()]).unwrap_or("");
    let prefix = wrap_prefix(name, &text[original.span.clone()]);
    let ours = items.len() > at
        && items.get(1).and_then(Node::as_str) == Some("--name")
        && at == 4
        && text.get(inner..original.span.end) == Some(prefix.as_str());
    if ours {
        let rest = items.len() > at + 1;
        if !rest {
            // `watch` added the whole member when there was no `args`.
            if let (Some(a), Some(c)) = (server.node.member("args"), server.node.member("command"))
            {
                let added = added_args(&prefix);
                if text.get(a.span.start..c.span.start) == Some(added.as_str()) {
                    return Edit {
                        range: a.span.start..c.span.start,
                        text: String::new(),
                    };
                }
            }
            return Edit {
                range: inner..original.span.end,
                text: String::new(),
            };
        }
        let end = original.span.end;
        let bytes = text.as_bytes();
        if bytes.get(end) == Some(&b',') {
            let sep = separator(false, bytes.get(end + 1).copied());
            if text.get(end..end + sep.len()) == Some(sep) {
                return Edit {
                    range: inner..end + sep.len(),
                    text: String::new(),
                };
            }
        }
    }
    let kept: Vec<&str> = items[at + 1..]
        .iter()
        .map(|n| &text[n.span.clone()])
        .collect();
    Edit {
        range: args.span.clone(),
        text: format!("[{}]", kept.join(", ")),
    }
}

/// `text` with the edits applied; edits must not overlap.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for e in sorted {
        out.push_str(&text[at..e.range.start]);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(&text[at..]);
    out
}
