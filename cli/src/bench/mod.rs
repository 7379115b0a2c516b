//! `contoso bench`: measures a running system the way an operator would.
//!
//! - The load (default): simulated users hold `WatchOrderStatus` streams while orders are placed
//!   over gRPC `PlaceOrder` (and, with `--rest`, the same load again through the gateway's
//!   `POST /api/orders`), open loop at `--rate` or closed loop at `--concurrency`; accepted/s,
//!   completed/s, intake and accept→COMPLETED percentiles (HdrHistogram), errors by status code.
//!   Streams reconnect, so counting goes on across a server restart.
//! - `--raw`: first, in the same run and on the same servers, the limits the design cannot beat
//!   (see `raw`), and the system's figures as ratios of them.
//! - `--streams N`: N idle streams on one notify-svc, its memory per stream and the fan-out.
//!
//! A table on stdout and the whole report as JSON (`--json`). Numbers, not verdicts: compare
//! figures taken in one run on one machine.

mod load;
mod progress;
mod raw;
mod report;
mod stats;
mod streams;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use contoso_domain::UserId;
use contoso_platform::auth::{AuthArgs, Authenticator};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tonic::transport::Channel;

use load::{Placer, Shape, User, Watchers};
use progress::Progress;
use report::Report;
use streams::StreamsShape;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// accept-svc (or the gateway) gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    accept_url: String,
    /// notify-svc (or the gateway) gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    notify_url: String,
    /// The gateway, for `--rest`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway_url: String,
    /// Open loop: place this many orders per second whatever the answers do (latency counts from
    /// each order's intended send time). Without it: closed loop, as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: users placing orders back to back. Also the number of workers of each `--raw`
    /// loop, and of the placements of `--streams`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Open loop: the most placements in flight; one more is not sent and counts as an error
    /// (`client: in-flight limit`).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_in_flight: u64,
    /// Simulated users, each holding one status stream; orders go to them in turn.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Place orders for this many seconds (default 10 when `--orders` is not given either).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Place this many orders (per API).
    #[arg(long)]
    orders: Option<u64>,
    /// After placing stops, how long to wait for the last COMPLETED, in seconds.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,
    /// Deadline of one placement, in seconds.
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    /// gRPC connections to accept-svc the placements are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Also run the same load through the gateway's REST API (`POST /api/orders`), after gRPC.
    #[arg(long)]
    rest: bool,
    /// First measure the raw limits on the same servers (needs --redis-url, --nats-url,
    /// --database-url) and print the system's figures as ratios of them.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    raw_targets: raw::RawArgs,
    /// Instead of the load: open this many idle streams on notify-svc, then have every user place
    /// one order (at `--rate` if given, else all at once), and report memory per stream and the
    /// fan-out latency.
    #[arg(long)]
    streams: Option<u64>,
    /// `--streams`: streams per user (notify-svc allows MAX_STREAMS_PER_USER, 16 by default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    streams_per_user: u64,
    /// `--streams`: notify-svc's process id, to read its resident memory from /proc.
    #[arg(long)]
    notify_pid: Option<u32>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench.json")]
    json: PathBuf,
    /// No progress bar or progress lines on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Exit non-zero when a placement failed or an accepted order was not seen COMPLETED (the
    /// report is written either way).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    auth: AuthArgs,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut report = Report::new();
    let progress = Progress::new(!args.no_progress);
    let auth = Authenticator::new(&args.auth.clone().or_dev_secret())?;
    let concurrency = usize::try_from(args.concurrency)?;
    let request_timeout = Duration::from_secs(args.request_timeout_secs);
    let drain = Duration::from_secs(args.drain_secs);
    let connect = |url: &str, what: &'static str| {
        let url = url.to_owned();
        async move {
            Channel::from_shared(url.clone())?
                .connect()
                .await
                .with_context(|| format!("connecting to {what} at {url}"))
        }
    };
    let mut accept = Vec::new();
    for _ in 0..args.connections {
        accept.push(connect(&args.accept_url, "accept").await?);
    }
    let grpc = Placer::Grpc(accept.clone().into());
    // Users of this run only, so nothing from an earlier run shows on their streams.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let token = |i: u64| -> anyhow::Result<String> {
        Ok(auth.issue(
            &UserId::parse(format!("bench-{run_id}-{i}"))?,
            Duration::from_secs(6 * 3600),
        )?)
    };

    if args.raw {
        report.raw = Some(
            raw::measure(&args.raw_targets, concurrency, &accept[0], &progress)
                .await
                .context("measuring the raw limits")?,
        );
    }

    if let Some(n) = args.streams {
        let per_user = args.streams_per_user;
        let tokens = (0..n.div_ceil(per_user))
            .map(token)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shape = StreamsShape {
            streams: usize::try_from(n)?,
            per_user: usize::try_from(per_user)?,
            notify_pid: args.notify_pid,
            concurrency,
            rate: args.rate,
            open_deadline: Duration::from_secs(300),
            drain,
            request_timeout,
        };
        report.streams =
            Some(streams::measure(&shape, &args.notify_url, grpc, tokens, &progress).await?);
    } else {
        let users = (0..args.users)
            .map(|i| Ok(Arc::new(User::new(token(i)?))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let notify = connect(&args.notify_url, "notify").await?;
        let watchers = Watchers::open(&users, &notify, &accept[0], Duration::from_secs(60))
            .await
            .context("opening the users' status streams")?;
        let shape = Shape {
            rate: args.rate,
            concurrency,
            max_in_flight: usize::try_from(args.max_in_flight)?,
            duration: match (args.duration_secs, args.orders) {
                (None, None) => Some(Duration::from_secs(10)),
                (secs, _) => secs.map(Duration::from_secs),
            },
            orders: args.orders,
            drain,
            request_timeout,
        };
        let mut placers = vec![grpc];
        if args.rest {
            placers.push(Placer::Rest {
                client: Arc::new(Client::builder(TokioExecutor::new()).build_http()),
                url: format!("{}/api/orders", args.gateway_url.trim_end_matches('/')).into(),
            });
        }
        for placer in placers {
            let phase = load::run_phase(placer, &users, &watchers, &shape, &progress).await;
            report.phases.push(phase);
        }
    }

    report.finish();
    print!("{}", report.table());
    report
        .write(&args.json)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("report: {}", args.json.display());
    if args.strict {
        report.check()?;
    }
    Ok(())
}
