//! The `mcpwatch clients` command: list, and `watch`/`unwatch` with a diff and a confirmation.
//!
//! Files are handled one at a time and independently: a file that cannot be read or parsed is
//! reported and left alone, the others are still done, and the exit code says whether all went
//! well. Everything shown from a file goes through `term::sanitize`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcpwatch_core::paths::process_env;

use super::discovery::{self, Client, Location, Os, Places};
use super::edit::{self, Edit, Server, Skip};
use super::file::{self, Loaded};
use super::jsonc;
use super::{Action, ClientsArgs, EditArgs};
use crate::term::sanitize;

/// Runs `mcpwatch clients [watch|unwatch]`.
pub fn run(args: ClientsArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(&args)?;
    match args.action {
        None => list(&targets),
        Some(Action::Watch(e)) => change(&targets, &e, Direction::Watch),
        Some(Action::Unwatch(e)) => change(&targets, &e, Direction::Unwatch),
    }
}

/// The files to work on: `--config` files, else the known locations that exist.
fn targets(args: &ClientsArgs) -> anyhow::Result<Vec<Location>> {
    if !args.configs.is_empty() {
        return Ok(args
            .configs
            .iter()
            .map(|path| Location {
                client: args.client.unwrap_or(Client::Custom),
                scope: "file",
                path: path.clone(),
            })
            .collect());
    }
    let home = process_env("HOME")
        .map(PathBuf::from)
        .context("$HOME is not set; pass the config file with --config FILE")?;
    let xdg = process_env("XDG_CONFIG_HOME").map(PathBuf::from);
    let project = std::env::current_dir().context("cannot read the current directory")?;
    let places = Places {
        os: Os::current(),
        home: &home,
        xdg_config: xdg.as_deref(),
        project: &project,
    };
    let found = discovery::found(&places, args.client);
    if found.is_empty() {
        let mut msg = String::from("no MCP client config found; looked in:\n");
        for l in discovery::locations(&places)
            .iter()
            .filter(|l| args.client.is_none_or(|c| c == l.client))
        {
            msg.push_str(&format!("  {:<15} {}\n", l.client.name(), l.path.display()));
        }
        msg.push_str("pass a config file with --config FILE");
        bail!(msg);
    }
    Ok(found)
}

/// A file read and parsed, or the message saying why not.
fn open(loc: &Location) -> Result<(Loaded, jsonc::Node), String> {
    let loaded = file::load(&loc.path).map_err(|e| format!("{e:#}"))?;
    let root = jsonc::parse(&loaded.text).map_err(|e| {
        format!(
            "{}: {e}; it is not valid JSON, nothing was changed",
            loc.path.display()
        )
    })?;
    Ok((loaded, root))
}

fn header(loc: &Location) {
    println!(
        "{} ({}) {}",
        loc.client.name(),
        loc.scope,
        sanitize(&loc.path.display().to_string())
    );
}

fn list(targets: &[Location]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for loc in targets {
        header(loc);
        let (_, root) = match open(loc) {
            Ok(x) => x,
            Err(msg) => {
                eprintln!("error: {}", sanitize(&msg));
                failed = true;
                continue;
            }
        };
        let servers = edit::servers(&root);
        if servers.is_empty() {
            println!("  (no servers)");
        }
        let mut section = "";
        for s in &servers {
            if s.section != section {
                section = &s.section;
                println!("  {}:", sanitize(section));
            }
            println!(
                "    {:<20} {:<6} {:<12} {}",
                sanitize(&s.name),
                sanitize(s.transport.label()),
                if s.watched() {
                    "watched"
                } else {
                    "not watched"
                },
                sanitize(&s.target())
            );
        }
    }
    Ok(exit(failed))
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Watch,
    Unwatch,
}

/// The absolute path of this binary, which watched launch lines run.
fn own_path() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the path of the mcpwatch binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    exe.to_str().map(str::to_owned).with_context(|| {
        format!(
            "the mcpwatch binary's path {} is not UTF-8; install it under a UTF-8 path",
            exe.display()
        )
    })
}

fn change(targets: &[Location], args: &EditArgs, dir: Direction) -> anyhow::Result<ExitCode> {
    let bin = own_path()?;
    let mut failed = false;
    let mut named = vec![false; args.servers.len()];
    let mut wrote = false;
    for loc in targets {
        header(loc);
        match change_file(loc, args, dir, &bin, &mut named) {
            Ok(w) => wrote |= w,
            Err(e) => {
                eprintln!("error: {}", sanitize(&format!("{e:#}")));
                failed = true;
            }
        }
    }
    for (name, seen) in args.servers.iter().zip(named) {
        if !seen {
            eprintln!("error: no server named {:?} in these files", sanitize(name));
            failed = true;
        }
    }
    if wrote {
        println!("restart the client to use the new launch lines; events go to `mcpwatch serve`");
    }
    Ok(exit(failed))
}

/// Watches or unwatches the selected servers of one file; true when it was written.
fn change_file(
    loc: &Location,
    args: &EditArgs,
    dir: Direction,
    bin: &str,
    named: &mut [bool],
) -> anyhow::Result<bool> {
    let (loaded, root) = open(loc).map_err(anyhow::Error::msg)?;
    let mut edits: Vec<Edit> = Vec::new();
    for server in edit::servers(&root) {
        if let Some(i) = args.servers.iter().position(|n| *n == server.name) {
            named[i] = true;
        } else if !args.servers.is_empty() {
            continue;
        }
        report(&server, plan(&loaded.text, &server, dir, bin), &mut edits);
    }
    if edits.is_empty() {
        println!("  nothing to change");
        return Ok(false);
    }
    let new_text = edit::apply(&loaded.text, &edits);
    // The edits keep the document valid; never write one that would not be.
    if let Err(e) = jsonc::parse(&new_text) {
        bail!("internal error: the edited file would not parse ({e}); nothing was written");
    }
    loaded.check_writable()?;
    print!("{}", diff(&loaded.text, &edits));
    if !args.yes && !confirm(&loaded.shown)? {
        println!("  not written");
        return Ok(false);
    }
    let backup = loaded.backup()?;
    loaded.replace(&new_text)?;
    println!(
        "  wrote {} (backup: {})",
        sanitize(&loaded.shown.display().to_string()),
        sanitize(&backup.display().to_string())
    );
    Ok(true)
}

fn plan(text: &str, server: &Server<'_>, dir: Direction, bin: &str) -> Result<Vec<Edit>, Skip> {
    match dir {
        Direction::Watch => edit::watch(text, server, bin),
        Direction::Unwatch => edit::unwatch(text, server),
    }
}

fn report(server: &Server<'_>, plan: Result<Vec<Edit>, Skip>, edits: &mut Vec<Edit>) {
    let name = sanitize(&server.name);
    match plan {
        Ok(e) => {
            println!("  {name}: will change");
            edits.extend(e);
        }
        Err(skip) => println!("  {name}: left alone ({skip})"),
    }
}

fn confirm(path: &Path) -> anyhow::Result<bool> {
    eprint!(
        "write these changes to {}? [y/N] ",
        sanitize(&path.display().to_string())
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer; pass --yes to write without asking")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The changed lines, old (`-`) then new (`+`), one hunk per group of touching lines.
pub fn diff(old: &str, edits: &[Edit]) -> String {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(old.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_of = |byte: usize| starts.partition_point(|&s| s <= byte) - 1;
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.range.start);
    let mut hunks: Vec<(usize, usize, Vec<&Edit>)> = Vec::new();
    for e in sorted {
        let (first, last) = (line_of(e.range.start), line_of(e.range.end));
        match hunks.last_mut() {
            Some(h) if first <= h.1 + 1 => {
                h.1 = h.1.max(last);
                h.2.push(e);
            }
            _ => hunks.push((first, last, vec![e])),
        }
    }
    let mut out = String::new();
    for (first, last, group) in hunks {
        let from = starts[first];
        let to = starts.get(last + 1).map_or(old.len(), |&s| s - 1);
        let region = &old[from..to.max(from)];
        let shifted: Vec<Edit> = group
            .iter()
            .map(|e| Edit {
                range: e.range.start - from..e.range.end - from,
                text: e.text.clone(),
            })
            .collect();
        let new_region = edit::apply(region, &shifted);
        out.push_str(&format!("  @@ line {} @@\n", first + 1));
        for l in region.lines() {
            out.push_str(&format!("  -{}\n", sanitize(l)));
        }
        for l in new_region.lines() {
            out.push_str(&format!("  +{}\n", sanitize(l)));
        }
    }
    out
}
