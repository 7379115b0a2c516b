//! The notify-svc binary: reads its configuration from flags or the environment, connects NATS
//! and Redis, and serves until SIGTERM or SIGINT.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use contoso_backplane::{Backplane, RedisBackplane};
use contoso_bus::NatsArgs;
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::SealArgs,
    server::{Readiness, ServerArgs, bind},
};
use contoso_state::RedisArgs;
use notify_svc::{Deps, Settings, run};

/// Live order status streams (`contoso.notify.v1.OrderStatusService`).
#[derive(Debug, Parser)]
#[command(name = "notify-svc", version, about)]
struct Args {
    /// Address to serve gRPC, grpc-web, /healthz and /readyz on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    listen: SocketAddr,
    /// Seconds between heartbeats on an idle stream.
    #[arg(long, env = "HEARTBEAT_INTERVAL_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval_secs: u64,
    /// Concurrent streams one user may hold open on this instance.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_user: u32,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// The key ring accept-svc seals customers with: status events carry their owner sealed.
    #[command(flatten)]
    seal: SealArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.server.probe {
        std::process::exit(contoso_platform::server::probe_readiness(args.listen));
    }
    let telemetry = contoso_platform::telemetry::init("notify-svc")?;
    let served = serve(args).await;
    // Also after a failure: its spans say what went wrong.
    telemetry.shutdown().await;
    served
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Secrets first: a deployment that forgot one stops here, before touching anything.
    let authenticator = Authenticator::new(&args.auth)?;
    let sealer = args.seal.sealer()?;
    let bus = args.nats.connect().await?;
    let state = args.redis.connect_state().await?;
    let backplane: Arc<dyn Backplane> = Arc::new(
        RedisBackplane::connect(&args.redis.redis_url, &args.redis.redis_key_prefix)
            .await
            .with_context(|| {
                format!(
                    "connecting the backplane to Redis at {}",
                    args.redis.redis_url
                )
            })?,
    );

    let readiness = Readiness::new()
        .probe(
            "redis",
            state.clone(),
            |s| async move { s.is_ready().await },
        )
        .probe("redis-backplane", backplane.clone(), |b| async move {
            b.is_ready().await
        })
        .probe("nats", bus.clone(), |b| async move { b.is_ready().await });

    let settings = Settings {
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_secs),
        max_streams_per_user: usize::try_from(args.max_streams_per_user)
            .context("MAX_STREAMS_PER_USER does not fit this platform")?,
        server: args.server.limits(),
        ..Settings::default()
    };
    let deps = Deps {
        bus,
        state: state.clone(),
        status_writer: state,
        backplane,
        sealer,
        authenticator: Arc::new(authenticator),
        readiness,
    };
    let listener = bind(args.listen).await?;
    run(
        listener,
        deps,
        settings,
        contoso_platform::shutdown::on_signal(),
    )
    .await
}
