//! The real binary refusing to be open by accident, and `wrap` never outliving its duty:
//! `gateway` on a non-loopback address without authentication, a server that ignores
//! SIGTERM, and a `wrap` killed outright.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop, so a failed test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child to exit, at most `within`.
fn exit_within(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = p.0.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gateway_refuses_a_network_address_without_auth_unless_told_so_explicitly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str]| {
        let mut child = common::bin()
            .args([
                "gateway",
                "--listen",
                "0.0.0.0:0",
                "--upstream",
                "up=http://127.0.0.1:9/mcp",
            ])
            .args(["--collector", "http://127.0.0.1:9", "--data-dir"])
            .arg(tmp.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpwatch gateway");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut p = Proc(child);
        // Read until the gateway says it listens or exits: the first line tells which.
        let mut text = String::new();
        let mut buf = [0u8; 1024];
        while !text.contains('\n') {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let status = if text.contains("listening on") {
            None
        } else {
            exit_within(&mut p, Duration::from_secs(10))
        };
        (status, text)
    };
    let (status, text) = run(&[]);
    assert!(
        status.is_some_and(|s| !s.success()),
        "started open to the network: {text}"
    );
    assert!(text.contains("refusing to listen on 0.0.0.0"), "{text}");
    assert!(text.contains("--allow-unauthenticated-network"), "{text}");
    let (status, text) = run(&["--allow-unauthenticated-network"]);
    assert_eq!(status, None, "the explicit flag lets it start: {text}");
    assert!(text.contains("listening on http://0.0.0.0:"), "{text}");
}

/// `mcpwatch wrap` around `sh -c SCRIPT`, whose pid the script writes to `pidfile`; waits for
/// the pid.
fn wrap(dir: &Path, script: &str, env: &[(&str, &str)]) -> (Proc, i32) {
    let pidfile = dir.join("server.pid");
    let child = common::bin()
        .args([
            "wrap",
            "--name",
            "stubborn",
            "--collector",
            "http://127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(["--", "sh", "-c", script])
        .env("PIDFILE", &pidfile)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcpwatch wrap");
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return (p, pid);
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (a zombie is dead; the container may not reap it).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

#[test]
fn wrap_kills_a_server_that_ignores_sigterm_after_the_grace_period() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut p, server) = wrap(
        tmp.path(),
        r#"trap '' TERM INT HUP; echo $$ > "$PIDFILE"; exec sleep 600"#,
        &[("MCPWATCH_KILL_GRACE", "1s")],
    );
    assert!(alive(server));
    signal(p.0.id(), "-TERM");
    let status = exit_within(&mut p, Duration::from_secs(15))
        .expect("wrap still waits on a server that ignores SIGTERM");
    assert_eq!(
        status.code(),
        Some(137),
        "the server's SIGKILL, as a shell reports it"
    );
    assert!(!alive(server), "the server outlived wrap");
}

#[test]
fn a_server_dies_with_its_wrap() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut p, server) = wrap(tmp.path(), r#"echo $$ > "$PIDFILE"; exec sleep 600"#, &[]);
    assert!(alive(server));
    signal(p.0.id(), "-KILL");
    exit_within(&mut p, Duration::from_secs(10)).expect("SIGKILL ends wrap");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(server) {
        assert!(
            Instant::now() < deadline,
            "the server outlived a killed wrap"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `THP_enabled` of a process, from `/proc/PID/status` (Linux 5.0 and later).
fn thp_enabled(pid: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// mcpwatch keeps itself to small pages (huge pages cost the gateway 9 % of its CPU zeroing
/// 2 MiB per fault, and held most of the collector's idle memory), and the flag survives exec:
/// the server `wrap` starts gets the system's setting back.
#[test]
fn wrap_keeps_to_small_pages_and_its_server_gets_the_system_setting() {
    let Some(ours) = thp_enabled(std::process::id() as i32) else {
        panic!("/proc/self/status has no THP_enabled line; this test needs Linux 5.0 or later");
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let (p, server) = wrap(tmp.path(), r#"echo $$ > "$PIDFILE"; exec sleep 600"#, &[]);
    assert_eq!(thp_enabled(p.0.id() as i32), Some(false), "wrap itself");
    assert_eq!(thp_enabled(server), Some(ours), "the wrapped server");
}
