//! Normal demo traffic: ~50 users whose agents call tools on a few MCP servers, with
//! lognormal latencies, a normal error rate (`tool_error`, `rpc_error`), sessions with
//! `session_start` and `tools_listed`, `request_performance`, `data_access`, logins and
//! authorization checks. Events are JSON as a client posts them to the ingest API.

use serde_json::{json, Value};

use super::rng::Rng;

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

/// A tool definition hash as capture computes one (here: FNV-1a over name and description).
pub fn definition_hash(name: &str, description: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0]).chain(description.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The `tools_listed` event of a server, as capture emits it on the first listing.
pub fn tools_listed(server: &str, session_id: &str, user: &str, tools: &[(&str, &str)]) -> Value {
    let listed: Vec<Value> = tools
        .iter()
        .map(|(name, description)| {
            json!({"name": name, "description": description, "hash": definition_hash(name, description)})
        })
        .collect();
    json!({"level": "info", "category": "session", "event_type": "tools_listed",
           "source": format!("wrap:{server}"),
           "message": format!("{server} listed {} tools", tools.len()),
           "metadata": {"server": server, "session_id": session_id, "user_id": user, "tools": listed},
           "tags": ["tools", "listing"]})
}

/// Makes normal traffic; keeps which sessions are open and which servers were listed.
pub struct Traffic {
    sessions: Vec<Option<(usize, u64)>>,
    listed: Vec<bool>,
    seq: u64,
}

impl Traffic {
    pub fn new() -> Self {
        Self {
            sessions: vec![None; USERS.len()],
            listed: vec![false; SERVERS.len()],
            seq: 0,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{:06}", self.seq)
    }

    /// One user activity: a tool call, a resource read, a login or an authorization check.
    pub fn activity(&mut self, rng: &mut Rng, out: &mut Vec<Value>) {
        let u = rng.below(USERS.len());
        let roll = rng.unit();
        if roll < 0.70 {
            self.tool_call(rng, u, out);
        } else if roll < 0.80 {
            self.resource_read(rng, u, out);
        } else if roll < 0.90 {
            out.push(login(rng, u));
        } else {
            out.push(authorization(rng, u));
        }
    }

    /// The user's session on `server`, starting one (with its events) when needed.
    fn session(&mut self, rng: &mut Rng, u: usize, server: usize, out: &mut Vec<Value>) -> String {
        let user = USERS[u];
        let reuse = matches!(self.sessions[u], Some((s, _)) if s == server) && !rng.chance(0.03);
        if !reuse {
            self.seq += 1;
            self.sessions[u] = Some((server, self.seq));
            let sid = format!("sess-{user}-{}", self.seq);
            let (client, version) = *rng.pick(CLIENTS);
            let s = &SERVERS[server];
            out.push(json!({"level": "info", "category": "session", "event_type": "session_start",
                "source": format!("wrap:{}", s.name),
                "message": format!("MCP session with {} started", s.name),
                "metadata": {"server": s.name, "session_id": sid, "user_id": user,
                             "client": {"name": client, "version": version},
                             "server_info": {"name": s.name, "version": s.version},
                             "protocol_version": "2025-06-18", "capabilities": ["tools", "resources"]},
                "tags": ["session", "start"]}));
            if !self.listed[server] {
                self.listed[server] = true;
                let tools: Vec<(&str, &str)> =
                    s.tools.iter().map(|t| (t.name, t.description)).collect();
                out.push(tools_listed(s.name, &sid, user, &tools));
            }
        }
        let seq = self.sessions[u].map_or(0, |(_, n)| n);
        format!("sess-{user}-{seq}")
    }

    fn tool_call(&mut self, rng: &mut Rng, u: usize, out: &mut Vec<Value>) {
        let server = rng.below(SERVERS.len());
        let session = self.session(rng, u, server, out);
        let s = &SERVERS[server];
        let t = rng.pick(s.tools);
        let params = parameters(rng, USERS[u], s.name, t.name);
        let latency = rng.lognormal(t.median, 0.45);
        let roll = rng.unit();
        let outcome = if roll < 0.025 {
            "tool_error"
        } else if roll < 0.035 {
            "rpc_error"
        } else {
            "success"
        };
        let call = Call {
            server: s.name,
            tool: t.name,
            user: USERS[u],
            session: &session,
            params,
            latency,
            outcome,
            result_text: result_text(rng, s.name, t.name, outcome),
        };
        let execution_id = self.next_id("exec");
        let request_id = self.next_id("req");
        call.emit(&execution_id, &request_id, out);
        if s.name == "filesystem" && t.name == "read_file" {
            let class = classification(rng);
            out.push(json!({"level": "info", "category": "security", "event_type": "data_access",
                "source": "wrap:filesystem", "message": format!("Tool read_file called on {class} data"),
                "metadata": {"user_id": USERS[u], "data_type": "file", "operation": "read_file",
                             "server": "filesystem", "session_id": session, "execution_id": execution_id,
                             "tool_name": "read_file", "data_classification": class},
                "tags": ["data_access"]}));
        }
    }

    fn resource_read(&mut self, rng: &mut Rng, u: usize, out: &mut Vec<Value>) {
        let session = self.session(rng, u, 0, out);
        let uri = format!(
            "file:///home/{}/{}/{}",
            USERS[u],
            rng.pick(PROJECTS),
            rng.pick(FILES)
        );
        let class = classification(rng);
        let request_id = self.next_id("req");
        out.push(json!({"level": "info", "category": "security", "event_type": "data_access",
            "source": "wrap:filesystem", "message": format!("Resource {uri} read ({class})"),
            "metadata": {"user_id": USERS[u], "data_type": "resource", "operation": "read", "uri": uri,
                         "data_classification": class, "server": "filesystem", "session_id": session},
            "tags": ["data_access", "resource"]}));
        out.push(
            json!({"level": "info", "category": "performance", "event_type": "request_performance",
            "source": "wrap:filesystem", "message": "resources/read answered",
            "metadata": {"request_id": request_id, "response_time": rng.lognormal(0.008, 0.4),
                         "success": true, "method": "resources/read", "server": "filesystem",
                         "user_id": USERS[u], "session_id": session},
            "tags": ["performance"]}),
        );
    }
}

/// A tool call and how it ended, turned into the events capture emits for it.
pub struct Call<'a> {
    pub server: &'a str,
    pub tool: &'a str,
    pub user: &'a str,
    pub session: &'a str,
    pub params: Value,
    pub latency: f64,
    pub outcome: &'a str,
    pub result_text: String,
}

impl Call<'_> {
    /// `execution_start`, `execution_complete` and `request_performance`.
    pub fn emit(&self, execution_id: &str, request_id: &str, out: &mut Vec<Value>) {
        let source = format!("wrap:{}", self.server);
        let success = self.outcome == "success";
        out.push(json!({"level": "info", "category": "tool_execution", "event_type": "execution_start",
            "source": source, "message": format!("Tool {} execution started", self.tool),
            "metadata": {"execution_id": execution_id, "tool_name": self.tool, "server": self.server,
                         "user_id": self.user, "session_id": self.session, "request_id": request_id,
                         "parameters": self.params},
            "tags": ["tool", "execution", "start"]}));
        let mut meta = json!({"execution_id": execution_id, "tool_name": self.tool, "server": self.server,
            "user_id": self.user, "session_id": self.session, "request_id": request_id,
            "execution_time": self.latency, "success": success, "outcome": self.outcome,
            "parameters": self.params});
        if self.outcome == "rpc_error" {
            meta["error_code"] = json!(-32602);
            meta["error_message"] = json!("Invalid params: missing required argument");
        } else {
            meta["result"] = json!({"size": self.result_text.len(), "content_types": ["text"],
                                    "text": self.result_text});
        }
        let (level, verb) = if success {
            ("info", "completed")
        } else {
            ("error", "failed")
        };
        out.push(
            json!({"level": level, "category": "tool_execution", "event_type": "execution_complete",
            "source": source, "message": format!("Tool {} execution {verb}", self.tool),
            "metadata": meta, "tags": ["tool", "execution", "complete"]}),
        );
        out.push(json!({"level": "info", "category": "performance", "event_type": "request_performance",
            "source": source, "message": "tools/call answered",
            "metadata": {"request_id": request_id, "response_time": self.latency, "success": success,
                         "method": "tools/call", "server": self.server, "tool_name": self.tool,
                         "user_id": self.user, "session_id": self.session},
            "tags": ["performance"]}));
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

fn result_text(rng: &mut Rng, server: &str, tool: &str, outcome: &str) -> String {
    if outcome == "tool_error" {
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

fn classification(rng: &mut Rng) -> &'static str {
    let r = rng.unit();
    if r < 0.015 {
        "sensitive"
    } else if r < 0.25 {
        "public"
    } else {
        "internal"
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
