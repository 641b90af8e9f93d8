//! `mcpwatch wrap`: one MCP server behind the stdio relay, its session tracked and delivered.
//!
//! Wires the stages together, inside out: the [`delivery`](crate::delivery) worker (collector
//! and spool), the [`SessionTracker`] fed from the relay's [`TapQueue`] by one parser task, and
//! the relay threads around the spawned server. Signals are forwarded to the server; the exit
//! code is the server's (128 + signal when it was killed).
//!
//! Where the monitoring runs, and why: parsing, event building, redaction and delivery cost
//! several times more CPU per message than relaying it (measured with `benches/relay.rs`), and
//! on a 2-core machine they competed with the relay threads, the client and the server. So they
//! run on one dedicated thread, `mcpwatch-monitor`, with its own single-threaded tokio runtime:
//! at most one core's worth of monitoring, never a worker pool as wide as the machine. When the
//! monitor falls behind, the bounded queue drops copies and the drops are reported as events.
//!
//! Its priority is a knob, `MCPWATCH_MONITOR_NICE` (0 to 19, default 0): at nice 10 a core
//! contended by a pipelining agent, the server and the relay goes to the relay first, and the
//! monitor catches up from its bounded queue. Measured with `benches/relay.rs`: with other
//! builds loading the machine, pipelined throughput went from 47–61 % of the bare relay's at
//! nice 0 to 82–86 % at nice 10 (91–100 % with a monitor that parsed nothing); on an idle
//! machine nice 10 gave 51–53 % against 74 % at nice 0, within a run-to-run spread of 50–85 %
//! per round (the scheduler then tends to leave the low-weight monitor a core of its own and
//! pack the relay's threads on the other). Not a clear win, so not the default. Not 19 either:
//! at that weight a busy machine starved delivery so badly that `wrap_interop`'s collector-down
//! test lost its 30 s deadline. `gateway` always runs its monitor at normal priority.
//!
//! The server lives no longer than `wrap`. A SIGINT, SIGTERM or SIGHUP is forwarded to it; if
//! it has not exited [`WrapConfig::kill_grace`] later (default 5 s, `MCPWATCH_KILL_GRACE`), it
//! gets SIGKILL. And if `wrap` itself is killed, the kernel kills the server: the binary
//! starts it through itself as a launcher ([`launcher_main`]) that sets the parent-death
//! signal (`PR_SET_PDEATHSIG`, SIGKILL) and then execs the server command, with no unsafe
//! code between fork and exec. A binary that does not call [`launcher_main`] starts the server
//! directly, without that guarantee.
//!
//! The parser polls the queue every [`POLL`] while traffic flows instead of waiting in `recv`:
//! a waiting receiver makes every relay `try_send` wake it with a system call, a polling one
//! costs the relay nothing and takes everything that piled up in one go. After [`PARK_AFTER`]
//! without traffic it waits in `recv` again, so an idle session costs one wake-up per second.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::pace::Pacer;
use mcpwatch_core::{Event, Redactor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::classify::ClassificationConfig;
use crate::delivery::DeliveryConfig;
use crate::error::CaptureError;
use crate::health::CaptureHealth;
use crate::pins::PinStore;
use crate::relay::{self, Releaser, Tap, TapQueue, Tapped};
use crate::session::{Direction, SessionConfig, SessionTracker};

/// Everything `wrap` needs; built by the CLI from flags and environment.
#[derive(Debug, Clone)]
pub struct WrapConfig {
    /// The server's name (`--name`), default: the command's file name.
    pub name: String,
    /// Who uses the session.
    pub user: String,
    /// The server command and its arguments.
    pub command: Vec<OsString>,
    /// Where events go.
    pub delivery: DeliveryConfig,
    /// Where pins and the spool live.
    pub data_dir: PathBuf,
    /// A request without a response after this long is a `timeout`.
    pub request_timeout: Duration,
    /// Lines longer than this are relayed but not parsed.
    pub max_line: usize,
    /// Most reads (each with the lines it completed) waiting for the parser.
    pub queue_reads: usize,
    /// Which data is sensitive.
    pub classification: ClassificationConfig,
    /// Removes secrets from events.
    pub redactor: Redactor,
    /// How long the server has to exit after a forwarded signal before it gets SIGKILL.
    pub kill_grace: Duration,
    /// How often a `system/edge_health` event reports the spool (default 30 s,
    /// `MCPWATCH_HEALTH_INTERVAL`).
    pub health_interval: Duration,
}

/// The default [`WrapConfig::health_interval`].
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// The default [`WrapConfig::kill_grace`].
pub const KILL_GRACE: Duration = Duration::from_secs(5);

impl WrapConfig {
    /// Defaults for a command; `data_dir` and `collector` as resolved by the caller.
    pub fn new(command: Vec<OsString>, user: String, collector: String, data_dir: PathBuf) -> Self {
        let name = command
            .first()
            .map(|c| {
                Path::new(c)
                    .file_name()
                    .unwrap_or(c.as_os_str())
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| "server".into());
        Self {
            name,
            user,
            command,
            delivery: DeliveryConfig::new(collector),
            data_dir,
            request_timeout: Duration::from_secs(60),
            max_line: relay::DEFAULT_MAX_LINE,
            queue_reads: relay::DEFAULT_QUEUE_READS,
            classification: ClassificationConfig::default(),
            redactor: Redactor::default(),
            kill_grace: env_duration("MCPWATCH_KILL_GRACE", KILL_GRACE),
            health_interval: env_duration("MCPWATCH_HEALTH_INTERVAL", HEALTH_INTERVAL),
        }
    }
}

/// `default`, unless the variable `key` (a duration such as `2s`) says otherwise.
pub(crate) fn env_duration(key: &str, default: Duration) -> Duration {
    match std::env::var(key) {
        Ok(v) => match parse_duration(&v) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                tracing::warn!("mcpwatch: {key}: must be more than 0; using {default:?}");
                default
            }
            Err(e) => {
                tracing::warn!("mcpwatch: {key}: {e}; using {default:?}");
                default
            }
        },
        Err(_) => default,
    }
}

/// The first argument that makes the binary wrap's launcher: `LAUNCHER_ARG PARENT_PID CMD…`.
pub const LAUNCHER_ARG: &str = "__mcpwatch-wrap-launch";

/// Whether this binary called [`launcher_main`], so it can launch servers.
static CAN_LAUNCH: AtomicBool = AtomicBool::new(false);

/// Called first by a binary that runs `wrap`. In the launcher process (`wrap` started the
/// binary with [`LAUNCHER_ARG`]) it sets the parent-death signal and execs the server: it
/// never returns. Otherwise it notes that the binary can launch servers, and returns.
pub fn launcher_main() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(LAUNCHER_ARG.as_ref()) {
        CAN_LAUNCH.store(true, Ordering::Relaxed);
        return;
    }
    let parent = args
        .next()
        .and_then(|p| p.to_str().and_then(|p| p.parse::<i32>().ok()));
    let Some(program) = args.next() else {
        eprintln!("mcpwatch: {LAUNCHER_ARG} needs PARENT_PID CMD [ARGS…]");
        std::process::exit(127);
    };
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("mcpwatch: cannot tie the server's life to wrap's: {e}");
        std::process::exit(127);
    }
    // wrap may have died before the signal was set: then nobody would kill the server.
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if ppid != parent {
        std::process::exit(127);
    }
    // mcpwatch keeps itself to small pages (`small_pages` in the binary); the flag survives
    // exec, and how the server uses memory is not wrap's to decide: it gets the system's
    // default back.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(false) {
        eprintln!("mcpwatch: cannot give the server the system's huge-page setting: {e}");
    }
    let e = Command::new(&program).args(args).exec();
    eprintln!(
        "mcpwatch: cannot run the server {}: {e}",
        program.to_string_lossy()
    );
    std::process::exit(127);
}

/// `--user`, else `$MCPWATCH_USER`, else the OS user.
pub fn resolve_user(flag: Option<String>, env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(u) = flag.filter(|u| !u.is_empty()) {
        return u;
    }
    if let Some(u) = env("MCPWATCH_USER").filter(|u| !u.is_empty()) {
        return u;
    }
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
        return user.name;
    }
    env("USER")
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Parses `60s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 60s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}; use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!(
            "{s:?} is out of range; use a positive duration such as 60s"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The exit code a shell would report for a status: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        (None, None) => 1,
    }
}

/// Runs the server behind the relay until it exits; returns its exit code.
pub async fn run(cfg: WrapConfig, clock: SharedClock) -> Result<u8, CaptureError> {
    let health = Arc::new(CaptureHealth::default());
    let mut delivery = cfg.delivery.clone();
    let safe_name = safe_file_name(&cfg.name);
    let spools = crate::delivery::spool::root(&cfg.data_dir);
    delivery.spool_dir = Some(spools.join(&safe_name));
    // Spools other server names left behind are delivered too, in the background.
    delivery.orphans = Some(spools);
    let (events_tx, worker) = delivery.build(health.clone())?;

    let session = SessionConfig {
        server: cfg.name.clone(),
        source: format!("wrap:{}", cfg.name),
        user_id: cfg.user.clone(),
        request_timeout: cfg.request_timeout,
        max_pending: 10_000,
        classification: cfg.classification.clone(),
        redactor: cfg.redactor.clone(),
    };
    let tracker = SessionTracker::new(
        session,
        clock,
        PinStore::new(Some(cfg.data_dir.join("pins"))).with_redactor(cfg.redactor.clone()),
    );

    let (queue, tapped) =
        TapQueue::new(cfg.queue_reads, relay::DEFAULT_QUEUE_BYTES, health.clone());
    let mut child = spawn(&cfg.command)?;
    let child_pid = child.id();
    let (stdout_done_tx, stdout_done) = oneshot::channel();
    start_pumps(&mut child, &queue, cfg.max_line, stdout_done_tx)?;
    let releaser = queue.releaser();
    drop(queue); // only the relay threads hold senders now

    let (exit_tx, exit_rx) = oneshot::channel();
    let parser = Parser {
        tracker,
        queue: releaser,
        max_line: cfg.max_line,
        tapped,
        events: events_tx,
        health,
        health_interval: cfg.health_interval,
    };
    let grace = cfg.delivery.shutdown_grace + Duration::from_secs(1);
    let (monitor_done_tx, monitor_done) = oneshot::channel();
    start_monitor(monitor_nice(), move || async move {
        let delivered = tokio::spawn(worker.run());
        parser.run(exit_rx).await;
        let _ = tokio::time::timeout(grace, delivered).await;
        let _ = monitor_done_tx.send(());
    })?;
    let signals = tokio::spawn(forward_signals(child_pid, cfg.kill_grace));

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| CaptureError::Config(format!("waiting for the server failed: {e}")))?
        .map_err(|e| CaptureError::Config(format!("waiting for the server failed: {e}")))?;
    signals.abort();
    // Let the last output reach the client (and the parser) unless a grandchild keeps it open.
    let _ = tokio::time::timeout(Duration::from_secs(2), stdout_done).await;
    let code = exit_code(status);
    let _ = exit_tx.send(status);
    // The monitor finishes parsing what the relay handed over, then delivery flushes.
    let _ = tokio::time::timeout(grace + Duration::from_secs(5), monitor_done).await;
    Ok(code)
}

/// Runs the monitoring on its own thread (see the module docs), `nice` steps below normal
/// priority.
pub(crate) fn start_monitor<F, Fut>(nice: i32, work: F) -> Result<(), CaptureError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name("mcpwatch-monitor".into())
        .spawn(move || {
            lower_priority(nice);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(work()),
                Err(e) => {
                    tracing::error!("mcpwatch: cannot start the monitor, not monitoring: {e}")
                }
            }
        })
        .map(|_| ())
        .map_err(|e| CaptureError::Config(format!("cannot start the monitor thread: {e}")))
}

/// How much nicer than the relay `wrap`'s monitor thread runs, unless `MCPWATCH_MONITOR_NICE`
/// (0 to 19) says otherwise. See the module docs for what was measured.
pub const MONITOR_NICE: i32 = 0;

fn monitor_nice() -> i32 {
    match std::env::var("MCPWATCH_MONITOR_NICE") {
        Ok(v) => match v.trim().parse::<i32>() {
            Ok(n) if (0..=19).contains(&n) => n,
            _ => {
                tracing::warn!(
                    "mcpwatch: MCPWATCH_MONITOR_NICE={v:?} is not a number from 0 to 19; using {MONITOR_NICE}"
                );
                MONITOR_NICE
            }
        },
        Err(_) => MONITOR_NICE,
    }
}

/// Runs the calling thread at nice `nice`, or at the process's own nice value if that is lower
/// priority already (Linux sets priorities per thread, so the relay threads keep theirs).
fn lower_priority(nice: i32) {
    let tid = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if nice <= current {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!("mcpwatch: could not lower the monitor's priority: {e}");
    }
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Starts the server, through the launcher when the binary is one (see the module docs).
fn spawn(command: &[OsString]) -> Result<Child, CaptureError> {
    let Some((program, args)) = command.split_first() else {
        return Err(CaptureError::Config(
            "no server command: give it after `--`, e.g. `mcpwatch wrap -- npx -y @modelcontextprotocol/server-everything`".into(),
        ));
    };
    let spawn_error = |source| CaptureError::Spawn {
        command: command
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        source,
    };
    let launch = CAN_LAUNCH.load(Ordering::Relaxed);
    if launch && !runnable(program) {
        // Said here, as a direct spawn would: the launcher could only exit 127.
        return Err(spawn_error(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    }
    let mut cmd = if launch {
        // The kernel ties the death signal to the thread that forks; `wrap` forks from the
        // thread that runs it to the end.
        let mut c = Command::new("/proc/self/exe");
        c.arg(LAUNCHER_ARG)
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn_error)
}

/// Whether `program` names an existing file, directly or on `$PATH`.
fn runnable(program: &OsString) -> bool {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(p).is_file()))
}

/// Starts the two relay threads: our stdin → the server, the server's stdout → our stdout.
fn start_pumps(
    child: &mut Child,
    queue: &TapQueue,
    max_line: usize,
    stdout_done: oneshot::Sender<()>,
) -> Result<(), CaptureError> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>, what: &str| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| CaptureError::Config(format!("cannot use {what}: {e}")))
    };
    let our_stdin = dup(std::io::stdin().as_fd(), "standard input")?;
    let our_stdout = dup(std::io::stdout().as_fd(), "standard output")?;
    let (Some(child_in), Some(child_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(CaptureError::Config(
            "the server's stdio pipes were not created".into(),
        ));
    };
    let c2s = Tap::new(Direction::ClientToServer, queue.clone(), max_line);
    let s2c = Tap::new(Direction::ServerToClient, queue.clone(), max_line);
    let spawn_thread = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|_| ())
            .map_err(|e| CaptureError::Config(format!("cannot start the relay thread: {e}")))
    };
    // Dropping `child_in` at the end closes the server's stdin, as the client closed ours.
    spawn_thread(
        "relay-c2s",
        Box::new(move || {
            relay::pump(our_stdin, child_in, c2s);
        }),
    )?;
    spawn_thread(
        "relay-s2c",
        Box::new(move || {
            relay::pump(child_out, our_stdout, s2c);
            let _ = stdout_done.send(());
        }),
    )
}

/// How often the parser looks at the queue while traffic flows.
const POLL: Duration = Duration::from_millis(2);
/// After this long without traffic the parser waits in `recv` (woken by the next line).
const PARK_AFTER: Duration = Duration::from_millis(200);
/// Most reads parsed before events are handed to delivery.
const DRAIN_MAX: usize = 256;
/// How often pending requests are checked for timeouts and losses reported.
const TICK: Duration = Duration::from_secs(1);

/// The parser task: tapped lines through the tracker, events to delivery, ticks for timeouts.
struct Parser {
    tracker: SessionTracker,
    queue: Releaser,
    max_line: usize,
    tapped: mpsc::Receiver<Tapped>,
    events: mpsc::Sender<Event>,
    health: Arc<CaptureHealth>,
    health_interval: Duration,
}

impl Parser {
    async fn run(mut self, mut exit: oneshot::Receiver<ExitStatus>) {
        let mut out = Vec::new();
        let mut reported = (0u64, 0u64, 0u64);
        let mut next_tick = Instant::now() + TICK;
        let mut next_health = Instant::now() + self.health_interval;
        let mut last_traffic = Instant::now();
        let mut tap_open = true;
        let exit_status = loop {
            let (took, open) = self.drain(&mut out);
            tap_open &= open;
            let now = Instant::now();
            if took {
                last_traffic = now;
            }
            if now >= next_tick {
                next_tick = now + TICK;
                self.tracker.on_tick(&mut out);
                report_losses(&mut self.tracker, &self.health, &mut reported, &mut out);
                if now >= next_health {
                    next_health = now + self.health_interval;
                    self.tracker.on_edge_health(&self.health, &mut out);
                }
            }
            if !self.ship(&mut out).await {
                return;
            }
            let idle = now.duration_since(last_traffic) >= PARK_AFTER;
            tokio::select! {
                biased;
                status = &mut exit => break status.ok(),
                t = self.tapped.recv(), if idle && tap_open => match t {
                    Some(t) => self.take(t, &mut out),
                    None => tap_open = false,
                },
                () = tokio::time::sleep_until(next_tick), if idle || !tap_open => {}
                () = tokio::time::sleep(POLL), if !idle && tap_open => {}
            }
        };
        // Parse what the relay already handed over, then finish.
        while let (true, _) = self.drain(&mut out) {
            if !self.ship(&mut out).await {
                return;
            }
        }
        report_losses(&mut self.tracker, &self.health, &mut reported, &mut out);
        let reason = match exit_status {
            Some(s) if s.success() => "server exited".to_string(),
            Some(s) => format!("server exited with code {}", exit_code(s)),
            None => "server exited".to_string(),
        };
        self.tracker.on_close(
            &reason,
            exit_status.map(|s| i32::from(exit_code(s))),
            &mut out,
        );
        self.ship(&mut out).await;
    }

    /// Parses what waits in the queue, at most [`DRAIN_MAX`] reads so events keep flowing
    /// under sustained load. Returns (whether anything was taken, whether the queue is open).
    fn drain(&mut self, out: &mut Vec<Event>) -> (bool, bool) {
        let mut took = false;
        // Short bursts, so the relay's threads on this core do not wait behind a long drain.
        let mut pacer = Pacer::new();
        for _ in 0..DRAIN_MAX {
            match self.tapped.try_recv() {
                Ok(t) => {
                    took = true;
                    self.take(t, out);
                    pacer.step();
                }
                Err(mpsc::error::TryRecvError::Empty) => return (took, true),
                Err(mpsc::error::TryRecvError::Disconnected) => return (took, false),
            }
        }
        (took, true)
    }

    fn take(&mut self, t: Tapped, out: &mut Vec<Event>) {
        self.queue.release(&t);
        match t {
            Tapped::Lines(dir, batch) => {
                for line in relay::lines(&batch) {
                    self.tracker.on_frame(dir, line, out);
                }
            }
            Tapped::Oversized(dir, len) => self.tracker.on_oversized(dir, len, self.max_line, out),
        }
    }

    /// Hands events to delivery; false when delivery has gone.
    async fn ship(&mut self, out: &mut Vec<Event>) -> bool {
        for ev in out.drain(..) {
            if self.events.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Turns new drops and spool overflows into events (never silent).
fn report_losses(
    tracker: &mut SessionTracker,
    health: &CaptureHealth,
    reported: &mut (u64, u64, u64),
    out: &mut Vec<Event>,
) {
    let lines = CaptureHealth::get(&health.dropped_lines);
    let bytes = CaptureHealth::get(&health.dropped_bytes);
    if lines > reported.0 {
        tracker.on_dropped(lines - reported.0, bytes - reported.1, out);
        reported.0 = lines;
        reported.1 = bytes;
    }
    let overflow = CaptureHealth::get(&health.spool_overflow_events);
    if overflow > reported.2 {
        tracker.on_spool_overflow(overflow - reported.2, out);
        reported.2 = overflow;
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP to the server, and sends SIGKILL `grace` after the
/// first one (this task is ended when the server exits).
async fn forward_signals(pid: u32, grace: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(raw) = i32::try_from(pid) else { return };
    let pid = nix::unistd::Pid::from_raw(raw);
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    use nix::sys::signal::Signal;
    let mut kill_at: Option<Instant> = None;
    loop {
        let sig = tokio::select! {
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
            _ = hup.recv() => Signal::SIGHUP,
            () = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                eprintln!(
                    "mcpwatch: the server did not exit within {grace:?} of the signal; killing it"
                );
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                kill_at = None;
                continue;
            }
        };
        let _ = nix::sys::signal::kill(pid, sig);
        kill_at.get_or_insert_with(|| Instant::now() + grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitor_priority_knob_lowers_only_its_own_thread() {
        let before = rustix::process::getpriority_process(None).expect("own priority");
        let lowered = std::thread::spawn(|| {
            lower_priority(5);
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("thread priority")
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, before.max(5));
        assert_eq!(
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                .expect("thread priority"),
            before,
            "the calling thread keeps its priority"
        );
    }

    #[test]
    fn identity_resolution_and_file_names() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            resolve_user(Some("u".into()), &env(&[("MCPWATCH_USER", "e")])),
            "u"
        );
        assert_eq!(resolve_user(None, &env(&[("MCPWATCH_USER", "e")])), "e");
        assert!(!resolve_user(None, &env(&[])).is_empty());
        assert_eq!(safe_file_name("a/b c"), "a_b_c");
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
