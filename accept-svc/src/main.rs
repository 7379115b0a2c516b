//! accept-svc binary: reads the environment, connects the real adapters, serves until SIGTERM.

use std::{net::SocketAddr, sync::Arc};

use accept_svc::{Deps, Settings};
use clap::Parser;
use contoso_bus::NatsArgs;
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::SealArgs,
    server::{Readiness, ServerArgs, bind},
    shutdown, telemetry,
};
use contoso_state::RedisArgs;
use contoso_store::config::DatabaseArgs;

/// Catalog, order intake, order history and entitlements over gRPC.
#[derive(Debug, Parser)]
#[command(name = "accept-svc", version)]
struct Args {
    /// gRPC listen address (also serves /healthz and /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
    /// Postgres: catalog, order id blocks, order history, entitlements.
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    auth: AuthArgs,
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
    let telemetry = telemetry::init("accept-svc")?;
    let served = serve(args).await;
    // Also after a failure: its spans say what went wrong.
    telemetry.shutdown().await;
    served
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Secrets first: a deployment that forgot one stops here, before touching anything.
    let auth = Arc::new(Authenticator::new(&args.auth)?);
    let sealer = args.seal.sealer()?;
    let store = args.database.connect().await?;
    let state = args.redis.connect_state().await?;
    let bus = args.nats.connect().await?;

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
    let listener = bind(args.listen).await?;
    let deps = Deps {
        catalog: store.clone(),
        ids: store.clone(),
        orders: store.clone(),
        entitlements: store,
        state,
        bus,
        auth,
        sealer,
        readiness,
    };
    let settings = Settings {
        server: args.server.limits(),
        ..Settings::default()
    };
    accept_svc::run(listener, deps, settings, shutdown::on_signal()).await
}
