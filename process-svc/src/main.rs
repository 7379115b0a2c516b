//! The process-svc binary: reads its configuration from flags or the environment, connects
//! Postgres, NATS and Redis, and runs the worker until SIGTERM or SIGINT.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

use contoso_bus::NatsArgs;
use contoso_platform::{
    seal::SealArgs,
    server::{Readiness, ServerArgs, bind},
};
use contoso_state::RedisArgs;
use contoso_store::config::DatabaseArgs;
use process_svc::{Deps, Settings};

/// Records accepted orders in Postgres and publishes `orders.processed`.
#[derive(Debug, Parser)]
#[command(name = "process-svc", version, about)]
struct Args {
    /// Address of the health server (gRPC health, reflection, /healthz, /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Apply the database migrations (and seed the catalog) before starting.
    #[arg(long = "migrate", env = "MIGRATE_ON_START",
          value_parser = clap::builder::BoolishValueParser::new())]
    migrate: bool,
    /// Orders worked on at once by this replica.
    #[arg(long, env = "PROCESS_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    process_concurrency: u32,
    /// Most orders recorded in one transaction (what has arrived, never waiting for more).
    #[arg(long, env = "PROCESS_BATCH_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    process_batch_size: u32,
    /// Failures of unknown cause a message may have before it is announced FAILED and
    /// dead-lettered (the database being unavailable never counts).
    #[arg(long, env = "MAX_DELIVER", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(1..))]
    max_deliver: i64,
    /// Longest time one delivery keeps telling the broker it is in progress, in seconds; a
    /// delivery stuck longer is redelivered after the ack wait.
    #[arg(long, env = "MAX_IN_PROGRESS_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_in_progress_secs: u64,
    /// How long a delivery may go unacknowledged (a worker killed mid-order) before the broker
    /// offers it to another, in seconds.
    #[arg(long, env = "ACK_WAIT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    ack_wait_secs: u64,
    /// How often the outbox relay polls without being woken, in milliseconds.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    outbox_poll_interval_ms: u64,
    /// How long published outbox rows are kept before the relay deletes them, in hours.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 168)]
    outbox_retention_hours: u64,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    seal: SealArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.server.probe {
        std::process::exit(contoso_platform::server::probe_readiness(args.listen));
    }
    let telemetry = contoso_platform::telemetry::init("process-svc")?;
    let served = serve(args).await;
    // Also after a failure: its spans say what went wrong.
    telemetry.shutdown().await;
    served
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Secrets first: a deployment that forgot one stops here, before touching anything.
    let sealer = args.seal.sealer()?;
    if args.migrate {
        args.database.migrate().await?;
    }
    let store = args.database.connect().await?;
    let bus = args.nats.connect().await?;
    let state = args.redis.connect_state().await?;

    let readiness = Readiness::new()
        .probe(
            "postgres",
            store.clone(),
            |s| async move { s.is_ready().await },
        )
        .probe(
            "redis",
            state.clone(),
            |s| async move { s.is_ready().await },
        )
        .probe("nats", bus.clone(), |b| async move { b.is_ready().await });

    let settings = Settings {
        concurrency: args.process_concurrency as usize,
        max_batch: args.process_batch_size as usize,
        max_deliver: args.max_deliver,
        max_in_progress: Duration::from_secs(args.max_in_progress_secs),
        ack_wait: Duration::from_secs(args.ack_wait_secs),
        outbox_poll_interval: Duration::from_millis(args.outbox_poll_interval_ms),
        outbox_retention: Duration::from_secs(args.outbox_retention_hours.saturating_mul(3600)),
        server: args.server.limits(),
        ..Settings::default()
    };
    let deps = Deps {
        bus,
        state,
        orders: store.clone(),
        outbox: store,
        sealer,
        readiness,
    };
    let listener = bind(args.listen).await?;
    process_svc::run(
        listener,
        deps,
        settings,
        contoso_platform::shutdown::on_signal(),
    )
    .await
}
