//! The detection contract on the real capture path: the official MCP Python SDK client drives
//! `@modelcontextprotocol/server-filesystem` through `mcpwatch wrap` into a real `serve` (with a
//! demo-sized learning period), and the alerts that come out are what the traffic deserves:
//! varied normal work raises no anomaly, a true loop raises `repetition`, a call with a new key
//! and an outlying size raises `unusual_parameters` naming the user, a `../` path raises
//! `path_traversal` naming the user.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::detect::{check_contract, get, wait_past_learning, wait_until, Contract};
use common::Serve;
use serde_json::Value;

fn client(phase: &str, fs_dir: &str, collector: &str, wrap_dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/client.py");
    let status = Command::new(common::peer("venv/bin/python"))
        .arg(script)
        .args(["detection", "--", env!("CARGO_BIN_EXE_mcpwatch"), "wrap"])
        .args([
            "--name",
            "filesystem",
            "--user",
            "tester",
            "--collector",
            collector,
        ])
        .arg("--data-dir")
        .arg(wrap_dir)
        .arg("--")
        .arg(common::peer("node/node_modules/.bin/mcp-server-filesystem"))
        .arg(fs_dir)
        .env("FS_DIR", fs_dir)
        .env("PHASE", phase)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("the Python client runs");
    assert!(status.success(), "the {phase} client failed: {status}");
}

#[test]
fn wrap_traffic_gets_the_alerts_it_deserves() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir: PathBuf = tmp.path().join("allowed");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..14 {
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n")).expect("write");
    }
    std::fs::write(dir.join("a.txt"), "hello\n").expect("write");
    let dir = dir
        .canonicalize()
        .expect("canonical")
        .to_string_lossy()
        .into_owned();
    let cfg = tmp.path().join("mcpwatch.toml");
    std::fs::write(
        &cfg,
        "[detection.anomaly]\nlearning_period = \"2s\"\nmin_samples = 5\n",
    )
    .expect("write config");
    let serve = Serve::start(
        &tmp.path().join("serve"),
        &["--config", cfg.to_str().unwrap()],
    );
    let url = serve.url.clone();
    let done = |url: &str| {
        get(&format!(
            "{url}/api/v1/events?event_type=execution_complete&limit=1000"
        ))
    };
    let count = |v: &Value| v["events"].as_array().map_or(0, Vec::len);

    client("work", &dir, &url, &tmp.path().join("wrap-work"));
    let work = wait_until(|| done(&url), |v| count(v) >= 42);
    assert_eq!(
        count(&work),
        42,
        "every call of the normal work is recorded"
    );
    let work_session = work["events"][0]["metadata"]["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    wait_past_learning();
    client("attack", &dir, &url, &tmp.path().join("wrap-attack"));
    check_contract(
        &url,
        &Contract {
            the_loop: "filesystem/read_text_file called 10 times in a row",
            outlying: "`path` is 60",
            work_session: &work_session,
        },
    );
    serve.stop();
}
