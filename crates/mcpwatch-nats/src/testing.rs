//! A real NATS JetStream cluster for tests (feature `testing`): three `nats-server` processes
//! on free loopback ports, clustered with each other, their JetStream data in a temporary
//! directory; killed and deleted on drop.
//!
//! It runs the `nats-server` that `scripts/install-peers` installs (Debian's package, 2.9);
//! nothing is downloaded at run time, and a missing server fails the test with what to do.
//! [`TempNatsCluster::start`] returns once the cluster has a JetStream meta leader, so a test
//! can create streams at once. A node can be killed (`SIGKILL`) and restarted in place, on the
//! same ports and data, to test failover.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to elect a JetStream meta leader.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The cluster's name.
pub const CLUSTER: &str = "mcpwatch-test";

struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A running 3-node cluster, killed and deleted on drop.
pub struct TempNatsCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Node>,
}

impl TempNatsCluster {
    /// Starts three nodes and waits for a meta leader. Panics with what to do when nats-server
    /// is not installed or the cluster does not form: a test that needs it must not pass
    /// without it.
    pub fn start() -> Self {
        match Self::try_start(3) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a NATS cluster for the tests: {e}"),
        }
    }

    fn try_start(n: usize) -> Result<Self, String> {
        let bin = find_server().ok_or(
            "nats-server not found on PATH, /usr/sbin or /usr/bin; run scripts/install-peers (as root) to install Debian's nats-server",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("mcpwatch-nats-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, String>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).map_err(|e| format!("cannot make {store:?}: {e}"))?;
            let config = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                 jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}}\n\
                 cluster {{\n  name: {CLUSTER}\n  listen: \"127.0.0.1:{cport}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
            std::fs::write(&config, text).map_err(|e| format!("cannot write {config:?}: {e}"))?;
            nodes.push(Node {
                name,
                port: *port,
                config,
                child: None,
            });
        }
        let mut cluster = Self { dir, bin, nodes };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_meta_leader()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let log = self.dir.path().join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {log:?}: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn wait_meta_leader(&mut self) -> Result<(), String> {
        let urls = self.urls();
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::new();
        while Instant::now() < deadline {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "node {} exited ({status}) while the cluster formed:\n{}",
                        i + 1,
                        tail(&self.dir.path().join(format!("{}.log", node.name)))
                    ));
                }
            }
            match block_on(account_info(urls.clone())) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "no JetStream meta leader within {READY_DEADLINE:?}: {last}\n{}",
            tail(&self.dir.path().join("n1.log"))
        ))
    }

    /// Every node's client URL, comma-separated, as `--nats` takes them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s server name (`n1`, `n2`, `n3`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILL to node `i`: no chance to flush or hand over anything.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether node `i` runs (it was not killed, or was restarted since).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Starts node `i` again, on its ports and data.
    pub fn restart(&mut self, i: usize) {
        if let Err(e) = self.spawn(i) {
            panic!("cannot restart NATS node {}: {e}", i + 1);
        }
    }

    /// The server name of `stream`'s leader, asked of the cluster through `urls`.
    pub async fn stream_leader(urls: &str, stream: &str) -> Result<String, String> {
        let client = crate::connect(urls, "mcpwatch-test", true)
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        let info = s.info().await.map_err(|e| e.to_string())?;
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .ok_or_else(|| format!("stream {stream} has no leader now"))
    }

    /// The last lines of every node's log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {}\n{}",
                    n.name,
                    tail(&self.dir.path().join(format!("{}.log", n.name)))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TempNatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

async fn account_info(urls: String) -> Result<(), String> {
    let client = crate::connect(&urls, "mcpwatch-test", true)
        .await
        .map_err(|e| e.to_string())?;
    // The raw API (the client's typed account info expects fields 2.9 does not send): without
    // a meta leader it answers an error ("JetStream system temporarily unavailable").
    let reply = client
        .request("$JS.API.INFO", bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
    match v.get("error") {
        None => Ok(()),
        Some(e) => Err(e.to_string()),
    }
}

/// Runs a future to completion on a thread of its own, so the harness works from synchronous
/// and asynchronous tests alike.
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the NATS harness")
            .block_on(f)
    })
    .join()
    .expect("the NATS harness thread")
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn find_server() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|f| f.is_file())
}
