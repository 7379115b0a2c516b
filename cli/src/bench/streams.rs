//! `--streams N`: N idle `WatchOrderStatus` streams against one notify-svc. Reports the server's
//! memory per stream (its resident set from `/proc/<pid>/status`, with `--notify-pid`), then has
//! every user place one order and measures the fan-out: from each order's `processed_at` to its
//! COMPLETED on every one of the user's streams.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use contoso_proto::{
    notify::v1::{
        WatchOrderStatusRequest, order_status_service_client::OrderStatusServiceClient,
        watch_order_status_response::Event,
    },
    orders::v1::OrderStatus,
};
use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};
use tonic::transport::Channel;

use super::{
    load::{Placer, bearer},
    progress::Progress,
    stats::{Counter, Errors, Latencies, Latency},
};

/// Streams per HTTP/2 connection to notify-svc (its limit is 10,000 concurrent streams each).
const STREAMS_PER_CONNECTION: usize = 1000;
/// Streams being opened at once.
const OPENING: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct StreamsShape {
    pub(crate) streams: usize,
    pub(crate) per_user: usize,
    pub(crate) notify_pid: Option<u32>,
    pub(crate) concurrency: usize,
    /// Orders per second for the fan-out (`None`: all at once, `concurrency` at a time).
    pub(crate) rate: Option<f64>,
    pub(crate) open_deadline: Duration,
    pub(crate) drain: Duration,
    pub(crate) request_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StreamsReport {
    pub(crate) streams: usize,
    pub(crate) users: usize,
    pub(crate) connections: usize,
    /// Orders per second of the fan-out (`None`: all at once).
    pub(crate) rate: Option<f64>,
    pub(crate) opened: u64,
    pub(crate) failed_to_open: u64,
    pub(crate) open_secs: f64,
    pub(crate) notify_pid: Option<u32>,
    pub(crate) rss_before_kib: Option<u64>,
    pub(crate) rss_open_kib: Option<u64>,
    pub(crate) rss_after_fan_out_kib: Option<u64>,
    /// (RSS with every stream open − RSS before) / streams opened.
    pub(crate) kib_per_stream: Option<f64>,
    pub(crate) orders_accepted: u64,
    /// COMPLETED updates expected (each accepted order, on each of its user's streams) and seen.
    pub(crate) deliveries_expected: u64,
    pub(crate) deliveries_seen: u64,
    /// From the order's `processed_at` to its COMPLETED on each stream.
    pub(crate) fan_out: Latency,
    /// From the `PlaceOrder` answer to COMPLETED on each stream.
    pub(crate) accept_to_completed: Latency,
    pub(crate) fan_out_secs: f64,
    /// Streams that ended while the bench held them.
    pub(crate) ended: u64,
    pub(crate) errors: BTreeMap<String, u64>,
}

/// A process's resident set in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_kib(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

#[derive(Debug, Default)]
struct Seen {
    opened: Counter,
    failed: Counter,
    ended: Counter,
    deliveries: Counter,
    fan_out: Latencies,
    accept_to_completed: Latencies,
    errors: Errors,
    accepted_at: Mutex<HashMap<String, Instant>>,
}

pub(crate) async fn measure(
    shape: &StreamsShape,
    notify_url: &str,
    placer: Placer,
    tokens: Vec<String>,
    progress: &Progress,
) -> anyhow::Result<StreamsReport> {
    let users = tokens.len();
    let connections = shape.streams.div_ceil(STREAMS_PER_CONNECTION).max(1);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(notify_url.to_owned())?
                .connect()
                .await
                .with_context(|| format!("connecting to notify at {notify_url}"))?,
        );
    }
    let rss = |what: &str| -> anyhow::Result<Option<u64>> {
        shape
            .notify_pid
            .map(rss_kib)
            .transpose()
            .with_context(|| format!("reading notify-svc's memory {what}"))
    };
    let rss_before_kib = rss("before the streams")?;

    progress.println(format!(
        "streams: opening {} over {connections} connections for {users} users",
        shape.streams
    ));
    let seen = Arc::new(Seen::default());
    let opening = Arc::new(Semaphore::new(OPENING));
    let started = Instant::now();
    let mut streams = JoinSet::new();
    for i in 0..shape.streams {
        let token = tokens[i / shape.per_user].clone();
        let channel = channels[i % connections].clone();
        let (seen, opening) = (seen.clone(), opening.clone());
        streams.spawn(async move {
            let permit = opening.acquire_owned().await;
            let mut client = OrderStatusServiceClient::new(channel);
            let opened = client
                .watch_order_status(bearer(&token, WatchOrderStatusRequest::default()))
                .await;
            drop(permit);
            let mut stream = match opened {
                Ok(response) => {
                    seen.opened.add(1);
                    response.into_inner()
                }
                Err(status) => {
                    seen.failed.add(1);
                    seen.errors.add(format!("{:?}", status.code()));
                    return;
                }
            };
            while let Ok(Some(message)) = stream.message().await {
                if let Some(Event::Update(update)) = message.event
                    && update.status == OrderStatus::Completed as i32
                {
                    let now = Instant::now();
                    seen.deliveries.add(1);
                    if let Some(at) = update.occurred_at {
                        let at = SystemTime::UNIX_EPOCH
                            + Duration::new(
                                u64::try_from(at.seconds).unwrap_or(0),
                                u32::try_from(at.nanos).unwrap_or(0),
                            );
                        seen.fan_out
                            .record(SystemTime::now().duration_since(at).unwrap_or_default());
                    }
                    let accepted = seen
                        .accepted_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&update.correlation_id)
                        .copied();
                    if let Some(accepted) = accepted {
                        seen.accept_to_completed
                            .record(now.saturating_duration_since(accepted));
                    }
                }
            }
            seen.ended.add(1);
        });
    }
    let until = started + shape.open_deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_report = Instant::now();
    while seen.opened.get() + seen.failed.get() < shape.streams as u64 && Instant::now() < until {
        tick.tick().await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress.println(format!(
                "streams: {} open, {} failed",
                seen.opened.get(),
                seen.failed.get()
            ));
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let rss_open_kib = rss("with the streams open")?;
    let opened = seen.opened.get();
    progress.println(format!(
        "streams: {opened} open in {open_secs:.1}s; each user places one order"
    ));

    // One order per user, `concurrency` at a time, at `rate` if given.
    let placing = Arc::new(Semaphore::new(shape.concurrency.max(1)));
    let mut orders = JoinSet::new();
    let fan_out_started = Instant::now();
    for (n, token) in tokens.into_iter().enumerate() {
        if let Some(rate) = shape.rate {
            let at = fan_out_started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let (placer, seen, placing) = (placer.clone(), seen.clone(), placing.clone());
        let timeout = shape.request_timeout;
        orders.spawn(async move {
            let _permit = placing.acquire_owned().await;
            match tokio::time::timeout(timeout, placer.place(n as u64, &token)).await {
                Ok(Ok(cid)) => {
                    seen.accepted_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(cid, Instant::now());
                    true
                }
                Ok(Err(code)) => {
                    seen.errors.add(code);
                    false
                }
                Err(_) => {
                    seen.errors.add("client: timeout");
                    false
                }
            }
        });
    }
    let mut orders_accepted = 0;
    while let Some(done) = orders.join_next().await {
        if matches!(done, Ok(true)) {
            orders_accepted += 1;
        }
    }
    let deliveries_expected = orders_accepted * shape.per_user as u64;
    let until = Instant::now() + shape.drain;
    while seen.deliveries.get() < deliveries_expected && Instant::now() < until {
        tick.tick().await;
    }
    let fan_out_secs = fan_out_started.elapsed().as_secs_f64();
    let rss_after_fan_out_kib = rss("after the fan-out")?;
    streams.abort_all();

    let kib_per_stream = match (rss_before_kib, rss_open_kib) {
        (Some(before), Some(open)) if opened > 0 => {
            Some(open.saturating_sub(before) as f64 / opened as f64)
        }
        _ => None,
    };
    Ok(StreamsReport {
        streams: shape.streams,
        users,
        connections,
        rate: shape.rate,
        opened,
        failed_to_open: seen.failed.get(),
        open_secs,
        notify_pid: shape.notify_pid,
        rss_before_kib,
        rss_open_kib,
        rss_after_fan_out_kib,
        kib_per_stream,
        orders_accepted,
        deliveries_expected,
        deliveries_seen: seen.deliveries.get(),
        fan_out: seen.fan_out.summary(),
        accept_to_completed: seen.accept_to_completed.summary(),
        fan_out_secs,
        ended: seen.ended.get(),
        errors: seen.errors.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_read_from_the_vmrss_line() {
        let status = "Name:\tnotify-svc\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_kib(status), Some(12345));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_kib(std::process::id()).expect("our own /proc status") > 0);
    }
}
