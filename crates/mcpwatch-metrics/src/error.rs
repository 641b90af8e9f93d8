//! The errors of this crate: configuration mistakes, each naming the key and what to do.

/// Something in `[metrics]` or `[otlp]` is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A value is out of range or malformed.
    #[error("{key}: {message}")]
    Config {
        /// The key, e.g. `metrics.max_users`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

impl MetricsError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}
