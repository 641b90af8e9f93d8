//! The errors of this crate. Each names where the problem is and what to do next.

use std::fmt;
use std::path::PathBuf;

/// One problem in a rule file, with its position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file (or `<defaults>` for the built-in rules).
    pub file: String,
    /// The rule's name, or `#N` (1-based) when it has none yet.
    pub rule: Option<String>,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// 1-based column in the file.
    pub column: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}")?,
            (Some(l), None) => write!(f, ":{l}")?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Errors of the detection library.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Rule files did not compile; nothing was loaded.
    #[error("{} error(s) in rule files; nothing was loaded:\n{}", .0.len(), render(.0))]
    Rules(Vec<RuleError>),
    /// A file could not be read.
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of an events file is not a valid event.
    #[error("{path}:{line}: not a valid event: {message}; fix or remove that line (one JSON event per line)")]
    BadEventLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An engine snapshot cannot be restored.
    #[error("cannot restore the detection state: {0}; start without this snapshot (replaying from the stream position before it) or from an older one")]
    Snapshot(#[from] SnapshotError),
}

/// Why an engine snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, or one damaged in storage.
    #[error("the snapshot is corrupt ({0})")]
    Corrupt(String),
    /// Written by another version of mcpwatch.
    #[error("the snapshot has format version {found}, this build reads version {supported}")]
    Version {
        /// The version in the snapshot (`none` when it names none).
        found: String,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// Taken of an engine of another scope.
    #[error("the snapshot is of a {found} engine, not of a {expected} one")]
    Scope {
        /// The snapshot's scope.
        found: crate::Scope,
        /// The scope asked for.
        expected: crate::Scope,
    },
}

fn render(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
