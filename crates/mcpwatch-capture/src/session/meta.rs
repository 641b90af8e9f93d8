//! Session metadata: what every event of a session carries, the `session_start` event, and
//! [`SessionTracker::emit`], through which every event leaves (stamped and redacted).

use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Map, Value};

use super::{SessionConfig, SessionTracker};

impl SessionTracker {
    pub(super) fn session_started(&mut self, result: &Value, out: &mut Vec<Event>) {
        let server_info = result.get("serverInfo").cloned().unwrap_or(Value::Null);
        let capabilities: Vec<Value> = result
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| c.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        let mut m = Map::new();
        m.insert(
            "server_info".into(),
            json!({"name": server_info.get("name"), "version": server_info.get("version")}),
        );
        m.insert(
            "protocol_version".into(),
            result
                .get("protocolVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
        m.insert("server_capabilities".into(), Value::Array(capabilities));
        let msg = format!(
            "MCP session with {} started ({} {})",
            self.cfg.server,
            server_info
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("unknown server"),
            server_info
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        out.push(self.emit(
            Level::Info,
            "session",
            "session_start",
            msg,
            m,
            &["session", "start"],
        ));
    }

    /// A `protocol_error` warning: a frame the tracker could not follow as MCP.
    pub(super) fn protocol_warning(&self, message: String, metadata: Map<String, Value>) -> Event {
        self.emit(
            Level::Warning,
            "system",
            "protocol_error",
            message,
            metadata,
            &["protocol"],
        )
    }

    /// Builds an event with the session's common metadata, then redacts it.
    pub(super) fn emit(
        &self,
        level: Level,
        category: &str,
        event_type: &str,
        message: String,
        mut metadata: Map<String, Value>,
        tags: &[&str],
    ) -> Event {
        let timestamp = self.clock.now();
        if !self.shared.clean {
            self.shared.add_to(&mut metadata);
        }
        let mut event = Event {
            id: self.ids.next(timestamp),
            timestamp,
            level,
            category: category.into(),
            source: self.cfg.source.clone(),
            event_type: event_type.into(),
            message,
            metadata,
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
        };
        self.cfg.redactor.redact_event(&mut event);
        if self.shared.clean {
            // The redactor leaves these as they are (checked when they were built), and it
            // treats every metadata key on its own: adding them afterwards gives the same event
            // without scanning the same strings again for every event of the session.
            self.shared.add_to(&mut event.metadata);
        }
        event
    }
}

/// The metadata every event of a session carries (`server`, `session_id`, `user_id` and, once
/// the client has introduced itself, `client`), built once rather than per event.
pub(super) struct SharedMetadata {
    fields: Vec<(String, Value)>,
    /// Whether the redactor leaves these fields unchanged, so that they can be added after an
    /// event is redacted instead of being redacted again with every event.
    clean: bool,
}

impl SharedMetadata {
    pub(super) fn build(cfg: &SessionConfig, session_id: &str, client: Option<&Value>) -> Self {
        let mut fields = vec![
            ("server".to_string(), json!(cfg.server)),
            ("session_id".to_string(), json!(session_id)),
            ("user_id".to_string(), json!(cfg.user_id)),
        ];
        if let Some(client) = client {
            fields.push(("client".to_string(), client.clone()));
        }
        let mut probe = Event {
            id: String::new(),
            timestamp: Timestamp::from_micros(0),
            level: Level::Info,
            category: String::new(),
            source: String::new(),
            event_type: String::new(),
            message: String::new(),
            metadata: fields.iter().cloned().collect(),
            tags: Vec::new(),
        };
        cfg.redactor.redact_event(&mut probe);
        let clean = probe.metadata.len() == fields.len()
            && fields.iter().all(|(k, v)| probe.metadata.get(k) == Some(v));
        Self { fields, clean }
    }

    pub(super) fn add_to(&self, metadata: &mut Map<String, Value>) {
        for (key, value) in &self.fields {
            metadata.insert(key.clone(), value.clone());
        }
    }
}

pub(super) fn secs_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_micros() - from.as_micros()).max(0) as f64 / 1e6
}
