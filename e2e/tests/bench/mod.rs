//! `contoso bench` keeps working: short runs against `contoso dev` and against the real binaries,
//! checking that the JSON report it writes is complete and consistent. Figures are never asserted:
//! a slow machine passes as well as a fast one.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{
    process::run_to_completion,
    system::{DevSystem, System},
};

/// Runs the bench with `args`, `--strict` and `--json` into a temp dir; the report.
fn run_bench(mut command: Command, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir for the report");
    let json = dir.path().join("bench.json");
    command
        .args(args)
        .arg(format!("--json={}", json.display()))
        .args(["--no-progress", "--strict"]);
    let table = run_to_completion(&mut command);
    assert!(
        table.contains("report: "),
        "the bench printed no report line:\n{table}"
    );
    read_report(&json)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the bench wrote no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON: {e}\n{text}"))
}

/// The value at a `/`-separated path; panics naming the path when it is missing or null.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let found = value
        .pointer(&format!("/{path}"))
        .unwrap_or_else(|| panic!("the report has no {path}: {value:#}"));
    assert!(!found.is_null(), "{path} is null in the report: {value:#}");
    found
}

fn number(value: &Value, path: &str) -> f64 {
    at(value, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {}", at(value, path)))
}

fn count(value: &Value, path: &str) -> u64 {
    at(value, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count: {}", at(value, path)))
}

/// Every percentile of the latency at `path` is there, in order, over `n` samples.
fn assert_latency(report: &Value, path: &str, n: u64) {
    assert_eq!(count(report, &format!("{path}/count")), n, "{path}/count");
    number(report, &format!("{path}/mean_ms"));
    let ordered: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"]
        .iter()
        .map(|p| number(report, &format!("{path}/{p}")))
        .collect();
    assert!(
        ordered.windows(2).all(|w| w[0] <= w[1]),
        "{path}: percentiles out of order: {ordered:?}"
    );
}

/// A phase of the load: every figure there, every accepted order seen COMPLETED, no error.
fn assert_phase(report: &Value, index: usize, api: &str) {
    let p = format!("phases/{index}");
    assert_eq!(at(report, &format!("{p}/api")), api);
    let accepted = count(report, &format!("{p}/accepted"));
    assert!(accepted > 0, "{api} accepted no order: {report:#}");
    assert_eq!(count(report, &format!("{p}/completed")), accepted);
    assert_eq!(count(report, &format!("{p}/incomplete")), 0);
    for rate in [
        "accepted_per_sec",
        "completed_per_sec",
        "completed_per_sec_overall",
        "completed_per_sec_after_placing",
        "load_secs",
        "total_secs",
    ] {
        number(report, &format!("{p}/{rate}"));
    }
    assert_latency(report, &format!("{p}/intake"), accepted);
    assert_latency(report, &format!("{p}/accept_to_completed"), accepted);
    let errors = at(report, &format!("{p}/errors"));
    assert!(
        errors.as_object().is_some_and(|e| e.is_empty()),
        "{api} had errors: {errors}"
    );
    let timeline = at(report, &format!("{p}/timeline"))
        .as_array()
        .expect("the timeline is a list");
    assert!(!timeline.is_empty(), "{api}: no timeline samples");
}

fn assert_machine(report: &Value) {
    assert!(count(report, "machine/cpus") > 0);
    at(report, "command_line");
    at(report, "started_at");
    at(report, "finished_at");
}

#[test]
fn bench_against_contoso_dev_writes_a_complete_report_for_grpc_and_rest() {
    let dev = DevSystem::start();
    let report = run_bench(
        dev.bench(),
        &[
            "--duration-secs=2",
            "--users=4",
            "--concurrency=4",
            "--rest",
        ],
    );
    assert_machine(&report);
    assert_phase(&report, 0, "gRPC PlaceOrder");
    assert_phase(&report, 1, "REST POST /api/orders");
    assert_eq!(at(&report, "phases/0/mode"), "closed loop");
    assert!(report["raw"].is_null(), "no --raw, yet raw figures");
}

#[test]
fn bench_on_the_real_binaries_measures_raw_limits_an_open_loop_and_idle_streams() {
    let system = System::start();

    let report = run_bench(
        system.bench(),
        &[
            "--raw",
            "--raw-secs=1",
            "--concurrency=4",
            "--rate=25",
            "--duration-secs=2",
            "--users=4",
        ],
    );
    assert_machine(&report);
    assert_phase(&report, 0, "gRPC PlaceOrder");
    assert_eq!(at(&report, "phases/0/mode"), "open loop");
    for figure in [
        "redis_intake_writes",
        "jetstream_publish",
        "intake",
        "postgres_order",
        "tonic_echo",
    ] {
        let ops = count(&report, &format!("raw/{figure}/ops"));
        assert!(ops > 0, "raw {figure} did nothing: {report:#}");
        assert_latency(&report, &format!("raw/{figure}/latency"), ops);
    }
    for ratio in [
        "intake_of_raw_intake",
        "intake_of_tonic_echo",
        "completed_of_raw_postgres",
        "intake_p50_over_raw_intake_p50",
    ] {
        number(&report, &format!("ratios/0/{ratio}"));
    }
    // The raw Postgres loop leaves nothing behind.
    assert_eq!(
        system.count(
            "SELECT count(*) AS n FROM customers WHERE external_id LIKE 'bench-raw-%'",
            &[]
        ),
        0
    );

    let pid = format!("--notify-pid={}", system.notify_pid());
    let report = run_bench(
        system.bench(),
        &["--streams=12", "--streams-per-user=2", &pid],
    );
    assert_eq!(count(&report, "streams/opened"), 12);
    assert_eq!(count(&report, "streams/users"), 6);
    assert_eq!(count(&report, "streams/orders_accepted"), 6);
    assert_eq!(count(&report, "streams/deliveries_expected"), 12);
    assert_eq!(count(&report, "streams/deliveries_seen"), 12);
    for memory in ["rss_before_kib", "rss_open_kib", "kib_per_stream"] {
        number(&report, &format!("streams/{memory}"));
    }
    assert_latency(&report, "streams/fan_out", 12);
}

#[test]
fn bench_streams_reconnect_and_every_order_is_counted_across_a_notify_svc_restart() {
    let mut system = System::start();
    let dir = tempfile::tempdir().expect("a temp dir for the report");
    let json = dir.path().join("bench.json");
    let mut bench = system.bench();
    bench
        .args([
            "--rate=20",
            "--duration-secs=8",
            "--users=3",
            "--no-progress",
            "--strict",
        ])
        .arg(format!("--json={}", json.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let running = bench.spawn().expect("starting contoso bench");

    // Once the bench's orders are being recorded, notify-svc goes away and comes back.
    let until = Instant::now() + Duration::from_secs(60);
    while system.count("SELECT count(*) AS n FROM orders", &[]) == 0 {
        assert!(Instant::now() < until, "the bench recorded no order");
        std::thread::park_timeout(Duration::from_millis(50));
    }
    system.restart_notify();

    let output = running.wait_with_output().expect("waiting for the bench");
    assert!(
        output.status.success(),
        "the bench failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json);
    assert_phase(&report, 0, "gRPC PlaceOrder");
    assert!(
        count(&report, "phases/0/stream_reconnects") >= 3,
        "every user's stream reopened: {report:#}"
    );
}
