//! Normal demo traffic: ~50 users whose agents call tools on the two MCP servers each of them
//! works with, with lognormal latencies and a normal error rate (tool errors, JSON-RPC
//! errors). Tool calls and resource reads are MCP frames sent through the [`Wire`] (the real
//! session tracker); logins and authorization checks are events as the gateway reports them.

use std::time::Duration;

use serde_json::{json, Value};

use super::rng::Rng;
use super::wire::{Outcome, ToolCall, Wire};

/// One tool of a demo server.
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    /// Median latency in seconds.
    pub median: f64,
}

/// One demo MCP server and its tools.
pub struct Server {
    pub name: &'static str,
    pub version: &'static str,
    pub tools: &'static [Tool],
}

const fn tool(name: &'static str, description: &'static str, median: f64) -> Tool {
    Tool {
        name,
        description,
        median,
    }
}

pub const SERVERS: &[Server] = &[
    Server {
        name: "filesystem",
        version: "2025.7.1",
        tools: &[
            tool(
                "read_file",
                "Read the complete contents of a file from the file system.",
                0.012,
            ),
            tool(
                "write_file",
                "Create a new file or overwrite an existing file with new content.",
                0.02,
            ),
            tool(
                "list_directory",
                "List the files and directories in a directory.",
                0.006,
            ),
            tool(
                "search_files",
                "Recursively search for files and directories matching a pattern.",
                0.09,
            ),
        ],
    },
    Server {
        name: "github",
        version: "0.9.2",
        tools: &[
            tool(
                "create_issue",
                "Create a new issue in a GitHub repository.",
                0.45,
            ),
            tool(
                "list_pull_requests",
                "List pull requests in a GitHub repository.",
                0.3,
            ),
            tool(
                "get_file_contents",
                "Get the contents of a file or directory from a GitHub repository.",
                0.28,
            ),
            tool(
                "create_pull_request",
                "Create a new pull request in a GitHub repository.",
                0.6,
            ),
        ],
    },
    Server {
        name: "postgres",
        version: "0.6.2",
        tools: &[
            tool(
                "query",
                "Run a read-only SQL query against the analytics database.",
                0.08,
            ),
            tool(
                "list_tables",
                "List the tables of the analytics database.",
                0.015,
            ),
            tool("describe_table", "Describe the columns of a table.", 0.02),
        ],
    },
    Server {
        name: "web-fetch",
        version: "1.2.0",
        tools: &[tool(
            "fetch",
            "Fetch a URL and return its content as markdown.",
            0.35,
        )],
    },
    Server {
        name: "slack",
        version: "2025.4.25",
        tools: &[
            tool("post_message", "Post a message to a Slack channel.", 0.22),
            tool("search_messages", "Search messages in the workspace.", 0.3),
        ],
    },
];

pub const USERS: &[&str] = &[
    "alice", "bob", "carol", "dana", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "lena", "mike", "nina", "oscar", "peggy", "quinn", "rupert", "sybil", "ted", "uma", "victor",
    "wendy", "xavier", "yara", "zack", "amir", "bea", "chen", "dmitri", "elif", "fatima", "goran",
    "hana", "ines", "jonas", "kofi", "lucia", "mateo", "noor", "olga", "priya", "raj", "sofia",
    "tomas", "ulla", "vikram", "wei", "yusuf", "zoe",
];

const CLIENTS: &[(&str, &str)] = &[
    ("claude-desktop", "0.12.4"),
    ("cursor", "1.7.2"),
    ("custom-agent", "0.3.0"),
];

const PROJECTS: &[&str] = &["billing", "website", "ingest", "mobile-app", "infra"];
const FILES: &[&str] = &[
    "src/main.rs",
    "README.md",
    "src/lib.rs",
    "Cargo.toml",
    "docs/design.md",
    "src/api/handlers.ts",
    "package.json",
    "tests/integration.rs",
];
const TABLES: &[&str] = &["orders", "customers", "events", "invoices", "sessions"];
const URLS: &[&str] = &[
    "https://docs.rs/tokio/latest/tokio/",
    "https://developer.mozilla.org/en-US/docs/Web/HTTP",
    "https://modelcontextprotocol.io/specification",
    "https://www.rust-lang.org/learn",
];

/// The version a demo server reports, for the servers the demo knows.
pub fn version_of(server: &str) -> &'static str {
    SERVERS
        .iter()
        .find(|s| s.name == server)
        .map_or("1.0.0", |s| s.version)
}

/// A server's tools as `(name, description)`.
pub fn tools_of(server: &str) -> Vec<(&'static str, &'static str)> {
    SERVERS
        .iter()
        .filter(|s| s.name == server)
        .flat_map(|s| s.tools.iter().map(|t| (t.name, t.description)))
        .collect()
}

/// The two servers a user works with (each user has habits, like real users).
fn habits(u: usize) -> [usize; 2] {
    let n = SERVERS.len();
    let first = u % n;
    [first, (first + 1 + (u / n) % (n - 1)) % n]
}

/// Makes normal traffic through the [`Wire`]; keeps which session each user has open.
pub struct Traffic {
    sessions: Vec<Option<(usize, u64)>>,
    seq: u64,
}

impl Traffic {
    pub fn new() -> Self {
        Self {
            sessions: vec![None; USERS.len()],
            seq: 0,
        }
    }

    /// One user activity at `elapsed`: a tool call or a resource read (as MCP frames through
    /// `wire`), or a login or an authorization check (as the gateway reports them, in `out`).
    pub fn activity(
        &mut self,
        rng: &mut Rng,
        elapsed: Duration,
        wire: &mut Wire,
        out: &mut Vec<Value>,
    ) {
        let u = rng.below(USERS.len());
        let roll = rng.unit();
        if roll < 0.70 {
            self.tool_call(rng, elapsed, u, wire);
        } else if roll < 0.80 {
            self.resource_read(rng, elapsed, u, wire);
        } else if roll < 0.90 {
            out.push(login(rng, u));
        } else {
            out.push(authorization(rng, u));
        }
    }

    /// The user's session on `server`, opening one (and listing its tools) when needed.
    fn session(
        &mut self,
        rng: &mut Rng,
        elapsed: Duration,
        u: usize,
        server: usize,
        wire: &mut Wire,
    ) -> String {
        let user = USERS[u];
        let reuse = matches!(self.sessions[u], Some((s, _)) if s == server) && !rng.chance(0.03);
        if let Some((_, old)) = self.sessions[u].filter(|_| !reuse) {
            wire.close(elapsed, &format!("{user}-{old}"));
        }
        if !reuse || self.sessions[u].is_none() {
            self.seq += 1;
            self.sessions[u] = Some((server, self.seq));
            let key = format!("{user}-{}", self.seq);
            let s = &SERVERS[server];
            wire.open(elapsed, &key, user, (s.name, s.version), *rng.pick(CLIENTS));
            wire.list_tools(elapsed, &key, &tools_of(s.name));
            return key;
        }
        let seq = self.sessions[u].map_or(0, |(_, n)| n);
        format!("{user}-{seq}")
    }

    fn tool_call(&mut self, rng: &mut Rng, elapsed: Duration, u: usize, wire: &mut Wire) {
        let server = habits(u)[rng.below(2)];
        let session = self.session(rng, elapsed, u, server, wire);
        let s = &SERVERS[server];
        let t = rng.pick(s.tools);
        let params = parameters(rng, USERS[u], s.name, t.name);
        let latency = rng.lognormal(t.median, 0.45);
        let roll = rng.unit();
        let outcome = if roll < 0.025 {
            Outcome::ToolError
        } else if roll < 0.035 {
            Outcome::RpcError
        } else {
            Outcome::Success
        };
        let text = result_text(rng, s.name, t.name, outcome);
        let call = ToolCall {
            tool: t.name,
            args: &params,
            latency,
            outcome,
            text: &text,
        };
        wire.call_tool(elapsed, &session, &call);
    }

    fn resource_read(&mut self, rng: &mut Rng, elapsed: Duration, u: usize, wire: &mut Wire) {
        let session = self.session(rng, elapsed, u, 0, wire);
        let uri = format!(
            "file:///home/{}/{}/{}",
            USERS[u],
            rng.pick(PROJECTS),
            rng.pick(FILES)
        );
        wire.read_resource(elapsed, &session, &uri, rng.lognormal(0.008, 0.4));
    }
}

/// A tool call (an attack's) and how it ends, made on its own session.
pub struct Call {
    pub server: &'static str,
    pub tool: &'static str,
    pub user: &'static str,
    /// The session's name; the session is opened (and its tools listed) on first use.
    pub session: &'static str,
    pub params: Value,
    pub latency: f64,
    pub outcome: Outcome,
    pub result_text: String,
}

impl Call {
    /// Sends the call's frames through `wire` at `elapsed`.
    pub fn run(&self, elapsed: Duration, wire: &mut Wire) {
        if !wire.is_open(self.session) {
            let server = (self.server, version_of(self.server));
            wire.open(elapsed, self.session, self.user, server, CLIENTS[2]);
            wire.list_tools(elapsed, self.session, &tools_of(self.server));
        }
        let call = ToolCall {
            tool: self.tool,
            args: &self.params,
            latency: self.latency,
            outcome: self.outcome,
            text: &self.result_text,
        };
        wire.call_tool(elapsed, self.session, &call);
    }
}

fn parameters(rng: &mut Rng, user: &str, server: &str, tool: &str) -> Value {
    let project = rng.pick(PROJECTS);
    match (server, tool) {
        ("filesystem", "search_files") => {
            json!({"path": format!("/home/{user}/{project}"), "pattern": format!("*.{}", rng.pick(&["rs", "ts", "md", "toml"]))})
        }
        ("filesystem", "write_file") => {
            json!({"path": format!("/home/{user}/{project}/{}", rng.pick(FILES)), "content": "…"})
        }
        ("filesystem", _) => json!({"path": format!("/home/{user}/{project}/{}", rng.pick(FILES))}),
        ("github", "create_issue") => json!({"owner": "acme", "repo": project,
            "title": format!("Flaky test in {}", rng.pick(FILES))}),
        ("github", _) => json!({"owner": "acme", "repo": project, "state": "open"}),
        ("postgres", "query") => json!({"sql": format!(
            "SELECT status, count(*) FROM {} WHERE created_at > now() - interval '{} day' GROUP BY status",
            rng.pick(TABLES), 1 + rng.below(30))}),
        ("postgres", _) => json!({"table": rng.pick(TABLES)}),
        ("web-fetch", _) => json!({"url": rng.pick(URLS)}),
        _ => json!({"channel": format!("#{project}"), "text": "Build finished"}),
    }
}

fn result_text(rng: &mut Rng, server: &str, tool: &str, outcome: Outcome) -> String {
    if outcome == Outcome::ToolError {
        return match server {
            "filesystem" => "Error: ENOENT: no such file or directory".into(),
            "github" => "Error: API rate limit exceeded, retry later".into(),
            "postgres" => "Error: relation does not exist".into(),
            _ => "Error: upstream returned 502".into(),
        };
    }
    match (server, tool) {
        ("filesystem", "read_file") => "fn main() {\n    println!(\"hello\");\n}\n".into(),
        ("postgres", "query") => format!(
            "status | count\nopen | {}\nclosed | {}",
            rng.below(500),
            rng.below(5000)
        ),
        ("web-fetch", _) => {
            "# Documentation\n\nThis page describes the API and its options.".into()
        }
        _ => format!("ok ({} items)", rng.below(40)),
    }
}

fn user_ip(u: usize) -> String {
    format!("10.20.{}.{}", u / 200, 10 + u % 200)
}

fn login(rng: &mut Rng, u: usize) -> Value {
    let result = if rng.chance(0.03) {
        "failure"
    } else {
        "success"
    };
    json!({"level": if result == "failure" { "warning" } else { "info" },
        "category": "security", "event_type": "authentication", "source": "gateway",
        "message": format!("Authentication {result} for {}", USERS[u]),
        "metadata": {"user_id": USERS[u], "result": result, "ip_address": user_ip(u),
                     "user_agent": "mcp-client/1.0"},
        "tags": ["authentication"]})
}

fn authorization(rng: &mut Rng, u: usize) -> Value {
    let s = rng.pick(SERVERS);
    let t = rng.pick(s.tools);
    let result = if rng.chance(0.03) {
        "denied"
    } else {
        "allowed"
    };
    json!({"level": if result == "denied" { "warning" } else { "info" },
        "category": "security", "event_type": "authorization", "source": "gateway",
        "message": format!("{} {result} on tool:{}/{}", USERS[u], s.name, t.name),
        "metadata": {"user_id": USERS[u], "resource": format!("tool:{}/{}", s.name, t.name),
                     "action": "call", "result": result},
        "tags": ["authorization"]})
}
