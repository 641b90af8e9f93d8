//! `mcpwatch store migrate` through the real binary: a SQLite history filled by a real `serve`
//! is copied into a real PostgreSQL; counts, events and statistics agree on both; a second run
//! copies nothing; an interrupted run resumes; bad input is one clear error. The alert side
//! (alerts fired, silenced, acknowledged and resolved through a real `serve`, with an outbox
//! row still pending) is copied too, and a `serve` on PostgreSQL shows the same alerts and
//! silences and sends each pending notification once.

mod alerting_support;
mod common;

use std::path::Path;
use std::time::Duration;

use common::{all_ids, auth_event, bin, post, Serve};
use mcpwatch_store::testing::TempPostgres;
use serde_json::{json, Value};

const EVENTS: usize = 3_000;

fn execution(tool: &str, user: &str, ms: u64, outcome: &str) -> Value {
    json!({"category": "tool_execution", "event_type": "execution_complete", "source": "e2e",
           "message": format!("{tool} done"),
           "metadata": {"tool_name": tool, "server": "fs", "user_id": user, "execution_id": "x",
                        "execution_time": ms as f64 / 1000.0, "success": outcome == "success",
                        "outcome": outcome}})
}

/// Fills the SQLite store of `dir` through `serve`: tool executions and sign-ins spread over
/// two days (several PostgreSQL partitions), then stops it.
async fn fill_sqlite(dir: &Path) -> std::collections::HashSet<String> {
    let serve = Serve::start(dir, &[]);
    let client = reqwest::Client::new();
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let tools = ["read_file", "write_file", "search", "list_dir"];
    let outcomes = ["success", "success", "tool_error", "timeout"];
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                let mut e = if n % 10 == 0 {
                    auth_event(&format!("u{}", n % 7), ["success", "failure"][n % 2])
                } else {
                    execution(
                        tools[n % 4],
                        &format!("u{}", n % 7),
                        (n % 500) as u64 + 1,
                        outcomes[(n / 4) % 4],
                    )
                };
                let at = now.saturating_sub(Duration::from_secs(60 * n as u64));
                e["timestamp"] = serde_json::to_value(at).unwrap();
                e
            })
            .collect();
        let (status, body) = post(&client, &serve.url, &json!(batch)).await.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    let ids = all_ids(&client, &serve.url).await;
    // The collector may add events of its own (under load, say).
    assert!(ids.len() >= EVENTS, "{} stored", ids.len());
    serve.stop();
    ids
}

fn migrate(dir: &Path, to: &str, extra: &[&str]) -> (bool, String, String) {
    let out = bin()
        .args(["store", "migrate", "--from"])
        .arg(format!("sqlite:{}", dir.display()))
        .args(["--to", to])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn pg_count(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0)
}

/// Equal JSON, except that numbers may differ in the last bits (sums of latencies added in
/// another order).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.json().await.unwrap()
}

/// The body of a GET, as served.
async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_served_history_resumes_and_verifies() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let ids = fill_sqlite(dir.path()).await;
    let n = ids.len();

    // Interrupted: --limit stops the run part way; nothing is verified yet.
    let (ok, _, err) = migrate(dir.path(), &db, &["--batch", "250", "--limit", "1200"]);
    assert!(ok, "{err}");
    assert!(err.contains("run the command again to continue"), "{err}");
    assert!(err.contains(&format!("/{n} events")), "progress: {err}");
    assert_eq!(pg_count(&db).await, 1200);

    // Resumed: starts from the recorded position, ends verified with equal counts.
    let (ok, out, err) = migrate(dir.path(), &db, &["--batch", "700"]);
    assert!(ok, "{err}");
    assert!(err.contains("resumed after 1200 events"), "{err}");
    assert!(err.contains(&format!("read {} events", n - 1200)), "{err}");
    assert!(
        out.contains(&format!("verified: all {n} source events")),
        "{out}"
    );
    assert_eq!(pg_count(&db).await, n as i64);

    // Again: nothing left to copy, still verified.
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("read 0 events"), "{err}");
    assert!(out.contains("verified"), "{out}");

    // From scratch over a copy that is already there (the position forgotten): every event
    // is read again and none is stored twice.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("DELETE FROM store_migrate")
        .await
        .unwrap();
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("read {n} events")) && err.contains("0 of them new"),
        "{err}"
    );
    assert!(out.contains("verified"), "{out}");
    assert_eq!(pg_count(&db).await, n as i64);

    // Both stores answer alike: the same events, byte for byte, and the same statistics.
    let other = tempfile::tempdir().unwrap();
    let on_pg = Serve::start(other.path(), &["--store", &db]);
    let on_sqlite = Serve::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    // Every source event is served from PostgreSQL (the collector may have added its own since).
    let served = all_ids(&http, &on_pg.url).await;
    let missing = ids.iter().filter(|id| !served.contains(*id)).count();
    assert_eq!(
        missing, 0,
        "{missing} of {n} events not served from PostgreSQL"
    );
    for id in ids.iter().step_by(97) {
        let a = get_text(&http, &format!("{}/api/v1/events/{id}", on_sqlite.url)).await;
        let b = get_text(&http, &format!("{}/api/v1/events/{id}", on_pg.url)).await;
        assert_eq!(a, b, "event {id}");
    }
    let since = "since=2000-01-01T00:00:00Z";
    for path in [
        format!("/api/v1/tools?{since}"),
        format!("/api/v1/users?{since}"),
        "/api/v1/tools".to_owned(),
    ] {
        let a = get(&http, &format!("{}{path}", on_sqlite.url)).await;
        let b = get(&http, &format!("{}{path}", on_pg.url)).await;
        assert!(
            same(&a, &b),
            "{path} differs:\nSQLite: {a}\nPostgreSQL: {b}"
        );
    }
    let tools = get(&http, &format!("{}/api/v1/tools?{since}", on_pg.url)).await;
    let total: u64 = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, (EVENTS - EVENTS / 10) as u64, "{tools}");
    on_pg.stop();
    on_sqlite.stop();

    // Events lost on the destination behind the recorded position: the check says so, and the
    // next run puts them back.
    client
        .batch_execute("DELETE FROM events WHERE id IN (SELECT id FROM events LIMIT 10)")
        .await
        .unwrap();
    // (Both collectors above may have added events of their own; the source grew with them.)
    let before = pg_count(&db).await;
    let (ok, _, err) = migrate(dir.path(), &db, &[]);
    assert!(!ok, "verified with 10 events missing");
    assert!(
        err.contains("verification failed: the source has")
            && err.contains("run the command again"),
        "{err}"
    );
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("verified: all"), "{out}");
    assert!(
        pg_count(&db).await >= before + 10,
        "the missing events were not put back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_killed_mid_copy_resumes_without_duplicates() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let n = fill_sqlite(dir.path()).await.len();
    // Small batches, killed as soon as the first progress line shows that copying began.
    let mut child = bin()
        .args(["store", "migrate", "--batch", "20", "--from"])
        .arg(format!("sqlite:{}", dir.path().display()))
        .args(["--to", &db])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "migrate ended before copying began");
        if line.contains(" new in this run") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = pg_count(&db).await;
    assert!(
        partial > 0 && partial < n as i64,
        "killed at {partial} events"
    );
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("resumed after"), "{err}");
    assert!(
        out.contains(&format!("verified: all {n} source events")),
        "{out}"
    );
    assert_eq!(pg_count(&db).await, n as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_while_serve_writes_picks_up_later_events_on_the_next_run() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let batch: Vec<Value> = (0..200)
        .map(|i| execution("read_file", &format!("u{i}"), 5, "success"))
        .collect();
    let (status, body) = post(&client, &serve.url, &json!(batch)).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("verified"), "{out}");
    // Later events, one of them timestamped before everything copied so far.
    let mut early = auth_event("late", "failure");
    early["timestamp"] = json!("2020-01-01T00:00:00Z");
    let (status, body) = post(&client, &serve.url, &json!([early])).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let early_id = body["ids"][0].as_str().unwrap().to_owned();
    let ids = all_ids(&client, &serve.url).await;
    let (ok, out, err) = migrate(dir.path(), &db, &[]);
    assert!(ok, "{err}");
    // (The collector may add events of its own at any time: at least those seen.)
    assert!(out.contains("verified: all"), "{out}\n{err}");
    let (pg_client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let found: i64 = pg_client
        .query_one("SELECT count(*) FROM events WHERE id = $1", &[&early_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        found, 1,
        "the late event with an old timestamp was not copied"
    );
    assert!(pg_count(&db).await >= ids.len() as i64);
    serve.stop();
}

fn migrate_fails(from: &str, to: &str) -> String {
    let out = bin()
        .args(["store", "migrate", "--from", from, "--to", to])
        .output()
        .unwrap();
    assert!(!out.status.success(), "migrate {from} {to} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_source_destination_or_login_is_one_clear_error() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let empty = tempfile::tempdir().unwrap();
    let from = format!("sqlite:{}", empty.path().display());

    let err = migrate_fails(&from, &db);
    assert!(
        err.contains("not a data directory with an mcpwatch store") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(
        !empty.path().join("events.db").exists(),
        "the source was created"
    );
    let err = migrate_fails("sqlite:/nonexistent/mcpwatch", &db);
    assert!(err.contains("no such directory"), "{err}");
    let err = migrate_fails(&empty.path().display().to_string(), &db);
    assert!(err.contains("--from takes sqlite:DIR"), "{err}");

    // A real store, then bad destinations.
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    serve.stop();
    let from = format!("sqlite:{}", dir.path().display());
    let err = migrate_fails(&from, "mysql://root@localhost/db");
    assert!(err.contains("--to takes a PostgreSQL URL"), "{err}");
    let wrong = db.replace(TempPostgres::PASSWORD, "wrong-password");
    let err = migrate_fails(&from, &wrong);
    assert!(
        err.contains("refused the login") && err.contains("check the user and password"),
        "{err}"
    );
    assert!(!err.contains("wrong-password"), "password shown: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one error: {err}");
}

/// `mcpwatch alerts …` against a collector.
fn alerts_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .arg("alerts")
        .args(args)
        .args(["--collector", url])
        .env_remove("MCPWATCH_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows per alert table of a SQLite `alerts.db`, and its pending outbox rows.
fn sqlite_alert_counts(data: &Path) -> (Vec<(&'static str, i64)>, i64) {
    let conn = rusqlite::Connection::open(data.join("alerts.db")).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let tables = [
        ("silences", "silences"),
        ("alerts", "alerts"),
        ("findings", "alert_findings"),
        ("deliveries", "deliveries"),
    ]
    .map(|(name, table)| (name, count(&format!("SELECT count(*) FROM {table}"))));
    let pending = count("SELECT count(*) FROM deliveries WHERE status = 'pending'");
    (tables.to_vec(), pending)
}

/// The parts of an alert that the copy must carry (not the state of the `siem` channel, whose
/// receiver is down on SQLite and up on PostgreSQL).
fn alert_state(a: &Value) -> Value {
    json!({
        "id": a["id"], "fingerprint": a["fingerprint"], "status": a["status"], "count": a["count"],
        "severity": a["severity"], "first_seen": a["first_seen"], "last_seen": a["last_seen"],
        "group": a["group"], "event_ids": a["event_ids"], "acknowledged_at": a["acknowledged_at"],
        "resolved_at": a["resolved_at"], "oncall": a["channels"]["oncall"],
    })
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_alerts_silences_and_the_outbox_and_pending_rows_are_sent_once() {
    use alerting_support::{
        channel_status, failures, free_port, pagerduty, wait_alerts, write_config, Receiver, BRUTE,
    };
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pd = Receiver::start().await;
    let config_with = |hook: &str| {
        format!(
            "{}[channels.siem]\ntype = \"webhook\"\nurl = \"{hook}\"\n[[routes]]\nchannels = [\"oncall\", \"siem\"]\n",
            pagerduty(&pd.url("/v2/enqueue"))
        )
    };
    // Nothing listens on the webhook's port: its notifications stay pending on SQLite.
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let config = write_config(dir.path(), &config_with(&down));
    let serve = Serve::start(&data, &["--config", config.to_str().unwrap()]);
    let url = serve.url.clone();
    let http = reqwest::Client::new();
    let (ok, _, err) = alerts_cli(
        &url,
        &[
            "silence",
            "-m",
            "name=brute_force_detection",
            "-m",
            "metadata.user_id=alice",
            "--for",
            "1h",
            "--comment",
            "pen test",
        ],
    );
    assert!(ok, "{err}");
    for user in ["alice", "bob", "carol"] {
        failures(&http, &url, user, 5).await;
    }
    let alerts = wait_alerts(&http, &url, BRUTE, |a| {
        a.len() == 3
            && a.iter()
                .filter(|a| channel_status(a, "oncall") == "delivered")
                .count()
                == 2
            && a.iter()
                .filter(|a| a["status"] == "sent")
                .all(|a| a["channels"]["siem"]["attempts"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let id_of = |user: &str| {
        alerts
            .iter()
            .find(|a| a["group"]["metadata.user_id"] == user)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (bob, carol) = (id_of("bob"), id_of("carol"));
    let (ok, _, err) = alerts_cli(&url, &["ack", &bob]);
    assert!(ok, "{err}");
    let (ok, _, err) = alerts_cli(&url, &["resolve", &carol]);
    assert!(ok, "{err}");
    // Two triggers, bob's acknowledgement and carol's resolution reach PagerDuty.
    let sent = pd.wait_for(4, Duration::from_secs(20)).await.len();
    assert_eq!(sent, 4, "{:?}", pd.bodies());
    let before = wait_alerts(&http, &url, BRUTE, |a| {
        a.iter()
            .all(|a| !matches!(channel_status(a, "oncall").as_str(), "pending"))
    })
    .await;
    let silences = get(&http, &format!("{url}/api/v1/silences")).await;
    serve.stop();
    let (counts, pending) = sqlite_alert_counts(&data);
    assert!(pending >= 2, "the webhook's rows are pending: {pending}");

    let (ok, out, err) = migrate(&data, &db, &[]);
    assert!(ok, "{out}\n{err}");
    for (table, n) in &counts {
        assert!(
            out.contains(&format!("verified: all {n} source {table} are in")),
            "{table}: {out}"
        );
        assert!(
            err.contains(&format!("{n}/{n} {table} (100.0%), {n} new and 0 updated")),
            "{table}: {err}"
        );
    }
    assert!(
        err.contains(&format!("{pending} notifications were still pending")),
        "{err}"
    );

    // Again, and after rows went missing on the destination: nothing is copied twice, and
    // only what is missing comes back.
    let (ok, _, err) = migrate(&data, &db, &[]);
    assert!(ok, "{err}");
    for (table, n) in &counts {
        assert!(
            err.contains(&format!("{n}/{n} {table} (100.0%), 0 new and 0 updated")),
            "{table}: {err}"
        );
    }
    let (pgc, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pgc.batch_execute(
        "DELETE FROM alert_findings WHERE ctid = (SELECT min(ctid) FROM alert_findings); \
         DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries WHERE status = 'delivered')",
    )
    .await
    .unwrap();
    let (ok, out, err) = migrate(&data, &db, &[]);
    assert!(ok, "{out}\n{err}");
    for (table, n) in &counts {
        let new = if matches!(*table, "findings" | "deliveries") {
            1
        } else {
            0
        };
        assert!(
            err.contains(&format!(
                "{n}/{n} {table} (100.0%), {new} new and 0 updated"
            )),
            "{table}: {err}"
        );
    }
    let pg_one = |sql: &'static str| {
        let pgc = &pgc;
        async move { pgc.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let total = counts.iter().find(|(t, _)| *t == "deliveries").unwrap().1;
    assert_eq!(pg_one("SELECT count(*) FROM deliveries").await, total);
    assert_eq!(
        pg_one("SELECT count(*) FROM deliveries WHERE status = 'pending'").await,
        pending
    );
    // The outbox rows kept their ids, so their notification ids.
    assert_eq!(
        pg_one("SELECT count(*) FROM deliveries WHERE source_ref NOT LIKE '%#' || id").await,
        0
    );

    // A collector on PostgreSQL, with the webhook's receiver up: the same alerts and silences,
    // and each pending notification sent once.
    let hook = Receiver::start().await;
    let pd_before = pd.bodies().len();
    let other = tempfile::tempdir().unwrap();
    let config = write_config(other.path(), &config_with(&hook.url("/hook")));
    let on_pg = Serve::start(
        &other.path().join("data"),
        &["--store", &db, "--config", config.to_str().unwrap()],
    );
    wait_until("the copied pending notifications to be sent", || async {
        pg_one("SELECT count(*) FROM deliveries WHERE status = 'pending'").await == 0
    })
    .await;
    let resent = hook.bodies().len() + pd.bodies().len() - pd_before;
    assert_eq!(resent as i64, pending, "{:?}", hook.bodies());
    let after = get(&http, &format!("{}/api/v1/alerts?{BRUTE}", on_pg.url)).await;
    let after = after["alerts"].as_array().unwrap();
    assert_eq!(
        before.iter().map(alert_state).collect::<Vec<_>>(),
        after.iter().map(alert_state).collect::<Vec<_>>(),
        "alerts differ between SQLite and PostgreSQL"
    );
    for a in after {
        assert_eq!(
            channel_status(a, "siem"),
            if a["status"] == "suppressed" {
                ""
            } else {
                "delivered"
            },
            "{a}"
        );
    }
    assert_eq!(
        get(&http, &format!("{}/api/v1/silences", on_pg.url)).await,
        silences
    );
    // The copied alerts live on: more failures of bob fold into his acknowledged alert.
    let bob_count = before.iter().find(|a| a["id"] == bob.as_str()).unwrap()["count"]
        .as_u64()
        .unwrap();
    failures(&http, &on_pg.url, "bob", 5).await;
    let now = wait_alerts(&http, &on_pg.url, BRUTE, |a| {
        a.iter()
            .any(|a| a["id"] == bob.as_str() && a["count"].as_u64().unwrap_or(0) > bob_count)
    })
    .await;
    assert_eq!(now.len(), 3, "no new alert for bob: {now:?}");
    let b = now.iter().find(|a| a["id"] == bob.as_str()).unwrap();
    assert_eq!(b["status"], "acknowledged", "{b}");
    on_pg.stop();

    // Copying again after the collector on PostgreSQL acted undoes nothing it did.
    let (ok, _, err) = migrate(&data, &db, &[]);
    assert!(ok, "{err}");
    for (table, n) in &counts {
        assert!(
            err.contains(&format!("{n}/{n} {table} (100.0%), 0 new and 0 updated")),
            "{table}: {err}"
        );
    }
    assert_eq!(
        pg_one("SELECT count(*) FROM deliveries WHERE status = 'pending'").await,
        0
    );
}
