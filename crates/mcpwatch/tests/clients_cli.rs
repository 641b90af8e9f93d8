//! End-to-end tests of `mcpwatch clients`: the real binary on config files in a temporary
//! home, and a watched launch line started the way a client starts it (the MCP Python SDK
//! reading `command`, `args` and `env` back from the file) with its events reaching `serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, peer, Serve};
use serde_json::Value;

/// `mcpwatch clients ARGS` with `home` as `$HOME` and the current directory, stdin `input`.
fn clients(home: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = bin()
        .arg("clients")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("MCPWATCH_DATA_DIR")
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcpwatch clients runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("mcpwatch clients exits")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where Claude Desktop keeps its config on Linux, under `home`.
fn claude_desktop(home: &Path) -> PathBuf {
    home.join(".config/Claude/claude_desktop_config.json")
}

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, body).expect("write the config");
}

/// Files in `dir`, sorted, to prove nothing else (backup, temp file) was written.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits until `serve` holds `n` events of `event_type` from `server`, via `mcpwatch events`.
fn wait_events(url: &str, event_type: &str, server: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = bin()
            .args(["events", "--json", "--since", "1h", "--collector", url])
            .args(["--event-type", event_type, "--server", server])
            .output()
            .expect("mcpwatch events runs");
        let got: Vec<Value> = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_watched_claude_desktop_server_is_started_from_the_file_and_its_events_reach_serve() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let home = tmp.path().join("home");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(files.join("a.txt"), "hello\n").expect("write");
    std::fs::create_dir_all(files.join(".ssh")).expect("mkdir");
    std::fs::write(files.join(".ssh/id_rsa"), "not really a key\n").expect("write");
    let files = files.canonicalize().expect("canonical");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);

    let config = claude_desktop(&home);
    let original = serde_json::to_string_pretty(&serde_json::json!({
        "mcpServers": {
            "filesystem": {
                "command": peer("node/node_modules/.bin/mcp-server-filesystem"),
                "args": [files],
                "env": {
                    "MCPWATCH_COLLECTOR": serve.url,
                    "MCPWATCH_DATA_DIR": tmp.path().join("wrap"),
                }
            }
        },
        "globalShortcut": ""
    }))
    .expect("json");
    write(&config, &original);

    let listed = clients(&home, &[], "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let out = text(&listed.stdout);
    assert!(out.contains("claude-desktop (user)"), "{out}");
    assert!(
        out.contains("filesystem") && out.contains("not watched"),
        "{out}"
    );

    let watch = clients(&home, &["watch", "--client", "claude-desktop", "--yes"], "");
    assert!(watch.status.success(), "{}", text(&watch.stderr));
    let out = text(&watch.stdout);
    assert!(
        out.contains("+      \"command\": \""),
        "the diff is shown: {out}"
    );
    let backup = PathBuf::from(format!("{}.mcpwatch-backup", config.display()));
    assert_eq!(std::fs::read_to_string(&backup).expect("backup"), original);
    let watched: Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    let entry = &watched["mcpServers"]["filesystem"];
    let own = Path::new(env!("CARGO_BIN_EXE_mcpwatch"))
        .canonicalize()
        .expect("bin");
    assert_eq!(entry["command"], own.to_string_lossy().as_ref());
    assert_eq!(
        entry["args"].as_array().expect("args")[0..4],
        ["wrap", "--name", "filesystem", "--"]
    );
    let relisted = text(&clients(&home, &[], "").stdout);
    assert!(
        relisted.contains(" watched ") && !relisted.contains("not watched"),
        "{relisted}"
    );

    let run = Command::new(peer("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/client.py"))
        .args(["filesystem", "--config"])
        .arg(&config)
        .arg("filesystem")
        .env("FS_DIR", &files)
        .stdin(Stdio::null())
        .output()
        .expect("the Python client runs");
    assert!(run.status.success(), "client: {}", text(&run.stderr));
    let lines: Vec<Value> = text(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let inside = lines
        .iter()
        .find(|l| l["step"] == "read_inside")
        .expect("the read ran");
    assert_eq!(inside["value"]["content"][0]["text"], "hello\n");

    let done = wait_events(&serve.url, "execution_complete", "filesystem", 4);
    let mut tools: Vec<String> = done
        .iter()
        .map(|e| {
            e["metadata"]["tool_name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    tools.sort();
    assert_eq!(
        tools,
        [
            "list_directory",
            "read_text_file",
            "read_text_file",
            "read_text_file"
        ]
    );

    let unwatch = clients(&home, &["unwatch", "--yes"], "");
    assert!(unwatch.status.success(), "{}", text(&unwatch.stderr));
    assert_eq!(std::fs::read_to_string(&config).expect("read"), original);
}

#[test]
fn watch_asks_first_and_a_second_watch_changes_nothing() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let config = tmp.path().join(".cursor/mcp.json");
    let original = "{\"mcpServers\": {\"x\": {\"command\": \"npx\", \"args\": [\"-y\", \"s\"]}, \"u\": {\"url\": \"http://h/mcp\"}}}\n";
    write(&config, original);
    let no = clients(tmp.path(), &["watch"], "n\n");
    assert!(no.status.success(), "{}", text(&no.stderr));
    assert!(
        text(&no.stdout).contains("not written"),
        "{}",
        text(&no.stdout)
    );
    assert!(text(&no.stderr).contains("write these changes to"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    assert_eq!(listing(config.parent().unwrap()), ["mcp.json"]);

    let yes = clients(tmp.path(), &["watch", "--server", "x"], "y\n");
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    let watched = std::fs::read_to_string(&config).unwrap();
    assert_ne!(watched, original);
    let out = text(&yes.stdout);
    assert!(
        !out.contains("u: ") && out.contains("x: will change"),
        "{out}"
    );

    let again = clients(tmp.path(), &["watch", "--yes"], "");
    assert!(again.status.success());
    let out = text(&again.stdout);
    assert!(out.contains("x: left alone (already watched)"), "{out}");
    assert!(out.contains("u: left alone (http server"), "{out}");
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), watched);

    let missing = clients(tmp.path(), &["watch", "--server", "nope", "--yes"], "");
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no server named \"nope\""));
}

/// Runs `watch` on a bad file: it must fail with `message` and leave the directory as it was.
fn check_refused(setup: impl FnOnce(&Path) -> PathBuf, message: &str) {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let config = setup(tmp.path());
    let dir = config.parent().unwrap().to_path_buf();
    let before = std::fs::read(&config).ok();
    let files_before = listing(&dir);
    let out = clients(
        tmp.path(),
        &["watch", "--yes", "--config", config.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success(), "must fail: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(message), "expected {message:?} in: {err}");
    assert_eq!(std::fs::read(&config).ok(), before, "the file is unchanged");
    assert_eq!(listing(&dir), files_before, "no backup or temp file");
}

#[test]
fn malformed_read_only_and_missing_files_are_refused_and_nothing_is_written() {
    check_refused(
        |d| {
            let p = d.join("mcp.json");
            write(
                &p,
                "{\n  \"mcpServers\": {\n    \"x\": {\"command\": \"npx\" \"args\": []}\n  }\n}\n",
            );
            p
        },
        "mcp.json: line 3, column 28: expected , or } after a value; it is not valid JSON",
    );
    check_refused(
        |d| {
            let p = d.join("mcp.json");
            write(&p, "{\"mcpServers\": {\"x\": {\"command\": \"npx\"}}}");
            let mut perms = std::fs::metadata(&p).unwrap().permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(&p, perms).unwrap();
            p
        },
        "is read-only; make it writable",
    );
    check_refused(|d| d.join("absent.json"), "absent.json does not exist");
}

#[test]
fn no_config_found_lists_where_it_looked() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let out = clients(tmp.path(), &[], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no MCP client config found"), "{err}");
    assert!(err.contains(".codeium/windsurf/mcp_config.json"), "{err}");
    assert!(err.contains("--config FILE"), "{err}");
}

/// A client's config fixture from `src/cmd/clients/fixtures`.
fn client_fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/cmd/clients/fixtures")
        .join(name);
    std::fs::read_to_string(p).expect("fixture")
}

#[test]
fn http_servers_of_every_client_format_go_through_the_gateway_and_come_back_byte_for_byte() {
    // (fixture, HTTP server, the key holding its URL, its URL); Claude Desktop's file has
    // only stdio servers (remote ones are connectors in its UI).
    let cases = [
        (
            "claude_code.json",
            "notion",
            "url",
            "https://mcp.notion.com/mcp",
        ),
        (
            "cursor_mcp.json",
            "linear",
            "url",
            "https://mcp.linear.app/sse",
        ),
        (
            "vscode_mcp.json",
            "github",
            "url",
            "https://api.githubcopilot.com/mcp/",
        ),
        (
            "windsurf_mcp_config.json",
            "zapier",
            "serverUrl",
            "https://actions.zapier.com/mcp/KEY/sse",
        ),
    ];
    for (fixture, server, key, url) in cases {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let config = tmp.path().join("cfg").join(fixture);
        let original = client_fixture(fixture);
        write(&config, &original);
        let cfg = config.to_str().expect("UTF-8");
        let watch = clients(
            tmp.path(),
            &[
                "watch",
                "--config",
                cfg,
                "--gateway",
                "0.0.0.0:7880",
                "--yes",
            ],
            "",
        );
        assert!(watch.status.success(), "{fixture}: {}", text(&watch.stderr));
        let out = text(&watch.stdout);
        let watched = std::fs::read_to_string(&config).expect("read");
        let routed = format!("\"{key}\": \"http://127.0.0.1:7880/mcp/{server}\"");
        assert!(
            watched.contains(&routed),
            "{fixture}: {routed} in {watched}"
        );
        assert!(!watched.contains(url), "{fixture}: the old URL is gone");
        assert!(
            out.contains(&format!("{server}: will change")),
            "{fixture}: {out}"
        );
        assert!(
            out.contains("    [gateway.upstreams]\n")
                && out.contains(&format!("    {server} = \"{url}\"\n"))
                && out.contains(&format!(
                    "mcpwatch gateway --listen 127.0.0.1:7880 --upstream '{server}={url}'"
                )),
            "{fixture}: the gateway config is shown: {out}"
        );
        let listed = text(&clients(tmp.path(), &["--config", cfg], "").stdout);
        let line = listed
            .lines()
            .find(|l| l.trim_start().starts_with(server))
            .expect("listed");
        assert!(
            line.contains(" watched ") && line.contains("/mcp/"),
            "{fixture}: {line}"
        );

        let again = clients(
            tmp.path(),
            &[
                "watch",
                "--config",
                cfg,
                "--gateway",
                "127.0.0.1:7880",
                "--yes",
            ],
            "",
        );
        assert!(again.status.success(), "{}", text(&again.stderr));
        let out = text(&again.stdout);
        assert!(
            out.contains(&format!("{server}: left alone (already watched)"))
                && out.contains("nothing to change"),
            "{fixture}: {out}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), watched);

        let unwatch = clients(tmp.path(), &["unwatch", "--config", cfg, "--yes"], "");
        assert!(unwatch.status.success(), "{}", text(&unwatch.stderr));
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "{fixture}: unwatch restores the exact bytes"
        );
        let records =
            std::fs::read_to_string(tmp.path().join(".local/share/mcpwatch/clients/routes.json"))
                .expect("the route record");
        assert!(
            !records.contains(server),
            "{fixture}: the record is dropped: {records}"
        );
    }
}

#[test]
fn gateway_routing_refuses_what_it_cannot_restore_or_serve() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let a = tmp.path().join("a.json");
    let b = tmp.path().join("b.json");
    let a_text = "{\"mcpServers\": {\"docs\": {\"url\": \"https://a.example/mcp\"}, \"bad name\": {\"url\": \"https://c.example/mcp\"}, \"old\": {\"type\": \"sse\", \"url\": \"https://d.example/sse\"}}}\n";
    let b_text =
        "{\"servers\": {\"docs\": {\"type\": \"http\", \"url\": \"https://b.example/mcp\"}}}\n";
    write(&a, a_text);
    write(&b, b_text);
    let gw = ["--gateway", "http://127.0.0.1:7880/"];
    let first = clients(
        tmp.path(),
        &[
            "watch",
            "--config",
            a.to_str().unwrap(),
            gw[0],
            gw[1],
            "--yes",
        ],
        "",
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("docs: will change"), "{out}");
    assert!(
        out.contains("bad name: left alone (the gateway's upstream names"),
        "{out}"
    );
    assert!(out.contains("old: left alone (sse server"), "{out}");

    let second = clients(
        tmp.path(),
        &[
            "watch",
            "--config",
            b.to_str().unwrap(),
            gw[0],
            gw[1],
            "--yes",
        ],
        "",
    );
    assert!(second.status.success(), "{}", text(&second.stderr));
    let out = text(&second.stdout);
    assert!(
        out.contains("docs: left alone (another server of this name goes through the gateway to https://a.example/mcp"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&b).unwrap(), b_text);

    let bad = clients(
        tmp.path(),
        &[
            "watch",
            "--config",
            b.to_str().unwrap(),
            "--gateway",
            "ftp://x",
            "--yes",
        ],
        "",
    );
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("the gateway speaks http:// or https://"));

    // A record that cannot be read stops the run before anything is written.
    let records = tmp.path().join(".local/share/mcpwatch/clients/routes.json");
    std::fs::write(&records, "{not json").unwrap();
    let before = std::fs::read_to_string(&a).unwrap();
    let stuck = clients(
        tmp.path(),
        &["unwatch", "--config", a.to_str().unwrap(), "--yes"],
        "",
    );
    assert!(!stuck.status.success());
    assert!(
        text(&stuck.stderr).contains("is not a route record"),
        "{}",
        text(&stuck.stderr)
    );
    assert_eq!(std::fs::read_to_string(&a).unwrap(), before);
}
