//! The event stream: one JetStream stream capturing every subject of [`crate::subject`],
//! created or brought up to date by `serve` when it starts.
//!
//! File storage; three replicas when the server is part of a cluster, one when it stands alone
//! (or what [`StreamSettings::replicas`] says); limits retention by age and bytes, oldest
//! discarded first; a duplicate window in which a re-published event id (`Nats-Msg-Id`) is
//! acknowledged without being stored again. Edges only publish: they need no right to manage
//! streams.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;

use crate::subject::PREFIX;
use crate::NatsError;

/// The stream's name unless configured otherwise.
pub const DEFAULT_STREAM: &str = "MCPWATCH_EVENTS";

/// What the stream should be.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// The stream's name.
    pub name: String,
    /// Replicas; `None` means 3 in a cluster, 1 on a single server.
    pub replicas: Option<usize>,
    /// Events older than this are discarded.
    pub max_age: Duration,
    /// The stream never holds more than this many bytes; the oldest go first.
    pub max_bytes: i64,
    /// How long a published event id is remembered to discard a re-publish.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: DEFAULT_STREAM.to_owned(),
            replicas: None,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 8 * 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl StreamSettings {
    /// The subjects the stream captures.
    pub fn subjects() -> Vec<String> {
        vec![format!("{PREFIX}.>")]
    }

    fn config(&self, replicas: usize) -> Config {
        Config {
            name: self.name.clone(),
            subjects: Self::subjects(),
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }
}

/// Creates the stream, or updates it where it differs from `settings`. Returns the replicas it
/// has.
pub async fn ensure_stream(js: &Context, settings: &StreamSettings) -> Result<usize, NatsError> {
    let clustered = js.client().server_info().cluster.is_some();
    let replicas = settings.replicas.unwrap_or(if clustered { 3 } else { 1 });
    let want = settings.config(replicas);
    let name = &settings.name;
    match js.get_stream(name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| NatsError::Stream(format!("cannot read stream {name}: {e}")))?;
            let have = &info.config;
            let differs = have.subjects != want.subjects
                || have.num_replicas != want.num_replicas
                || have.max_age != want.max_age
                || have.max_bytes != want.max_bytes
                || have.duplicate_window != want.duplicate_window
                || have.storage != want.storage
                || have.retention != want.retention;
            if differs {
                if have.storage != want.storage || have.retention != want.retention {
                    return Err(NatsError::Stream(format!(
                        "stream {name} exists with another storage or retention policy, which \
                         JetStream cannot change; delete it (nats stream rm {name}) or configure \
                         another name under [nats] stream"
                    )));
                }
                js.update_stream(want).await.map_err(|e| {
                    NatsError::Stream(format!("cannot update stream {name}: {e}"))
                })?;
                tracing::info!(stream = %name, replicas, "NATS stream updated");
            }
        }
        Err(e) if not_found(&e.kind()) => {
            js.create_stream(want).await.map_err(|e| {
                NatsError::Stream(format!(
                    "cannot create stream {name} with {replicas} replica(s): {e}{}",
                    if e.to_string().contains("10065") {
                        // JetStream's "subjects overlap with an existing stream".
                        format!(
                            "; another stream already takes {}.>: point [nats] stream at that \
                             stream's name, or delete it (nats stream rm NAME)",
                            crate::subject::PREFIX
                        )
                    } else if replicas > 1 {
                        "; a cluster needs at least as many JetStream servers as replicas ([nats] replicas)"
                            .to_owned()
                    } else {
                        String::new()
                    }
                ))
            })?;
            tracing::info!(stream = %name, replicas, "NATS stream created");
        }
        Err(e) => {
            return Err(NatsError::Stream(format!(
                "cannot look up stream {name}: {e}; is JetStream enabled on the server (nats-server -js)?"
            )))
        }
    }
    Ok(replicas)
}

fn not_found(kind: &async_nats::jetstream::context::GetStreamErrorKind) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
