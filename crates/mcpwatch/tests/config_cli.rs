//! `mcpwatch config check` as a user runs it.

mod common;

use common::bin;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcpwatch.toml");
    std::fs::write(&file, text).unwrap();
    let out = bin().args(["config", "check"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&file.display().to_string(), "FILE");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn a_valid_file_is_ok() {
    let (ok, stdout, _) =
        check("[server]\nlisten = \"127.0.0.1:7878\"\n[retention]\nmax_age = \"7d\"\n");
    assert!(ok);
    assert!(stdout.ends_with(": OK\n"), "{stdout}");
}

#[test]
fn every_error_is_printed_with_file_line_and_column() {
    let (ok, _, stderr) =
        check("[server]\nlisten = \"here\"\n\n[retention]\nmax_size = \"lots\"\n\n[nope]\n");
    assert!(!ok);
    assert!(
        stderr.contains("FILE:2:1: server.listen: invalid socket address"),
        "{stderr}"
    );
    assert!(stderr.contains("FILE:5:1: retention.max_size:"), "{stderr}");
    assert!(
        stderr.contains("FILE:7:1: nope: unknown section"),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn an_unset_environment_variable_is_named() {
    let (ok, _, stderr) = check("[[auth.tokens]]\nname = \"a\"\ntoken = \"${SURELY_UNSET_MCPWATCH_VAR}\"\nroles = [\"read\"]\n");
    assert!(!ok);
    assert!(
        stderr.contains("SURELY_UNSET_MCPWATCH_VAR is not set"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_says_so() {
    let out = bin()
        .args(["config", "check", "/nonexistent/mcpwatch.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /nonexistent/mcpwatch.toml"));
}

#[test]
fn every_section_is_checked_and_all_errors_come_together() {
    let (ok, _, stderr) = check(
        "[detection]\nmax_keys_per_rule = \"lots\"\n\n[rules]\nfiles = [\"/nonexistent/rules.yaml\"]\n\n\
         [metrics]\ncolour = 1\n\n[gateway]\nlisten = \"nowhere\"\n\n[channels.pager]\ntype = \"carrier-pigeon\"\n",
    );
    assert!(!ok);
    for section in ["detection", "rules.files", "metrics", "gateway", "channels"] {
        assert!(
            stderr.contains(section),
            "no error about {section}:\n{stderr}"
        );
    }
}
