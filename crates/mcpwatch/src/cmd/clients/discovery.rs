//! Where MCP clients keep their server lists, on Linux and macOS.
//!
//! Each client reads one or two JSON files: a user file under the home directory and, for the
//! editors and Claude Code, one in the project (the current directory). The shapes differ
//! only in where the server map sits, which `edit::servers` handles for all of them.

use std::path::{Path, PathBuf};

/// The MCP clients whose config files `mcpwatch clients` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Desktop: `claude_desktop_config.json`, `mcpServers`.
    ClaudeDesktop,
    /// Claude Code: `~/.claude.json` (user and per-project `mcpServers`) and `./.mcp.json`.
    ClaudeCode,
    /// Cursor: `~/.cursor/mcp.json` and `./.cursor/mcp.json`, `mcpServers`.
    Cursor,
    /// VS Code: the user profile's `mcp.json` and `./.vscode/mcp.json`, `servers` (JSONC).
    Vscode,
    /// Windsurf: `~/.codeium/windsurf/mcp_config.json`, `mcpServers`.
    Windsurf,
    /// A file given with `--config`.
    Custom,
}

impl Client {
    /// The name used on the command line and in listings.
    pub fn name(self) -> &'static str {
        match self {
            Client::ClaudeDesktop => "claude-desktop",
            Client::ClaudeCode => "claude-code",
            Client::Cursor => "cursor",
            Client::Vscode => "vscode",
            Client::Windsurf => "windsurf",
            Client::Custom => "custom",
        }
    }
}

/// Which platform's locations to look in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
}

impl Os {
    /// The platform this binary runs on (anything not macOS uses the Linux/XDG layout).
    pub fn current() -> Os {
        if cfg!(target_os = "macos") {
            Os::MacOs
        } else {
            Os::Linux
        }
    }
}

/// What discovery needs from the environment, passed in so tests control it.
pub struct Places<'a> {
    pub os: Os,
    pub home: &'a Path,
    /// `$XDG_CONFIG_HOME`, when set (Linux).
    pub xdg_config: Option<&'a Path>,
    /// The project directory: workspace files are looked for here.
    pub project: &'a Path,
}

/// One config file a client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub client: Client,
    /// `user` or `project`.
    pub scope: &'static str,
    pub path: PathBuf,
}

/// Every location the known clients read, whether or not the file exists, in listing order.
pub fn locations(p: &Places<'_>) -> Vec<Location> {
    let config_dir = match (p.os, p.xdg_config) {
        (Os::MacOs, _) => p.home.join("Library/Application Support"),
        (Os::Linux, Some(xdg)) if xdg.is_absolute() => xdg.to_path_buf(),
        (Os::Linux, _) => p.home.join(".config"),
    };
    let at = |client, scope, path: PathBuf| Location {
        client,
        scope,
        path,
    };
    vec![
        at(
            Client::ClaudeDesktop,
            "user",
            config_dir.join("Claude/claude_desktop_config.json"),
        ),
        at(Client::ClaudeCode, "user", p.home.join(".claude.json")),
        at(Client::ClaudeCode, "project", p.project.join(".mcp.json")),
        at(Client::Cursor, "user", p.home.join(".cursor/mcp.json")),
        at(
            Client::Cursor,
            "project",
            p.project.join(".cursor/mcp.json"),
        ),
        at(
            Client::Vscode,
            "user",
            config_dir.join("Code/User/mcp.json"),
        ),
        at(
            Client::Vscode,
            "project",
            p.project.join(".vscode/mcp.json"),
        ),
        at(
            Client::Windsurf,
            "user",
            p.home.join(".codeium/windsurf/mcp_config.json"),
        ),
    ]
}

/// The locations whose file exists, keeping only `only` when given.
pub fn found(p: &Places<'_>, only: Option<Client>) -> Vec<Location> {
    let mut seen = Vec::<PathBuf>::new();
    locations(p)
        .into_iter()
        .filter(|l| only.is_none_or(|c| c == l.client))
        .filter(|l| l.path.is_file())
        // The project can be the home directory; list a file once.
        .filter(|l| {
            let key = l.path.canonicalize().unwrap_or_else(|_| l.path.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(os: Os, xdg: Option<&str>) -> Vec<String> {
        let places = Places {
            os,
            home: Path::new("/home/u"),
            xdg_config: xdg.map(Path::new),
            project: Path::new("/work/p"),
        };
        locations(&places)
            .into_iter()
            .map(|l| format!("{} {} {}", l.client.name(), l.scope, l.path.display()))
            .collect()
    }

    #[test]
    fn linux_locations_follow_xdg() {
        assert_eq!(
            paths(Os::Linux, Some("/home/u/.xdg")),
            [
                "claude-desktop user /home/u/.xdg/Claude/claude_desktop_config.json",
                "claude-code user /home/u/.claude.json",
                "claude-code project /work/p/.mcp.json",
                "cursor user /home/u/.cursor/mcp.json",
                "cursor project /work/p/.cursor/mcp.json",
                "vscode user /home/u/.xdg/Code/User/mcp.json",
                "vscode project /work/p/.vscode/mcp.json",
                "windsurf user /home/u/.codeium/windsurf/mcp_config.json",
            ]
        );
        // A relative XDG_CONFIG_HOME is invalid per the spec and ignored.
        assert_eq!(
            paths(Os::Linux, Some("rel"))[0],
            "claude-desktop user /home/u/.config/Claude/claude_desktop_config.json"
        );
    }

    #[test]
    fn macos_locations_are_under_application_support() {
        let p = paths(Os::MacOs, Some("/ignored"));
        assert_eq!(
            p[0],
            "claude-desktop user /home/u/Library/Application Support/Claude/claude_desktop_config.json"
        );
        assert_eq!(
            p[5],
            "vscode user /home/u/Library/Application Support/Code/User/mcp.json"
        );
    }
}
