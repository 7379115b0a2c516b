//! `contoso bench`: places orders against a running system over gRPC and prints how long intake
//! took (PlaceOrder round trip) and how long each order took to reach COMPLETED on a status
//! stream. Numbers, not verdicts: compare runs taken on the same machine in one session.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use contoso_domain::UserId;
use contoso_platform::auth::{AuthArgs, Authenticator};
use contoso_proto::{
    notify::v1::{
        WatchOrderStatusRequest, order_status_service_client::OrderStatusServiceClient,
        watch_order_status_response::Event,
    },
    orders::v1::{
        OrderLineRequest, OrderStatus, PlaceOrderRequest, order_service_client::OrderServiceClient,
    },
};
use tokio::{sync::Mutex, task::JoinSet};
use tonic::{Request, transport::Channel};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// accept-svc (or the gateway) gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    accept_url: String,
    /// notify-svc (or the gateway) gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    notify_url: String,
    /// Orders to place.
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Distinct users the orders are spread over (one status stream each).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// How long to wait for the last COMPLETED.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    #[command(flatten)]
    auth: AuthArgs,
}

/// When each correlation id was sent and when it completed.
#[derive(Debug, Default)]
struct Timeline {
    sent: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.users > 0 && args.concurrency > 0,
        "--users and --concurrency must be at least 1"
    );
    let auth = Authenticator::new(&args.auth.clone().or_dev_secret())?;
    let accept = Channel::from_shared(args.accept_url.clone())?
        .connect()
        .await
        .context("connecting to accept")?;
    let notify = Channel::from_shared(args.notify_url.clone())?
        .connect()
        .await
        .context("connecting to notify")?;
    let tokens = (0..args.users)
        .map(|i| {
            auth.issue(
                &UserId::parse(format!("bench-{i}"))?,
                Duration::from_secs(3600),
            )
            .map_err(Into::into)
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));

    // One stream per user, open before the first order so every COMPLETED is seen.
    let mut watchers = JoinSet::new();
    for token in &tokens {
        let mut client = OrderStatusServiceClient::new(notify.clone());
        let mut stream = client
            .watch_order_status(bearer(token, WatchOrderStatusRequest::default()))
            .await
            .context("opening a status stream")?
            .into_inner();
        let timeline = timeline.clone();
        watchers.spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if let Some(Event::Update(update)) = message.event
                    && update.status == OrderStatus::Completed as i32
                {
                    timeline
                        .lock()
                        .await
                        .completed
                        .insert(update.correlation_id, Instant::now());
                }
            }
        });
    }

    let started = Instant::now();
    let mut intake = Vec::with_capacity(args.orders);
    let mut placing = JoinSet::new();
    let mut failures = 0usize;
    for n in 0..args.orders {
        if placing.len() >= args.concurrency {
            record(placing.join_next().await, &mut intake, &mut failures);
        }
        let mut client = OrderServiceClient::new(accept.clone());
        let token = tokens[n % tokens.len()].clone();
        let timeline = timeline.clone();
        placing.spawn(async move {
            let request = PlaceOrderRequest {
                lines: vec![OrderLineRequest {
                    product_id: "AZ-900".into(),
                    quantity: 1,
                }],
                idempotency_key: String::new(),
            };
            let sent = Instant::now();
            let order = client
                .place_order(bearer(&token, request))
                .await?
                .into_inner()
                .order;
            let took = sent.elapsed();
            if let Some(order) = order {
                timeline
                    .lock()
                    .await
                    .sent
                    .insert(order.correlation_id, sent);
            }
            Ok::<Duration, tonic::Status>(took)
        });
    }
    while let Some(done) = placing.join_next().await {
        record(Some(done), &mut intake, &mut failures);
    }
    let intake_wall = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut end_to_end = loop {
        ticker.tick().await;
        let t = timeline.lock().await;
        let done: Vec<Duration> = t
            .sent
            .iter()
            .filter_map(|(cid, sent)| t.completed.get(cid).map(|c| c.duration_since(*sent)))
            .collect();
        if done.len() == t.sent.len() || Instant::now() > deadline {
            break done;
        }
    };
    watchers.abort_all();

    intake.sort();
    end_to_end.sort();
    println!(
        "orders placed: {} ({failures} failed), concurrency {}, users {}",
        intake.len(),
        args.concurrency,
        args.users
    );
    println!(
        "intake:   {:.0} orders/s; PlaceOrder p50 {} p90 {} p99 {} max {}",
        intake.len() as f64 / intake_wall.as_secs_f64(),
        ms(&intake, 50),
        ms(&intake, 90),
        ms(&intake, 99),
        ms(&intake, 100)
    );
    println!(
        "complete: {} of {} seen COMPLETED; placed→COMPLETED p50 {} p90 {} p99 {} max {}",
        end_to_end.len(),
        intake.len(),
        ms(&end_to_end, 50),
        ms(&end_to_end, 90),
        ms(&end_to_end, 99),
        ms(&end_to_end, 100)
    );
    anyhow::ensure!(failures == 0, "{failures} orders failed");
    anyhow::ensure!(
        end_to_end.len() == intake.len(),
        "not every order completed within {}s",
        args.timeout_secs
    );
    Ok(())
}

fn record(
    joined: Option<Result<Result<Duration, tonic::Status>, tokio::task::JoinError>>,
    intake: &mut Vec<Duration>,
    failures: &mut usize,
) {
    match joined {
        Some(Ok(Ok(took))) => intake.push(took),
        Some(Ok(Err(status))) => {
            *failures += 1;
            tracing::warn!(code = ?status.code(), message = status.message(), "PlaceOrder failed");
        }
        Some(Err(e)) => {
            *failures += 1;
            tracing::warn!(error = %e, "an order task failed");
        }
        None => {}
    }
}

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The `p`th percentile of sorted durations, in milliseconds.
fn ms(sorted: &[Duration], p: usize) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let index = ((sorted.len() - 1) * p) / 100;
    format!("{:.2}ms", sorted[index].as_secs_f64() * 1000.0)
}
