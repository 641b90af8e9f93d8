//! Watching and unwatching real config shapes of every client, through one `check` helper.
//!
//! Each fixture in `fixtures/` is a config as the client writes it (comments and trailing
//! commas where the client allows JSONC, unknown keys, env blocks, Windows paths). `check`
//! watches every server, compares with the golden `NAME.watched`, proves the launch lines mean
//! what they should, that a second watch changes nothing and that unwatch gives the original
//! bytes back. `MCPWATCH_BLESS=1` rewrites the golden files after a deliberate change.

use std::path::PathBuf;

use super::cli::diff;
use super::edit::{self, Transport};
use super::jsonc::{self, Node};

const BIN: &str = "/opt/mcpwatch/bin/mcpwatch";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/cmd/clients/fixtures")
        .join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).expect("fixture")
}

/// Watches (or unwatches) every server it can; returns the text and the names changed.
fn apply_all(text: &str, watch: bool) -> (String, Vec<String>) {
    let root = jsonc::parse(text).expect("parses");
    let mut edits = Vec::new();
    let mut changed = Vec::new();
    for s in edit::servers(&root) {
        let plan = if watch {
            edit::watch(text, &s, BIN)
        } else {
            edit::unwatch(text, &s)
        };
        if let Ok(e) = plan {
            edits.extend(e);
            changed.push(s.name.clone());
        }
    }
    (edit::apply(text, &edits), changed)
}

fn strings(n: Option<&Node>) -> Vec<String> {
    n.and_then(Node::as_array)
        .unwrap_or(&[])
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// Every member but `command` and `args` keeps its exact text; the launch line is wrapped.
fn assert_wrapped(original: &str, watched: &str, names: &[String]) {
    let (a, b) = (
        jsonc::parse(original).unwrap(),
        jsonc::parse(watched).unwrap(),
    );
    let (before, after) = (edit::servers(&a), edit::servers(&b));
    assert_eq!(before.len(), after.len());
    for (o, w) in before.iter().zip(&after) {
        assert_eq!(o.name, w.name);
        let others = |text: &str, s: &edit::Server<'_>| -> Vec<String> {
            s.node
                .members()
                .iter()
                .filter(|m| m.key != "command" && m.key != "args")
                .map(|m| text[m.span.clone()].to_string())
                .collect()
        };
        assert_eq!(others(original, o), others(watched, w), "{}", o.name);
        if !names.contains(&o.name) {
            assert_eq!(
                &original[o.node.span.clone()],
                &watched[w.node.span.clone()]
            );
            continue;
        }
        assert_eq!(w.node.get("command").and_then(Node::as_str), Some(BIN));
        let mut expected = vec![
            "wrap".to_string(),
            "--name".into(),
            o.name.clone(),
            "--".into(),
        ];
        expected.push(o.node.get("command").and_then(Node::as_str).unwrap().into());
        expected.extend(strings(o.node.get("args")));
        assert_eq!(strings(w.node.get("args")), expected, "{}", o.name);
        assert!(w.watched());
    }
}

fn check(name: &str, expect_watched: &[&str]) {
    let original = fixture(name);
    let (watched, names) = apply_all(&original, true);
    assert_eq!(names, expect_watched, "{name}: servers watched");
    let golden = fixture_path(&format!("{name}.watched"));
    if std::env::var_os("MCPWATCH_BLESS").is_some() {
        std::fs::write(&golden, &watched).expect("bless");
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} is missing: run with MCPWATCH_BLESS=1", golden.display()));
    assert_eq!(
        watched,
        expected,
        "{name}: differs from {}",
        golden.display()
    );
    assert_wrapped(&original, &watched, &names);

    let (twice, again) = apply_all(&watched, true);
    assert!(again.is_empty(), "{name}: watched twice: {again:?}");
    assert_eq!(twice, watched);

    let (restored, unwatched) = apply_all(&watched, false);
    assert_eq!(unwatched, expect_watched, "{name}: servers unwatched");
    assert_eq!(restored, original, "{name}: round trip");
}

#[test]
fn claude_desktop_round_trip_keeps_windows_paths_env_and_unknown_keys() {
    check(
        "claude_desktop.json",
        &["filesystem", "github", "sqlite", "memory"],
    );
}

#[test]
fn vscode_jsonc_round_trip_keeps_comments_and_trailing_commas() {
    check("vscode_mcp.json", &["fs", "perplexity"]);
}

#[test]
fn cursor_round_trip_leaves_url_servers_alone() {
    check("cursor_mcp.json", &["everything", "local-py"]);
}

#[test]
fn windsurf_round_trip_leaves_server_url_alone() {
    check("windsurf_mcp_config.json", &["git"]);
}

#[test]
fn claude_code_round_trip_covers_user_and_project_servers() {
    check("claude_code.json", &["shell", "playwright"]);
    let text = fixture("claude_code.json");
    let root = jsonc::parse(&text).unwrap();
    let listed: Vec<(String, String, Transport)> = edit::servers(&root)
        .into_iter()
        .map(|s| (s.section, s.name, s.transport))
        .collect();
    assert_eq!(
        listed,
        [
            ("mcpServers".into(), "shell".into(), Transport::Stdio),
            ("mcpServers".into(), "notion".into(), Transport::Http),
            (
                "projects[\"/home/bob/src/app\"].mcpServers".into(),
                "playwright".into(),
                Transport::Stdio
            ),
        ]
    );
}

#[test]
fn an_already_wrapped_server_is_left_alone_and_unwrapped_on_unwatch() {
    let original = fixture("already_wrapped.json");
    let (watched, names) = apply_all(&original, true);
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(watched, original);
    let (restored, names) = apply_all(&original, false);
    assert_eq!(names, ["filesystem", "by-hand"]);
    let root = jsonc::parse(&restored).expect("still JSON");
    let servers = edit::servers(&root);
    let line = |i: usize| {
        let s = &servers[i];
        (
            s.node
                .get("command")
                .and_then(Node::as_str)
                .unwrap()
                .to_string(),
            strings(s.node.get("args")),
        )
    };
    assert_eq!(
        line(0),
        (
            "npx".into(),
            vec![
                "-y".into(),
                "@modelcontextprotocol/server-filesystem".into(),
                "/srv".into()
            ]
        )
    );
    // Written by hand with options of its own: unwrapped all the same.
    assert_eq!(line(1), ("node".into(), vec!["/opt/server.js".into()]));
    assert!(!servers[1].watched());
}

#[test]
fn the_diff_shows_only_the_changed_lines() {
    let original = fixture("claude_desktop.json");
    let root = jsonc::parse(&original).unwrap();
    let servers = edit::servers(&root);
    let memory = servers.iter().find(|s| s.name == "memory").unwrap();
    let edits = edit::watch(&original, memory, BIN).unwrap();
    assert_eq!(
        diff(&original, &edits),
        format!(
            "  @@ line 23 @@\n  -      \"command\": \"mcp-server-memory\"\n  +      \"args\": [\"wrap\", \"--name\", \"memory\", \"--\", \"mcp-server-memory\"], \"command\": \"{BIN}\"\n"
        )
    );
}

#[test]
fn servers_that_cannot_be_wrapped_say_why() {
    let text = r#"{"mcpServers": {
        "a": {"command": 7},
        "b": {"command": "x", "args": "not a list"},
        "c": {"type": "websocket", "url": "ws://x"},
        "d": {"command": "mcpwatch", "args": ["wrap", "--name", "d", "--"]}
    }}"#;
    let root = jsonc::parse(text).unwrap();
    let got: Vec<String> = edit::servers(&root)
        .iter()
        .map(|s| match edit::watch(text, s, BIN) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "`command` is missing or not a string",
            "`args` is not a list",
            "websocket server: only stdio servers are wrapped",
            "already watched",
        ]
    );
    let d = &edit::servers(&root)[3];
    assert_eq!(
        edit::unwatch(text, d).unwrap_err().to_string(),
        "the wrap line has no command after `--`"
    );
}

#[test]
fn a_file_changed_since_it_was_read_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, "{\"mcpServers\": {}}").unwrap();
    let loaded = super::file::load(&path).unwrap();
    std::fs::write(&path, "{\"mcpServers\": {\"new\": {}}}").unwrap();
    let err = loaded.replace("{}").unwrap_err().to_string();
    assert!(err.contains("changed since it was read"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"mcpServers\": {\"new\": {}}}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "the temporary file is removed");
}

#[test]
fn a_symlinked_config_is_written_through_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("dotfiles-mcp.json");
    let link = dir.path().join("mcp.json");
    std::fs::write(&target, "{}").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let loaded = super::file::load(&link).unwrap();
    loaded.replace("{\"a\": 1}").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\": 1}");
}
