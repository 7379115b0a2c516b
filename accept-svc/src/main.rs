//! accept-svc binary: reads the environment, connects the real adapters, serves until SIGTERM.

use std::{net::SocketAddr, sync::Arc};

use accept_svc::{Deps, Settings};
use anyhow::Context;
use clap::Parser;
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    config::{NatsArgs, RedisArgs, SealArgs},
    server::{Readiness, bind},
    shutdown, telemetry,
};
use contoso_store::config::DatabaseArgs;

/// Catalog, order intake and order history over gRPC.
#[derive(Debug, Parser)]
#[command(name = "accept-svc", version)]
struct Args {
    /// gRPC listen address (also serves /healthz and /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Postgres: catalog, order id blocks, order history.
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
    telemetry::init();
    let args = Args::parse();
    let auth = Arc::new(Authenticator::new(&args.auth).context("reading the JWT settings")?);
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
        store,
        state,
        bus,
        auth,
        sealer,
        readiness,
    };
    accept_svc::run(listener, deps, Settings::default(), shutdown::on_signal()).await
}
