//! The load: simulated users hold `WatchOrderStatus` streams while orders are placed for them over
//! gRPC or REST, open loop at a fixed rate or closed loop as fast as answers come back.
//!
//! A stream that ends (a notify-svc restart, a dropped connection) is opened again with a growing
//! pause, naming the user's oldest pending orders so the snapshot brings it up to date; the rest
//! of the pending orders are caught up with `GetOrderStatus`. So counting goes on across a server
//! restart, and the bench can be the load of a fault run.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use contoso_proto::{
    notify::v1::{
        WatchOrderStatusRequest, order_status_service_client::OrderStatusServiceClient,
        watch_order_status_response::Event,
    },
    orders::v1::{
        GetOrderStatusRequest, OrderLineRequest, OrderStatus, PlaceOrderRequest,
        order_service_client::OrderServiceClient,
    },
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::{Request, transport::Channel};

use super::{
    progress::Progress,
    stats::{Counter, Errors, Latencies, Latency, per_sec},
};

/// The product every bench order buys.
pub(crate) const PRODUCT: &str = "AZ-900";
/// The most correlation ids one `WatchOrderStatus` request may name (notify-svc's default limit).
const SNAPSHOT_IDS: usize = 100;
/// Pause before reopening a stream, doubled on each failure up to the maximum.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Pause of a closed-loop user after a failed placement, doubled up to the maximum: a client's
/// retry policy, so a server that is down is not hammered by a spinning loop.
const ERROR_PAUSE_FIRST: Duration = Duration::from_millis(10);
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(1);

/// How orders are placed and how long the bench keeps going.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// Orders per second (open loop); `None` is closed loop.
    pub(crate) rate: Option<f64>,
    /// Closed loop: users placing back to back.
    pub(crate) concurrency: usize,
    /// Open loop: the most placements in flight.
    pub(crate) max_in_flight: usize,
    pub(crate) duration: Option<Duration>,
    pub(crate) orders: Option<u64>,
    /// How long to wait, after placing stops, for the last COMPLETED.
    pub(crate) drain: Duration,
    pub(crate) request_timeout: Duration,
}

impl Shape {
    pub(crate) fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open loop"
        } else {
            "closed loop"
        }
    }
}

/// One simulated user: its token and its orders placed but not yet seen COMPLETED.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) token: String,
    orders: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
enum Pending {
    /// Accepted at this instant by this phase; waiting for COMPLETED.
    Accepted { at: Instant, phase: Arc<Phase> },
    /// COMPLETED arrived before the `PlaceOrder` answer (with how long it took from
    /// `processed_at` to the stream).
    CompletedFirst(Instant, Option<Duration>),
}

impl User {
    pub(crate) fn new(token: String) -> Self {
        Self {
            token,
            orders: Mutex::new(HashMap::new()),
        }
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.orders.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accepted(&self, cid: String, at: Instant, phase: &Arc<Phase>) {
        let mut orders = self.orders();
        match orders.remove(&cid) {
            Some(Pending::CompletedFirst(seen, delivery)) => {
                phase.completed(seen.saturating_duration_since(at), delivery)
            }
            _ => {
                orders.insert(
                    cid,
                    Pending::Accepted {
                        at,
                        phase: phase.clone(),
                    },
                );
            }
        }
    }

    /// COMPLETED seen on a stream (or read with `GetOrderStatus`, without a delivery time).
    fn completed(&self, cid: &str, delivery: Option<Duration>) {
        let now = Instant::now();
        let mut orders = self.orders();
        match orders.remove(cid) {
            Some(Pending::Accepted { at, phase }) => phase.completed(now - at, delivery),
            Some(first @ Pending::CompletedFirst(..)) => {
                orders.insert(cid.to_owned(), first);
            }
            None => {
                orders.insert(cid.to_owned(), Pending::CompletedFirst(now, delivery));
            }
        }
    }

    /// Pending orders, oldest first.
    fn pending(&self) -> Vec<String> {
        let orders = self.orders();
        let mut pending: Vec<(&String, Instant)> = orders
            .iter()
            .filter_map(|(cid, p)| match p {
                Pending::Accepted { at, .. } => Some((cid, *at)),
                Pending::CompletedFirst(..) => None,
            })
            .collect();
        pending.sort_by_key(|(_, at)| *at);
        pending.into_iter().map(|(cid, _)| cid.clone()).collect()
    }
}

/// What one API's placements recorded, shared by the placing tasks and the streams.
#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) api: &'static str,
    pub(crate) sent: Counter,
    pub(crate) accepted: Counter,
    pub(crate) completed: Counter,
    pub(crate) in_flight: Counter,
    pub(crate) errors: Errors,
    intake: Latencies,
    accept_to_completed: Latencies,
    processed_to_seen: Latencies,
}

impl Phase {
    fn new(api: &'static str) -> Self {
        Self {
            api,
            sent: Counter::default(),
            accepted: Counter::default(),
            completed: Counter::default(),
            in_flight: Counter::default(),
            errors: Errors::default(),
            intake: Latencies::default(),
            accept_to_completed: Latencies::default(),
            processed_to_seen: Latencies::default(),
        }
    }

    fn completed(&self, took: Duration, delivery: Option<Duration>) {
        self.completed.add(1);
        self.accept_to_completed.record(took);
        if let Some(delivery) = delivery {
            self.processed_to_seen.record(delivery);
        }
    }
}

/// The users' streams and what happened to them.
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) open: Counter,
    pub(crate) reconnects: Counter,
    pub(crate) caught_up: Counter,
}

/// Holds one stream per user until dropped (or aborted).
#[derive(Debug)]
pub(crate) struct Watchers {
    tasks: JoinSet<()>,
    pub(crate) stats: Arc<StreamStats>,
}

impl Watchers {
    /// Opens a stream for every user and waits (up to `deadline`) until all are open.
    pub(crate) async fn open(
        users: &[Arc<User>],
        notify: &Channel,
        accept: &Channel,
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(StreamStats::default());
        let mut tasks = JoinSet::new();
        for user in users {
            tasks.spawn(watch(
                user.clone(),
                notify.clone(),
                accept.clone(),
                stats.clone(),
            ));
        }
        let until = Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while stats.open.get() < users.len() as u64 {
            anyhow::ensure!(
                Instant::now() < until,
                "only {} of {} status streams opened within {deadline:?}",
                stats.open.get(),
                users.len()
            );
            tick.tick().await;
        }
        Ok(Self { tasks, stats })
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One user's stream, reopened whenever it ends.
async fn watch(user: Arc<User>, notify: Channel, accept: Channel, stats: Arc<StreamStats>) {
    let mut pause = RECONNECT_FIRST;
    let mut first = true;
    loop {
        let pending = if first { Vec::new() } else { user.pending() };
        let (named, rest) = pending.split_at(pending.len().min(SNAPSHOT_IDS));
        let request = WatchOrderStatusRequest {
            correlation_ids: named.to_vec(),
        };
        let mut client = OrderStatusServiceClient::new(notify.clone());
        if let Ok(response) = client
            .watch_order_status(bearer(&user.token, request))
            .await
        {
            if !first {
                stats.reconnects.add(1);
            }
            first = false;
            pause = RECONNECT_FIRST;
            stats.open.add(1);
            if !rest.is_empty() {
                tokio::spawn(catch_up(
                    user.clone(),
                    accept.clone(),
                    rest.to_vec(),
                    stats.clone(),
                ));
            }
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if let Some(Event::Update(update)) = message.event
                    && update.status == OrderStatus::Completed as i32
                {
                    let delivery = update.occurred_at.and_then(since);
                    user.completed(&update.correlation_id, delivery);
                }
            }
            stats.open.sub(1);
        }
        // A client's reconnect backoff, not synchronisation.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// Reads the status of pending orders the snapshot could not name, after a reconnect.
async fn catch_up(user: Arc<User>, accept: Channel, cids: Vec<String>, stats: Arc<StreamStats>) {
    let mut client = OrderServiceClient::new(accept);
    for cid in cids {
        let request = GetOrderStatusRequest {
            correlation_id: cid.clone(),
        };
        if let Ok(answer) = client.get_order_status(bearer(&user.token, request)).await
            && answer.into_inner().status == OrderStatus::Completed as i32
        {
            stats.caught_up.add(1);
            user.completed(&cid, None);
        }
    }
}

/// How long ago `at` was, by the wall clock (the services run on this machine's clock).
fn since(at: prost_types::Timestamp) -> Option<Duration> {
    let at = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(at.seconds).ok()?,
            u32::try_from(at.nanos).ok()?,
        );
    Some(SystemTime::now().duration_since(at).unwrap_or_default())
}

pub(crate) fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// How orders are placed: gRPC `PlaceOrder` (over several connections in turn), or REST
/// `POST /api/orders` on the gateway.
#[derive(Debug, Clone)]
pub(crate) enum Placer {
    Grpc(Arc<[Channel]>),
    Rest {
        client: Arc<Client<HttpConnector, Full<Bytes>>>,
        url: Arc<str>,
    },
}

impl Placer {
    pub(crate) fn api(&self) -> &'static str {
        match self {
            Self::Grpc(_) => "gRPC PlaceOrder",
            Self::Rest { .. } => "REST POST /api/orders",
        }
    }

    /// Places one single-line order; the correlation id, or the status code it failed with.
    pub(crate) async fn place(&self, n: u64, token: &str) -> Result<String, String> {
        match self {
            Self::Grpc(channels) => {
                let channel = channels[(n % channels.len() as u64) as usize].clone();
                let request = PlaceOrderRequest {
                    lines: vec![OrderLineRequest {
                        product_id: PRODUCT.into(),
                        quantity: 1,
                    }],
                    idempotency_key: String::new(),
                };
                let order = OrderServiceClient::new(channel)
                    .place_order(bearer(token, request))
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                    .into_inner()
                    .order
                    .ok_or("no order in the answer")?;
                Ok(order.correlation_id)
            }
            Self::Rest { client, url } => {
                let body = format!(r#"{{"items":[{{"productId":"{PRODUCT}","quantity":1}}]}}"#);
                let request = http::Request::post(&**url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|_| "client: request".to_owned())?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|_| "HTTP transport".to_owned())?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| "HTTP transport".to_owned())?
                    .to_bytes();
                if status != http::StatusCode::CREATED {
                    return Err(format!("HTTP {}", status.as_u16()));
                }
                let order: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|_| "HTTP 201 without JSON".to_owned())?;
                order["correlationId"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "HTTP 201 without correlationId".to_owned())
            }
        }
    }
}

/// One sample of the run's counters, once a second.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_secs: f64,
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) in_flight: u64,
    pub(crate) streams_open: u64,
}

/// What one phase measured, as the report carries it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) api: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) target_rate: Option<f64>,
    /// Closed loop: users placing back to back.
    pub(crate) concurrency: Option<usize>,
    /// Open loop: the most placements in flight.
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) users: usize,
    /// How long orders were placed, in seconds.
    pub(crate) load_secs: f64,
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    pub(crate) accepted_per_sec: f64,
    /// COMPLETED seen while orders were being placed, per second of that time.
    pub(crate) completed_per_sec: f64,
    /// COMPLETED seen in all, drain included.
    pub(crate) completed: u64,
    /// Accepted orders never seen COMPLETED by the end of the drain.
    pub(crate) incomplete: u64,
    /// From the first placement to the last COMPLETED (or the drain's end), in seconds.
    pub(crate) total_secs: f64,
    pub(crate) completed_per_sec_overall: f64,
    /// COMPLETED per second after placing stopped, until the last one (or the drain's end): what
    /// processing sustains with no intake beside it.
    pub(crate) completed_per_sec_after_placing: f64,
    /// `PlaceOrder` round trips; open loop measures from the intended send time.
    pub(crate) intake: Latency,
    /// From the `PlaceOrder` answer to COMPLETED on the user's stream.
    pub(crate) accept_to_completed: Latency,
    /// From the order's `processed_at` (its Postgres commit) to COMPLETED on the stream.
    pub(crate) processed_to_seen: Latency,
    pub(crate) errors: std::collections::BTreeMap<String, u64>,
    pub(crate) stream_reconnects: u64,
    /// Orders a reconnected stream could not name and `GetOrderStatus` found COMPLETED.
    pub(crate) caught_up: u64,
    pub(crate) timeline: Vec<Sample>,
}

/// Places orders with `placer` for `users` as `shape` says, then waits for their COMPLETED.
pub(crate) async fn run_phase(
    placer: Placer,
    users: &[Arc<User>],
    watchers: &Watchers,
    shape: &Shape,
    progress: &Progress,
) -> PhaseReport {
    let phase = Arc::new(Phase::new(placer.api()));
    let started = Instant::now();
    let placing = {
        let phase = phase.clone();
        let users: Arc<[Arc<User>]> = users.into();
        let shape = shape.clone();
        tokio::spawn(async move {
            match shape.rate {
                Some(rate) => open_loop(placer, users, phase, &shape, rate, started).await,
                None => closed_loop(placer, users, phase, &shape, started).await,
            }
        })
    };
    let mut timeline = Vec::new();
    progress.start_phase(phase.api, shape);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut next_sample = Duration::from_secs(1);
    let mut sample = |timeline: &mut Vec<Sample>| {
        let s = Sample {
            t_secs: started.elapsed().as_secs_f64(),
            sent: phase.sent.get(),
            accepted: phase.accepted.get(),
            completed: phase.completed.get(),
            errors: phase.errors.total(),
            in_flight: phase.in_flight.get(),
            streams_open: watchers.stats.open.get(),
        };
        progress.update(&s);
        if started.elapsed() >= next_sample {
            timeline.push(s);
            next_sample += Duration::from_secs(1);
        }
    };
    while !placing.is_finished() {
        tick.tick().await;
        sample(&mut timeline);
    }
    let load_secs = started.elapsed().as_secs_f64();
    let completed_in_load = phase.completed.get();
    progress.draining();
    let drain_until = Instant::now() + shape.drain;
    let mut last_completion_secs = load_secs;
    let mut seen = completed_in_load;
    while phase.completed.get() < phase.accepted.get() && Instant::now() < drain_until {
        tick.tick().await;
        sample(&mut timeline);
        if phase.completed.get() > seen {
            seen = phase.completed.get();
            last_completion_secs = started.elapsed().as_secs_f64();
        }
    }
    sample(&mut timeline);
    let total_secs = started.elapsed().as_secs_f64();
    progress.finish_phase();

    let accepted = phase.accepted.get();
    let completed = phase.completed.get();
    PhaseReport {
        api: phase.api,
        mode: shape.mode(),
        target_rate: shape.rate,
        concurrency: shape.rate.is_none().then_some(shape.concurrency),
        max_in_flight: shape.rate.map(|_| shape.max_in_flight),
        users: users.len(),
        load_secs,
        sent: phase.sent.get(),
        accepted,
        accepted_per_sec: per_sec(accepted, load_secs),
        completed_per_sec: per_sec(completed_in_load, load_secs),
        completed,
        incomplete: accepted.saturating_sub(completed),
        total_secs,
        completed_per_sec_overall: per_sec(completed, total_secs),
        completed_per_sec_after_placing: per_sec(
            completed.saturating_sub(completed_in_load),
            last_completion_secs - load_secs,
        ),
        intake: phase.intake.summary(),
        accept_to_completed: phase.accept_to_completed.summary(),
        processed_to_seen: phase.processed_to_seen.summary(),
        errors: phase.errors.snapshot(),
        stream_reconnects: watchers.stats.reconnects.get(),
        caught_up: watchers.stats.caught_up.get(),
        timeline,
    }
}

/// Places order `n` for `user`; the latency counts from `since` (the intended send time in open
/// loop). `Err` carries nothing: the error is counted by code in the phase.
async fn place_one(
    placer: &Placer,
    n: u64,
    user: &User,
    phase: &Arc<Phase>,
    since: Instant,
    timeout: Duration,
) -> Result<(), ()> {
    phase.sent.add(1);
    phase.in_flight.add(1);
    let answer = tokio::time::timeout(timeout, placer.place(n, &user.token)).await;
    phase.in_flight.sub(1);
    match answer {
        Ok(Ok(cid)) => {
            let now = Instant::now();
            phase.intake.record(now - since);
            phase.accepted.add(1);
            user.accepted(cid, now, phase);
            Ok(())
        }
        Ok(Err(code)) => {
            phase.errors.add(code);
            Err(())
        }
        Err(_) => {
            phase.errors.add("client: timeout");
            Err(())
        }
    }
}

async fn closed_loop(
    placer: Placer,
    users: Arc<[Arc<User>]>,
    phase: Arc<Phase>,
    shape: &Shape,
    started: Instant,
) {
    let next = Arc::new(Counter::default());
    let mut workers = JoinSet::new();
    for _ in 0..shape.concurrency {
        let (placer, users, phase, next, shape) = (
            placer.clone(),
            users.clone(),
            phase.clone(),
            next.clone(),
            shape.clone(),
        );
        workers.spawn(async move {
            let mut pause = ERROR_PAUSE_FIRST;
            loop {
                let n = next.fetch_add(1);
                if shape.orders.is_some_and(|max| n >= max)
                    || shape.duration.is_some_and(|d| started.elapsed() >= d)
                {
                    break;
                }
                let user = &users[(n % users.len() as u64) as usize];
                let sent = Instant::now();
                if place_one(&placer, n, user, &phase, sent, shape.request_timeout)
                    .await
                    .is_ok()
                {
                    pause = ERROR_PAUSE_FIRST;
                } else {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ERROR_PAUSE_MAX);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Sends order `n` at `started + n / rate` whatever the answers do; latency counts from that
/// intended time, so a stalled server shows in the percentiles instead of slowing the senders
/// (no coordinated omission). At most `max_in_flight` placements are in flight: one more is counted
/// as an error (`client: in-flight limit`) and not sent.
async fn open_loop(
    placer: Placer,
    users: Arc<[Arc<User>]>,
    phase: Arc<Phase>,
    shape: &Shape,
    rate: f64,
    started: Instant,
) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut in_flight = JoinSet::new();
    let mut n: u64 = 0;
    loop {
        if shape.orders.is_some_and(|max| n >= max) {
            break;
        }
        let intended = started + interval.mul_f64(n as f64);
        if shape.duration.is_some_and(|d| intended >= started + d) {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= shape.max_in_flight {
            phase.sent.add(1);
            phase.errors.add("client: in-flight limit");
        } else {
            let (placer, phase, user, timeout) = (
                placer.clone(),
                phase.clone(),
                users[(n % users.len() as u64) as usize].clone(),
                shape.request_timeout,
            );
            in_flight.spawn(async move {
                let _ = place_one(&placer, n, &user, &phase, intended, timeout).await;
            });
        }
        n += 1;
    }
    while in_flight.join_next().await.is_some() {}
}
