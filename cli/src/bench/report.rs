//! The bench's report: the machine it ran on, the command line, every figure, and the system's
//! figures as ratios of the raw limits; printed as a table and written as JSON.

use std::{fmt::Write as _, path::Path};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{load::PhaseReport, raw::RawReport, stats::fmt_ms, streams::StreamsReport};

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) command_line: Vec<String>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) machine: Machine,
    pub(crate) raw: Option<RawReport>,
    pub(crate) phases: Vec<PhaseReport>,
    pub(crate) ratios: Vec<Ratios>,
    pub(crate) streams: Option<StreamsReport>,
}

/// What the figures were taken on.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: Option<String>,
    pub(crate) mem_total_kib: Option<u64>,
    pub(crate) kernel: Option<String>,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages at the start and at the end: others' load
    /// on a shared machine shows here.
    pub(crate) load_at_start: Option<String>,
    pub(crate) load_at_end: Option<String>,
}

impl Machine {
    fn now() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: read("/proc/cpuinfo").and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            }),
            mem_total_kib: read("/proc/meminfo").and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|l| l.trim().strip_suffix("kB"))
                    .and_then(|kib| kib.trim().parse().ok())
            }),
            kernel: read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()),
            load_at_start: load_average(),
            load_at_end: None,
        }
    }
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One phase's figures as fractions of the raw limits of the same run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratios {
    pub(crate) api: &'static str,
    /// Accepted/s ÷ raw intake (Redis writes + acknowledged publish) per second.
    pub(crate) intake_of_raw_intake: f64,
    /// Accepted/s ÷ tonic echo calls per second.
    pub(crate) intake_of_tonic_echo: f64,
    /// Completed/s while placing ÷ raw Postgres order commits per second.
    pub(crate) completed_of_raw_postgres: f64,
    /// Intake p50 ÷ raw intake p50: how many times one placement's round trip the raw work takes.
    pub(crate) intake_p50_over_raw_intake_p50: f64,
}

impl Report {
    pub(crate) fn new() -> Self {
        Self {
            tool: "contoso bench",
            version: env!("CARGO_PKG_VERSION"),
            command_line: std::env::args().collect(),
            started_at: Utc::now(),
            finished_at: None,
            machine: Machine::now(),
            raw: None,
            phases: Vec::new(),
            ratios: Vec::new(),
            streams: None,
        }
    }

    /// Stamps the end and works out the ratios.
    pub(crate) fn finish(&mut self) {
        self.finished_at = Some(Utc::now());
        self.machine.load_at_end = load_average();
        if let Some(raw) = &self.raw {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            self.ratios = self
                .phases
                .iter()
                .map(|p| Ratios {
                    api: p.api,
                    intake_of_raw_intake: ratio(p.accepted_per_sec, raw.intake.ops_per_sec),
                    intake_of_tonic_echo: ratio(p.accepted_per_sec, raw.tonic_echo.ops_per_sec),
                    completed_of_raw_postgres: ratio(
                        p.completed_per_sec,
                        raw.postgres_order.ops_per_sec,
                    ),
                    intake_p50_over_raw_intake_p50: ratio(
                        p.intake.p50_ms,
                        raw.intake.latency.p50_ms,
                    ),
                })
                .collect();
        }
    }

    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }

    /// `--strict`: every placement answered and every accepted order seen COMPLETED.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        for p in &self.phases {
            let errors: u64 = p.errors.values().sum();
            anyhow::ensure!(errors == 0, "{}: {errors} placements failed", p.api);
            anyhow::ensure!(
                p.incomplete == 0,
                "{}: {} accepted orders were not seen COMPLETED",
                p.api,
                p.incomplete
            );
        }
        if let Some(s) = &self.streams {
            anyhow::ensure!(
                s.failed_to_open == 0 && s.deliveries_seen >= s.deliveries_expected,
                "streams: {} failed to open, {} of {} deliveries seen",
                s.failed_to_open,
                s.deliveries_seen,
                s.deliveries_expected
            );
        }
        Ok(())
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine: {} cpus ({}), load {} → {}",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("?"),
            m.load_at_start.as_deref().unwrap_or("?"),
            m.load_at_end.as_deref().unwrap_or("?"),
        );
        if let Some(raw) = &self.raw {
            let _ = writeln!(
                out,
                "\nraw limits ({} workers, {} s each)",
                raw.concurrency, raw.secs
            );
            for f in [
                &raw.redis_intake_writes,
                &raw.jetstream_publish,
                &raw.intake,
                &raw.postgres_order,
                &raw.tonic_echo,
            ] {
                let errors: u64 = f.errors.values().sum();
                let _ = writeln!(
                    out,
                    "  {:<64} {:>9.0}/s  {}{}",
                    f.what,
                    f.ops_per_sec,
                    f.latency.line(),
                    if errors > 0 {
                        format!("  ({errors} errors)")
                    } else {
                        String::new()
                    }
                );
            }
        }
        for p in &self.phases {
            let shape = match (p.target_rate, p.concurrency, p.max_in_flight) {
                (Some(rate), _, Some(max)) => format!("at {rate:.0}/s, at most {max} in flight"),
                (_, Some(c), _) => format!("concurrency {c}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "\n{} — {} {shape}, {} users, {:.1} s",
                p.api, p.mode, p.users, p.load_secs
            );
            let _ = writeln!(
                out,
                "  accepted   {:>8} {:>9.0}/s   intake               {}",
                p.accepted,
                p.accepted_per_sec,
                p.intake.line()
            );
            let _ = writeln!(
                out,
                "  completed  {:>8} {:>9.0}/s   accept→COMPLETED     {}",
                p.completed,
                p.completed_per_sec,
                p.accept_to_completed.line()
            );
            let _ = writeln!(
                out,
                "  incomplete {:>8}   overall {:>6.0}/s   processed→stream     {}",
                p.incomplete,
                p.completed_per_sec_overall,
                p.processed_to_seen.line()
            );
            let _ = writeln!(
                out,
                "  completed after placing stopped: {:.0}/s",
                p.completed_per_sec_after_placing
            );
            let errors = if p.errors.is_empty() {
                "none".to_owned()
            } else {
                p.errors
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "  errors: {errors}; stream reconnects {}, caught up by GetOrderStatus {}",
                p.stream_reconnects, p.caught_up
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "\n{} as a share of the raw limits: intake {:.0} % of raw intake, {:.0} % of tonic echo; \
                 completed {:.0} % of raw Postgres; intake p50 {:.1}x raw intake p50",
                r.api,
                r.intake_of_raw_intake * 100.0,
                r.intake_of_tonic_echo * 100.0,
                r.completed_of_raw_postgres * 100.0,
                r.intake_p50_over_raw_intake_p50,
            );
        }
        if let Some(s) = &self.streams {
            let kib = s
                .kib_per_stream
                .map_or("? (no --notify-pid)".to_owned(), |k| format!("{k:.1} KiB"));
            let _ = writeln!(
                out,
                "\nstreams: {} of {} open ({} users, {} connections) in {:.1} s, {} failed, {} ended",
                s.opened, s.streams, s.users, s.connections, s.open_secs, s.failed_to_open, s.ended
            );
            let _ = writeln!(out, "  notify-svc memory per idle stream: {kib}");
            let _ = writeln!(
                out,
                "  fan-out: {} orders ({}), {} of {} deliveries in {}",
                s.orders_accepted,
                s.rate
                    .map_or("all at once".to_owned(), |r| format!("at {r:.0}/s")),
                s.deliveries_seen,
                s.deliveries_expected,
                fmt_ms(s.fan_out_secs * 1000.0)
            );
            let _ = writeln!(out, "  processed→stream   {}", s.fan_out.line());
            let _ = writeln!(out, "  accept→COMPLETED   {}", s.accept_to_completed.line());
        }
        out
    }
}
