//! Evasions at the edge, through the real path: JSON-RPC frames into capture's session tracker,
//! its events into the detection engine with the default rules, findings out. A payload a
//! client hides from inspection (by nesting past the parser's depth, or by padding past the
//! cut a stored event keeps) must still raise its alert.

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_capture::classify::ClassificationConfig;
use mcpwatch_capture::pins::PinStore;
use mcpwatch_capture::session::{Direction, SessionConfig, SessionTracker};
use mcpwatch_core::{Event, ManualClock, Redactor, Timestamp};
use mcpwatch_detect::{DetectSettings, Engine, Finding, RuleSet};

const C: Direction = Direction::ClientToServer;
const S: Direction = Direction::ServerToClient;

/// The frames through one session tracker, then its events through an engine: the events and
/// the findings.
fn check(frames: &[(Direction, String)]) -> (Vec<Event>, Vec<Finding>) {
    let clock = ManualClock::new(Timestamp::from_micros(1_790_000_000_000_000));
    let cfg = SessionConfig {
        server: "fs".into(),
        source: "wrap:fs".into(),
        user_id: "alice".into(),
        request_timeout: Duration::from_secs(60),
        max_pending: 64,
        classification: ClassificationConfig::default(),
        redactor: Redactor::default(),
    };
    let mut tracker = SessionTracker::new(cfg, Arc::new(clock.clone()), PinStore::new(None));
    let mut events = Vec::new();
    for (dir, frame) in frames {
        clock.advance(Duration::from_millis(5));
        tracker.on_frame(*dir, frame.as_bytes(), &mut events);
    }
    let mut engine = Engine::new(RuleSet::defaults(), &DetectSettings::default());
    let mut findings = Vec::new();
    for e in &events {
        engine.process(e, &mut findings);
    }
    (events, findings)
}

fn names(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.name.as_str()).collect()
}

fn of_type<'a>(events: &'a [Event], event_type: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

fn nested(levels: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn a_call_nested_past_the_parse_depth_is_recorded_and_raises_its_alerts() {
    let args = format!(
        r#"{{"path":{}}}"#,
        nested(3000, r#""../../../../etc/passwd""#)
    );
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"read_file","arguments":{args}}}}}"#
    );
    let result =
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"root:x:0:0"}]}}"#;
    let (events, findings) = check(&[(C, call), (S, result.to_string())]);

    assert!(of_type(&events, "protocol_error").is_empty(), "{events:#?}");
    let start = of_type(&events, "execution_start");
    assert_eq!(start.len(), 1, "the call is recorded: {events:#?}");
    assert_eq!(start[0].metadata["tool_name"], "read_file");
    let complete = of_type(&events, "execution_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].metadata["outcome"], "success");
    let evasion = of_type(&events, "nesting_evasion");
    assert_eq!(evasion.len(), 1, "the evasion is flagged");
    assert_eq!(evasion[0].category, "security");
    assert_eq!(evasion[0].metadata["tool_name"], "read_file");
    assert_eq!(
        evasion[0].metadata["execution_id"],
        start[0].metadata["execution_id"]
    );

    let names = names(&findings);
    assert!(names.contains(&"nesting_evasion"), "{names:?}");
    assert!(
        names.contains(&"path_traversal"),
        "the strings of the cut subtree are still scanned: {names:?}"
    );
}

#[test]
fn ordinary_nesting_raises_nothing() {
    let args = format!(r#"{{"path":{}}}"#, nested(40, r#""notes.txt""#));
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{args}}}}}"#
    );
    let (events, findings) = check(&[(C, call)]);
    assert!(of_type(&events, "nesting_evasion").is_empty());
    assert!(findings.is_empty(), "{:?}", names(&findings));
}
