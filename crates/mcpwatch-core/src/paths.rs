//! Where mcpwatch keeps its data and finds its collector, the same for every command.

use std::path::PathBuf;

/// The default collector address.
pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:7878";

/// `$MCPWATCH_DATA_DIR`, else the platform data dir (`$XDG_DATA_HOME/mcpwatch`,
/// `~/.local/share/mcpwatch`, `~/Library/Application Support/mcpwatch` on macOS,
/// `%LOCALAPPDATA%\mcpwatch` on Windows), else `./mcpwatch-data`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(d) = set("MCPWATCH_DATA_DIR") {
        return PathBuf::from(d);
    }
    if cfg!(windows) {
        if let Some(d) = set("LOCALAPPDATA") {
            return PathBuf::from(d).join("mcpwatch");
        }
    }
    if let Some(d) = set("XDG_DATA_HOME") {
        return PathBuf::from(d).join("mcpwatch");
    }
    if let Some(home) = set("HOME") {
        let home = PathBuf::from(home);
        if cfg!(target_os = "macos") {
            return home.join("Library/Application Support/mcpwatch");
        }
        return home.join(".local/share/mcpwatch");
    }
    PathBuf::from("mcpwatch-data")
}

/// `$MCPWATCH_COLLECTOR`, else [`DEFAULT_COLLECTOR`].
pub fn default_collector(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("MCPWATCH_COLLECTOR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_COLLECTOR.to_owned())
}

/// Reads the process environment; what the functions above take outside tests.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_the_variable_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_data_dir(&env(&[("MCPWATCH_DATA_DIR", "/d"), ("HOME", "/h")])),
            PathBuf::from("/d")
        );
        if cfg!(target_os = "linux") {
            assert_eq!(
                default_data_dir(&env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])),
                PathBuf::from("/x/mcpwatch")
            );
            assert_eq!(
                default_data_dir(&env(&[("HOME", "/h")])),
                PathBuf::from("/h/.local/share/mcpwatch")
            );
        }
        assert_eq!(default_collector(&env(&[])), DEFAULT_COLLECTOR);
    }
}
