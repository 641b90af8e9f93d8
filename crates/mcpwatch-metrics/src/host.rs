//! The host sampler: CPU, memory, disk and network of the machine `serve` runs on, read from
//! `/proc` and `statvfs` every `metrics.host_interval` (on the stage's tick), published as gauges
//! and emitted as `performance/system_performance` events, which detection's CPU, memory and
//! disk thresholds read. Values in events: `cpu_usage`, `memory_usage`, `disk_usage` in percent,
//! `network_throughput` in bytes per second (received + sent, loopback excluded).
//!
//! Read by hand rather than through `sysinfo`: four small files and one syscall, no build cost.
//! Off Linux the files are missing; each failed read is counted and nothing is emitted.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::{Event, Level, Timestamp};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::json;

use crate::labels::{labels, Labels};

type FGauge = Gauge<f64, AtomicU64>;

/// The host gauges.
#[derive(Debug, Clone, Default)]
struct HostGauges {
    cpu: FGauge,
    mem_used: FGauge,
    mem_total: FGauge,
    disk_used: FGauge,
    disk_total: FGauge,
    net: Family<Labels<1>, FGauge>,
    rss: FGauge,
    errors: Counter,
}

/// CPU jiffies: busy and total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    /// Not idle, not iowait.
    pub busy: u64,
    /// Everything.
    pub total: u64,
}

/// Parses the `cpu` line of `/proc/stat`.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// `(total, available)` bytes from `/proc/meminfo`.
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// `(received, transmitted)` bytes over every interface but loopback, from `/proc/net/dev`.
pub fn parse_net_dev(dev: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut any = false;
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        rx += f.first()?.parse::<u64>().ok()?;
        tx += f.get(8)?.parse::<u64>().ok()?;
        any = true;
    }
    any.then_some((rx, tx))
}

/// Samples the host on the stage thread.
pub struct HostSampler {
    interval_us: i64,
    next_us: i64,
    emit_events: bool,
    disk_path: PathBuf,
    cpu: Option<CpuTimes>,
    net: Option<(i64, u64, u64)>,
    ids: IdGenerator,
    g: HostGauges,
}

impl std::fmt::Debug for HostSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSampler")
            .field("interval_us", &self.interval_us)
            .field("disk_path", &self.disk_path)
            .finish_non_exhaustive()
    }
}

impl HostSampler {
    /// Registers the host gauges; samples every `interval`, the disk holding `disk_path`.
    pub fn new(
        registry: &mut Registry,
        interval: std::time::Duration,
        emit_events: bool,
        disk_path: PathBuf,
    ) -> Self {
        let g = HostGauges::default();
        let r = registry;
        r.register("mcpwatch_host_cpu_usage_ratio", "Share (0-1) of the host's CPU time that was busy between the last two samples (metrics.host_interval)", g.cpu.clone());
        r.register_with_unit(
            "mcpwatch_host_memory_used",
            "Host memory in use (MemTotal - MemAvailable)",
            Unit::Bytes,
            g.mem_used.clone(),
        );
        r.register_with_unit(
            "mcpwatch_host_memory_total",
            "Host memory (MemTotal)",
            Unit::Bytes,
            g.mem_total.clone(),
        );
        r.register_with_unit(
            "mcpwatch_host_disk_used",
            "Bytes used on the filesystem holding the data directory",
            Unit::Bytes,
            g.disk_used.clone(),
        );
        r.register_with_unit(
            "mcpwatch_host_disk_total",
            "Size of the filesystem holding the data directory (used + available to non-root)",
            Unit::Bytes,
            g.disk_total.clone(),
        );
        r.register("mcpwatch_host_network_throughput_bytes_per_second", "Host network traffic over every interface but loopback between the last two samples, by direction (receive, transmit)", g.net.clone());
        r.register_with_unit(
            "mcpwatch_process_resident_memory",
            "Resident memory of the mcpwatch process",
            Unit::Bytes,
            g.rss.clone(),
        );
        r.register(
            "mcpwatch_host_sample_errors",
            "Host readings that failed (e.g. /proc missing off Linux)",
            g.errors.clone(),
        );
        let mut s = Self {
            interval_us: interval.as_micros() as i64,
            next_us: 0,
            emit_events,
            disk_path,
            cpu: None,
            net: None,
            ids: IdGenerator::new(),
            g,
        };
        s.cpu = s.read_cpu();
        s
    }

    /// Samples when the interval has passed.
    pub fn tick(&mut self, now: Timestamp, emit: &mut Vec<Event>) {
        let now_us = now.as_micros();
        if now_us < self.next_us {
            return;
        }
        self.next_us = now_us + self.interval_us;
        let mut samples: Vec<(&'static str, f64, &'static str)> = Vec::with_capacity(4);
        if let Some(cur) = self.read_cpu() {
            if let Some(prev) = self.cpu.filter(|p| cur.total > p.total) {
                let ratio =
                    (cur.busy.saturating_sub(prev.busy)) as f64 / (cur.total - prev.total) as f64;
                self.g.cpu.set(ratio);
                samples.push(("cpu_usage", ratio * 100.0, "percent"));
            }
            self.cpu = Some(cur);
        }
        match std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(parse_meminfo)
        {
            Some((total, avail)) if total > 0 => {
                let used = total.saturating_sub(avail);
                self.g.mem_used.set(used as f64);
                self.g.mem_total.set(total as f64);
                samples.push((
                    "memory_usage",
                    used as f64 * 100.0 / total as f64,
                    "percent",
                ));
            }
            _ => {
                self.g.errors.inc();
            }
        }
        match rustix::fs::statvfs(&self.disk_path) {
            Ok(v) => {
                let used = v.f_blocks.saturating_sub(v.f_bfree) * v.f_frsize;
                let size = used + v.f_bavail * v.f_frsize;
                self.g.disk_used.set(used as f64);
                self.g.disk_total.set(size as f64);
                if size > 0 {
                    samples.push(("disk_usage", used as f64 * 100.0 / size as f64, "percent"));
                }
            }
            Err(_) => {
                self.g.errors.inc();
            }
        }
        match std::fs::read_to_string("/proc/net/dev")
            .ok()
            .as_deref()
            .and_then(parse_net_dev)
        {
            Some((rx, tx)) => {
                if let Some((at, prx, ptx)) = self.net.filter(|(at, ..)| now_us > *at) {
                    let secs = (now_us - at) as f64 / 1e6;
                    let (r, t) = (
                        rx.saturating_sub(prx) as f64 / secs,
                        tx.saturating_sub(ptx) as f64 / secs,
                    );
                    self.g
                        .net
                        .get_or_create(&labels([("direction", "receive")]))
                        .set(r);
                    self.g
                        .net
                        .get_or_create(&labels([("direction", "transmit")]))
                        .set(t);
                    samples.push(("network_throughput", r + t, "bytes/s"));
                }
                self.net = Some((now_us, rx, tx));
            }
            None => {
                self.g.errors.inc();
            }
        }
        if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            self.g
                .rss
                .set((pages * rustix::param::page_size() as u64) as f64);
        }
        if self.emit_events {
            for (name, value, unit) in samples {
                emit.push(self.event(now, name, value, unit));
            }
        }
    }

    fn read_cpu(&self) -> Option<CpuTimes> {
        let c = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_cpu);
        if c.is_none() {
            self.g.errors.inc();
        }
        c
    }

    fn event(&self, now: Timestamp, name: &str, value: f64, unit: &str) -> Event {
        let metadata = json!({"metric_name": name, "value": value, "unit": unit});
        Event {
            id: self.ids.next(now),
            timestamp: now,
            level: Level::Info,
            category: "performance".into(),
            source: "mcpwatch:host".into(),
            event_type: "system_performance".into(),
            message: format!("host {name}: {value:.1} {unit}"),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            tags: vec!["performance".into(), "host".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n";
        assert_eq!(
            parse_cpu(stat),
            Some(CpuTimes {
                busy: 150,
                total: 1000
            })
        );
        let mem = "MemTotal:       16000 kB\nMemFree:  1 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(parse_meminfo(mem), Some((16_384_000, 4_096_000)));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), Some((1005, 2007)));
        assert_eq!(parse_cpu("nonsense"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_sampler_emits_system_performance_events_detection_reads() {
        let mut registry = Registry::default();
        let dir = tempfile::tempdir().unwrap();
        let mut s = HostSampler::new(
            &mut registry,
            std::time::Duration::from_secs(15),
            true,
            dir.path().into(),
        );
        let t0 = Timestamp::from_micros(1_800_000_000_000_000);
        let mut emit = vec![];
        s.tick(t0, &mut emit);
        // Not due again until the interval has passed.
        s.tick(
            t0.saturating_add(std::time::Duration::from_secs(5)),
            &mut emit,
        );
        let first = emit.len();
        // CPU time is counted in jiffies (10 ms): let some pass between the two readings.
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.tick(
            t0.saturating_add(std::time::Duration::from_secs(15)),
            &mut emit,
        );
        let names: Vec<&str> = emit
            .iter()
            .filter_map(|e| e.metadata["metric_name"].as_str())
            .collect();
        for n in [
            "memory_usage",
            "disk_usage",
            "network_throughput",
            "cpu_usage",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(
            first >= 2 && emit.len() > first,
            "{first} then {}",
            emit.len()
        );
        for e in &emit {
            assert_eq!(
                (e.category.as_str(), e.event_type.as_str()),
                ("performance", "system_performance")
            );
            let v = e.metadata["value"].as_f64().unwrap();
            let name = e.metadata["metric_name"].as_str().unwrap();
            assert!(
                v >= 0.0 && (name == "network_throughput" || v <= 100.0),
                "{name} = {v}"
            );
            // The events are valid ingest events, but for their source, which is reserved for
            // mcpwatch's own events (they enter the pipeline directly, not through ingest).
            let mut json = serde_json::to_value(e).unwrap();
            assert_eq!(json["source"], "mcpwatch:host");
            json.as_object_mut().map(|o| o.remove("source"));
            let ids = IdGenerator::new();
            let clock = mcpwatch_core::ManualClock::new(t0);
            let defaults = mcpwatch_core::validate::Defaults {
                ids: &ids,
                clock: &clock,
                source: "api",
                max_events: 10,
                max_future_skew: mcpwatch_core::validate::bounds::DEFAULT_MAX_FUTURE_SKEW,
            };
            mcpwatch_core::parse_batch(
                json.to_string().as_bytes(),
                mcpwatch_core::validate::BodyFormat::Json,
                &defaults,
            )
            .expect("valid system_performance event");
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("mcpwatch_host_memory_total_bytes "), "{text}");
        assert!(
            text.contains(
                "mcpwatch_host_network_throughput_bytes_per_second{direction=\"receive\"}"
            ),
            "{text}"
        );
    }
}
