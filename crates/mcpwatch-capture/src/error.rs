//! The capture crate's one error type; every message says what to do next.

use std::path::Path;

/// What can go wrong while capturing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A file or directory under the data dir could not be used.
    #[error("{path}: {message}")]
    Io {
        /// The path involved.
        path: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The server command could not be started.
    #[error("could not start the MCP server `{command}`: {source}; check the command after `--` and that it is on PATH")]
    Spawn {
        /// The command as given.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
}

impl CaptureError {
    /// An I/O error on a path, with the path in the message.
    pub fn io(path: &Path, err: impl std::fmt::Display) -> Self {
        CaptureError::Io {
            path: path.display().to_string(),
            message: format!(
                "{err} (check that the data dir is writable, or set --data-dir / MCPWATCH_DATA_DIR)"
            ),
        }
    }
}

/// The innermost cause of an error (what the OS said, such as "Connection refused"), which
/// reqwest's own message ("error sending request for url …") leaves out.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// An error with its innermost cause, when that adds anything.
pub(crate) fn with_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let (outer, inner) = (e.to_string(), root_cause(e));
    if outer.contains(&inner) {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}
