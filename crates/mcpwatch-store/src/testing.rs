//! A real PostgreSQL for tests (feature `testing`): a fresh cluster in a temporary directory,
//! started on a free loopback port with its socket in the same directory, stopped on drop.
//!
//! It uses the PostgreSQL that `scripts/install-peers` installs (Debian's `postgresql`); nothing
//! is downloaded at run time. `initdb` refuses to run as root, so as root the cluster is made
//! and run as the `postgres` user (`runuser`). Logins over TCP need the password
//! ([`TempPostgres::PASSWORD`]), so a test can also see a refused login; the socket is trusted,
//! which is how databases are created.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster, stopped and deleted on drop.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// How long the cluster may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(60);

impl TempPostgres {
    /// The superuser's name.
    pub const USER: &'static str = "postgres";
    /// The superuser's password, needed over TCP.
    pub const PASSWORD: &'static str = "mcpwatch-test";

    /// Makes and starts a cluster. Panics with what to do when PostgreSQL is not installed or
    /// does not start: a test that needs it must not pass without it.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(pg) => pg,
            Err(e) => panic!("cannot start a PostgreSQL for the tests: {e}"),
        }
    }

    fn try_start() -> Result<Self, String> {
        let bin = bin_dir().ok_or(
            "initdb not found on PATH or under /usr/lib/postgresql/*/bin; run scripts/install-peers (as root) to install Debian's postgresql",
        )?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("mcpwatch-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, Self::PASSWORD)
            .map_err(|e| format!("cannot write {pwfile:?}: {e}"))?;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&pwfile))?;
        }
        let port = free_port()?;
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.data();
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", Self::USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb)?;
        let log = pg.dir.path().join("postgres.log");
        let mut start = pg.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start", "-o"])
            // wal_init_zero=off: a fresh cluster zero-fills every new 16 MB WAL segment, which a
            // cluster that has run a while no longer does (it recycles them); in benchmarks the
            // WAL writer spent 7 % of the machine on it, against whichever phase ran first.
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_init_zero=off",
                pg.dir.path().display()
            ));
        if let Err(e) = run(&mut start) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\n{log}"));
        }
        pg.wait_ready()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        let mut c = self.command("psql");
        c.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", Self::USER])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]);
        run(&mut c)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match self.psql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "PostgreSQL did not accept connections within {READY_DEADLINE:?}: {e}"
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database and returns its URL (with the password).
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names in tests are plain identifiers"
        );
        if let Err(e) = self.psql(&format!("CREATE DATABASE {name}")) {
            panic!("cannot create database {name}: {e}");
        }
        self.url(name)
    }

    /// The URL of database `name`, which need not exist.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{name}",
            Self::USER,
            Self::PASSWORD,
            self.port
        )
    }

    /// Runs one SQL statement as the superuser in database `postgres` and returns its output.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Waits until `sql` answers `want`, for at most 30 seconds; panics with `what` after.
    pub fn wait_until(&self, sql: &str, want: &str, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.sql(sql).trim() != want {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
        if let Err(e) = run(&mut stop) {
            eprintln!("stopping the test PostgreSQL: {e}");
        }
    }
}

fn run(c: &mut Command) -> Result<String, String> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{c:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The directory holding `initdb`, `pg_ctl` and `psql` of one PostgreSQL version: the one on
/// PATH, else the newest under `/usr/lib/postgresql` (Debian keeps them off PATH).
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("initdb"))
            .find(|f| f.is_file())
    });
    if let Some(initdb) = on_path {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return real.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}
