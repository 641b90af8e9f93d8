//! The `mcpwatch clients` command: list, and `watch`/`unwatch` with a diff and a confirmation.
//!
//! Files are handled one at a time and independently: a file that cannot be read or parsed is
//! reported and left alone, the others are still done, and the exit code says whether all went
//! well. Everything shown from a file goes through `term::sanitize`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcpwatch_core::paths::{default_data_dir, process_env};

use super::discovery::{self, Client, Location, Os, Places};
use super::edit::{self, Edit, Server, Skip, Transport};
use super::file::{self, Loaded};
use super::gateway::{self, Gateway, Route, Routes};
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
    let routes = match load_routes() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("warning: {}", sanitize(&format!("{e:#}")));
            None
        }
    };
    for loc in targets {
        header(loc);
        let (loaded, root) = match open(loc) {
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
                if s.watched()
                    || routes
                        .as_ref()
                        .is_some_and(|r| gateway::routed(&loaded.real_path(), s, r))
                {
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

/// The route records, from the data dir (`$MCPWATCH_DATA_DIR` or the platform's).
fn load_routes() -> anyhow::Result<Routes> {
    Routes::load(&default_data_dir(&process_env))
}

/// What one `watch` or `unwatch` run works with, besides the files.
struct Ctx {
    dir: Direction,
    bin: String,
    gateway: Option<Gateway>,
    routes: Routes,
    /// Servers routed through the gateway by this run, for the instructions at the end.
    routed: Vec<Route>,
}

fn change(targets: &[Location], args: &EditArgs, dir: Direction) -> anyhow::Result<ExitCode> {
    let gateway = match (&args.gateway, dir) {
        (Some(g), Direction::Watch) => Some(Gateway::parse(g)?),
        (Some(_), Direction::Unwatch) => {
            bail!("--gateway is for watch; unwatch restores the URLs watch recorded")
        }
        (None, _) => None,
    };
    let mut ctx = Ctx {
        dir,
        bin: own_path()?,
        gateway,
        routes: load_routes()?,
        routed: Vec::new(),
    };
    let mut failed = false;
    let mut named = vec![false; args.servers.len()];
    let mut wrote = false;
    for loc in targets {
        header(loc);
        match change_file(loc, args, &mut ctx, &mut named) {
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
    if let (Some(g), false) = (&ctx.gateway, ctx.routed.is_empty()) {
        print!("{}", sanitize_lines(&gateway::instructions(g, &ctx.routed)));
    }
    Ok(exit(failed))
}

/// Watches or unwatches the selected servers of one file; true when it was written.
fn change_file(
    loc: &Location,
    args: &EditArgs,
    ctx: &mut Ctx,
    named: &mut [bool],
) -> anyhow::Result<bool> {
    let (loaded, root) = open(loc).map_err(anyhow::Error::msg)?;
    let file = loaded.real_path();
    let mut edits: Vec<Edit> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    for server in edit::servers(&root) {
        if let Some(i) = args.servers.iter().position(|n| *n == server.name) {
            named[i] = true;
        } else if !args.servers.is_empty() {
            continue;
        }
        let planned = plan(&loaded.text, &file, &server, ctx, &routes);
        let planned = planned.map(|(e, r)| {
            routes.extend(r);
            e
        });
        report(&server, planned, &mut edits);
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
    // The record goes first on watch, so a written URL can always be restored; last on
    // unwatch, so a record is only dropped once its URL is back.
    if ctx.dir == Direction::Watch && !routes.is_empty() {
        ctx.routes.add(&routes)?;
    }
    loaded.replace(&new_text)?;
    if ctx.dir == Direction::Unwatch && !routes.is_empty() {
        ctx.routes.remove(&routes)?;
    }
    if ctx.dir == Direction::Watch {
        ctx.routed.extend(routes);
    }
    println!(
        "  wrote {} (backup: {})",
        sanitize(&loaded.shown.display().to_string()),
        sanitize(&backup.display().to_string())
    );
    Ok(true)
}

/// The edits for one server, and the route record when it is an HTTP server.
fn plan(
    text: &str,
    file: &str,
    server: &Server<'_>,
    ctx: &Ctx,
    planned: &[Route],
) -> Result<(Vec<Edit>, Option<Route>), Skip> {
    let http = server.transport == Transport::Http;
    match (ctx.dir, http) {
        (Direction::Watch, false) => edit::watch(text, server, &ctx.bin).map(|e| (e, None)),
        (Direction::Unwatch, false) => edit::unwatch(text, server).map(|e| (e, None)),
        (Direction::Watch, true) => gateway::watch(
            text,
            file,
            server,
            ctx.gateway.as_ref(),
            &ctx.routes,
            planned,
        )
        .map(|(e, r)| (vec![e], Some(r))),
        (Direction::Unwatch, true) => {
            gateway::unwatch(file, server, &ctx.routes).map(|(e, r)| (vec![e], Some(r)))
        }
    }
}

/// Each line of `text` made safe to show.
fn sanitize_lines(text: &str) -> String {
    text.lines().map(|l| format!("{}\n", sanitize(l))).collect()
}

fn report(server: &Server<'_>, plan: Result<Vec<Edit>, Skip>, edits: &mut Vec<Edit>) {
    let name = sanitize(&server.name);
    match plan {
        Ok(e) => {
            println!("  {name}: will change");
            edits.extend(e);
        }
        Err(skip) => println!("  {name}: left alone ({})", sanitize(&skip.to_string())),
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
