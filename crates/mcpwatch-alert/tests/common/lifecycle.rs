//! The lifecycle harness: a real alert store (`alerts.db` in a temporary directory, or a real
//! PostgreSQL; see [`super::backend`]), a ManualClock, the four
//! channels pointed at a closed port (nothing is sent; the outbox is inspected), and findings
//! shaped as detection's rule engine emits them.

use std::collections::BTreeMap;
use std::sync::Arc;

use mcpwatch_alert::store::Attempt;
use mcpwatch_alert::Alerting;
use mcpwatch_core::config::Config;
use mcpwatch_core::{Event, Level, ManualClock, Timestamp};
use mcpwatch_detect::{Finding, FindingSource, Severity};

use super::backend::StoreHome;
use super::T0;

pub const CHANNELS: &str = r#"
[channels.mail]
type = "email"
url = "smtp://127.0.0.1:1"
from = "mcpwatch@example.com"
to = ["secops@example.com"]

[channels.chat]
type = "slack"
webhook_url = "http://127.0.0.1:1/slack"

[channels.pager]
type = "pagerduty"
routing_key = "k"
url = "http://127.0.0.1:1/pd"

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:1/hook"
"#;

pub struct Harness {
    pub alerting: Arc<Alerting>,
    pub clock: ManualClock,
    pub home: StoreHome,
}

pub fn harness(toml: &str) -> Harness {
    let config = Config::from_toml(toml).expect("valid config");
    let settings = mcpwatch_alert::build(&config, &|_| None).expect("valid alerting config");
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let home = StoreHome::new();
    let alerting = Alerting::with_store(home.open(), settings, Arc::new(clock.clone()));
    Harness {
        alerting,
        clock,
        home,
    }
}

pub fn finding(name: &str, severity: Severity, user: &str, event: &str) -> Finding {
    let group: BTreeMap<String, String> = [("metadata.user_id".to_owned(), user.to_owned())].into();
    Finding {
        source: FindingSource::Rule,
        name: name.into(),
        severity,
        description: format!("5 failed authentications for {user}"),
        recommended_action: "Lock the account".into(),
        group,
        event_ids: vec![event.to_owned()],
        at: Timestamp::from_micros(T0),
        event: Event {
            id: format!("derived-{event}"),
            timestamp: Timestamp::from_micros(T0),
            level: Level::Error,
            category: "security_alert".into(),
            source: "mcpwatch:detect".into(),
            event_type: "rule_trigger".into(),
            message: String::new(),
            metadata: Default::default(),
            tags: vec!["authentication".into()],
        },
    }
}

pub fn brute(user: &str, event: &str) -> Finding {
    finding("brute_force_detection", Severity::High, user, event)
}

/// `channel:kind:status` of every outbox row of the alert.
pub fn outbox(h: &Harness, id: &str) -> Vec<String> {
    let a = h.alerting.get(id).unwrap();
    a.deliveries
        .unwrap_or_default()
        .iter()
        .map(|d| format!("{}:{}:{}", d.channel, d.kind.as_str(), d.status.as_str()))
        .collect()
}

/// Marks every pending row delivered, as the worker would.
pub fn deliver_all(h: &Harness) {
    let now = h.clock.now();
    let tx = h.alerting.store().begin().unwrap();
    for d in tx.due(now, 1000).unwrap() {
        tx.record_attempt(d.id, now, Attempt::Delivered("200 ok"))
            .unwrap();
    }
    tx.commit().unwrap();
}

pub trait Now {
    fn now(&self) -> Timestamp;
}
impl Now for ManualClock {
    fn now(&self) -> Timestamp {
        mcpwatch_core::Clock::now(self)
    }
}
