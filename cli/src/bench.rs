//! `contoso bench`: places orders against a running system over gRPC (and, with `--rest`, the same
//! number again through the gateway's `POST /api/orders`) and prints how long intake took (the
//! round trip of one placement) and how long each order took to reach COMPLETED on a status stream.
//! Numbers, not verdicts: compare runs taken on the same machine in one session; the gRPC and REST
//! figures of one run are comparable with each other.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
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
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
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
    /// Also place `--orders` orders through the gateway's REST API (`POST /api/orders`), after the
    /// gRPC ones, and print both.
    #[arg(long)]
    rest: bool,
    /// The gateway, for `--rest`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway_url: String,
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

    let mut phases = vec![
        place_all(
            Placer::Grpc(OrderServiceClient::new(accept.clone())),
            &args,
            &tokens,
            &timeline,
        )
        .await,
    ];
    if args.rest {
        let rest = Placer::Rest {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: format!("{}/api/orders", args.gateway_url.trim_end_matches('/')),
        };
        phases.push(place_all(rest, &args, &tokens, &timeline).await);
    }

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

    end_to_end.sort();
    println!(
        "concurrency {}, users {}, {} orders per API",
        args.concurrency, args.users, args.orders
    );
    let mut failures = 0;
    let mut placed = 0;
    for phase in &mut phases {
        phase.intake.sort();
        failures += phase.failures;
        placed += phase.intake.len();
        println!(
            "intake {:<22} {:>6.0} orders/s; p50 {} p90 {} p99 {} max {} ({} failed)",
            phase.api,
            phase.intake.len() as f64 / phase.wall.as_secs_f64(),
            ms(&phase.intake, 50),
            ms(&phase.intake, 90),
            ms(&phase.intake, 99),
            ms(&phase.intake, 100),
            phase.failures,
        );
    }
    if let [grpc, rest] = phases.as_slice() {
        println!(
            "REST/gRPC: throughput {:.2}x, p50 {:.2}x",
            (rest.intake.len() as f64 / rest.wall.as_secs_f64())
                / (grpc.intake.len() as f64 / grpc.wall.as_secs_f64()),
            rest.intake[rest.intake.len() / 2].as_secs_f64()
                / grpc.intake[grpc.intake.len() / 2].as_secs_f64(),
        );
    }
    println!(
        "complete: {} of {placed} seen COMPLETED; placed→COMPLETED p50 {} p90 {} p99 {} max {}",
        end_to_end.len(),
        ms(&end_to_end, 50),
        ms(&end_to_end, 90),
        ms(&end_to_end, 99),
        ms(&end_to_end, 100)
    );
    anyhow::ensure!(failures == 0, "{failures} orders failed");
    anyhow::ensure!(
        end_to_end.len() == placed,
        "not every order completed within {}s",
        args.timeout_secs
    );
    Ok(())
}

/// What one API's placements measured.
#[derive(Debug)]
struct Phase {
    api: &'static str,
    intake: Vec<Duration>,
    failures: usize,
    wall: Duration,
}

/// How orders are placed: gRPC `PlaceOrder`, or REST `POST /api/orders` on the gateway.
#[derive(Debug, Clone)]
enum Placer {
    Grpc(OrderServiceClient<Channel>),
    Rest {
        client: Client<HttpConnector, Full<Bytes>>,
        url: String,
    },
}

impl Placer {
    fn api(&self) -> &'static str {
        match self {
            Self::Grpc(_) => "gRPC PlaceOrder",
            Self::Rest { .. } => "REST POST /api/orders",
        }
    }

    /// Places one single-line order; the correlation id, or why it failed.
    async fn place(self, token: &str) -> Result<String, String> {
        match self {
            Self::Grpc(mut client) => {
                let request = PlaceOrderRequest {
                    lines: vec![OrderLineRequest {
                        product_id: PRODUCT.into(),
                        quantity: 1,
                    }],
                    idempotency_key: String::new(),
                };
                let order = client
                    .place_order(bearer(token, request))
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner()
                    .order
                    .ok_or("no order in the answer")?;
                Ok(order.correlation_id)
            }
            Self::Rest { client, url } => {
                let body = format!(r#"{{"items":[{{"productId":"{PRODUCT}","quantity":1}}]}}"#);
                let request = http::Request::post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let response = client.request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                if status != http::StatusCode::CREATED {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
                }
                let order: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                order["correlationId"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "no correlationId in the answer".to_owned())
            }
        }
    }
}

/// The product every bench order buys.
const PRODUCT: &str = "AZ-900";

/// Places `--orders` orders with `placer`, `--concurrency` at a time, spread over the users.
async fn place_all(
    placer: Placer,
    args: &BenchArgs,
    tokens: &[String],
    timeline: &Arc<Mutex<Timeline>>,
) -> Phase {
    let api = placer.api();
    let started = Instant::now();
    let mut phase = Phase {
        api,
        intake: Vec::with_capacity(args.orders),
        failures: 0,
        wall: Duration::ZERO,
    };
    let mut placing = JoinSet::new();
    for n in 0..args.orders {
        if placing.len() >= args.concurrency {
            phase.record(placing.join_next().await);
        }
        let placer = placer.clone();
        let token = tokens[n % tokens.len()].clone();
        let timeline = timeline.clone();
        placing.spawn(async move {
            let sent = Instant::now();
            let cid = placer.place(&token).await?;
            let took = sent.elapsed();
            timeline.lock().await.sent.insert(cid, sent);
            Ok::<Duration, String>(took)
        });
    }
    while let Some(done) = placing.join_next().await {
        phase.record(Some(done));
    }
    phase.wall = started.elapsed();
    phase
}

impl Phase {
    fn record(&mut self, joined: Option<Result<Result<Duration, String>, tokio::task::JoinError>>) {
        match joined {
            Some(Ok(Ok(took))) => self.intake.push(took),
            Some(Ok(Err(error))) => {
                self.failures += 1;
                tracing::warn!(api = self.api, %error, "placing an order failed");
            }
            Some(Err(e)) => {
                self.failures += 1;
                tracing::warn!(error = %e, "an order task failed");
            }
            None => {}
        }
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
