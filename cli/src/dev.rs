//! `contoso dev`: every service in one process, wired to in-memory adapters unless a real backend
//! is named. Each service runs through the same `run` its own binary uses.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use contoso_backplane::{Backplane, MemoryBackplane, RedisBackplane};
use contoso_bus::{Bus, MemoryBus, NatsBus, NatsSettings};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::{Readiness, bind},
    shutdown,
};
use contoso_state::{MemoryState, RedisState, WorkflowState};
use contoso_store::{ManualClock, MemoryStore, PgStore, Store};
use tokio::task::JoinSet;

/// Lifetime of workflow keys in dev (as in production).
const WORKFLOW_TTL: Duration = Duration::from_secs(45 * 60);

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Use this Postgres (migrated at start) instead of the in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Use this Redis for workflow state and the backplane instead of memory.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Use this NATS (JetStream) instead of the in-memory bus.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Gateway: grpc-web, static files, dev login.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    /// accept-svc gRPC.
    #[arg(long, default_value = "127.0.0.1:50051")]
    accept_addr: SocketAddr,
    /// notify-svc gRPC.
    #[arg(long, default_value = "127.0.0.1:50052")]
    notify_addr: SocketAddr,
    /// process-svc health endpoints (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    process_addr: SocketAddr,
    /// Directory with the built SPA, served by the gateway. Default: the checkout's
    /// `gateway/web/dist`, built with npm first when missing or stale.
    #[arg(long, env = "WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// JWT settings for every service. `JWT_JWKS_FILE` adds an identity provider's keys beside
    /// the dev secret (`JWT_ISSUER` then names that provider).
    #[command(flatten)]
    auth: AuthArgs,
    /// Seed a few demo customers (ada, grace, linus) with completed orders, their entitlements
    /// and assigned seats; nothing when they are already there.
    #[arg(long)]
    demo_data: bool,
    /// Sign-in with an identity provider in the web app, beside the dev login.
    #[command(flatten)]
    oidc: Box<gateway::OidcArgs>,
}

struct Backends {
    store: Arc<dyn Store>,
    state: Arc<dyn WorkflowState>,
    backplane: Arc<dyn Backplane>,
    bus: Arc<dyn Bus>,
}

/// The clock the demo data's past orders are recorded by.
fn demo_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(chrono::Utc::now() - crate::demo::PAST))
}

async fn backends(args: &DevArgs) -> anyhow::Result<Backends> {
    let store: Arc<dyn Store> = match &args.database_url {
        Some(url) => {
            let report = contoso_store::postgres::migrate(url)
                .await
                .context("migrating Postgres")?;
            tracing::info!(?report, "postgres migrated");
            let store = PgStore::connect(url, 10)
                .await
                .context("connecting to Postgres")?;
            if args.demo_data {
                let past = store.clone().with_clock(demo_clock());
                crate::demo::seed(&store, &past).await?;
            }
            Arc::new(store)
        }
        None => {
            let store = MemoryStore::new()?;
            if args.demo_data {
                let past = store.clone().with_clock(demo_clock());
                crate::demo::seed(&store, &past).await?;
            }
            Arc::new(store)
        }
    };
    let (state, backplane): (Arc<dyn WorkflowState>, Arc<dyn Backplane>) = match &args.redis_url {
        Some(url) => (
            Arc::new(
                RedisState::connect(url, "", WORKFLOW_TTL)
                    .await
                    .context("connecting to Redis")?,
            ),
            Arc::new(
                RedisBackplane::connect(url, "")
                    .await
                    .context("connecting the backplane to Redis")?,
            ),
        ),
        None => (
            Arc::new(MemoryState::new(WORKFLOW_TTL)),
            Arc::new(MemoryBackplane::new()),
        ),
    };
    let bus: Arc<dyn Bus> = match &args.nats_url {
        Some(url) => Arc::new(
            NatsBus::connect(NatsSettings {
                url: url.clone(),
                ..NatsSettings::default()
            })
            .await
            .context("connecting to NATS")?,
        ),
        None => Arc::new(MemoryBus::new()),
    };
    Ok(Backends {
        store,
        state,
        backplane,
        bus,
    })
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    // The dev stack runs on the public development secret unless JWT_SECRET names another; with
    // JWT_JWKS_FILE, an identity provider's tokens are accepted too.
    let auth = Arc::new(Authenticator::new(&args.auth.clone().or_dev_secret())?);
    let oidc = args.oidc.settings()?;
    let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS)?;
    let b = backends(&args).await?;
    let web_dir = crate::web::dev_web_dir(args.web_dir.clone());

    // Bind everything first so a taken port fails before anything starts.
    let gateway_listener = bind(args.gateway_addr).await?;
    let accept_listener = bind(args.accept_addr).await?;
    let notify_listener = bind(args.notify_addr).await?;
    let process_listener = bind(args.process_addr).await?;
    let accept_addr = accept_listener.local_addr()?;
    let notify_addr = notify_listener.local_addr()?;
    let gateway_addr = gateway_listener.local_addr()?;

    let shutdown = shutdown::on_signal();
    let mut services = JoinSet::new();
    services.spawn(process_svc::run(
        process_listener,
        process_svc::Deps {
            bus: b.bus.clone(),
            state: b.state.clone(),
            orders: b.store.clone(),
            outbox: b.store.clone(),
            sealer: sealer.clone(),
            readiness: Readiness::new(),
        },
        process_svc::Settings::default(),
        shutdown.clone(),
    ));
    services.spawn(accept_svc::run(
        accept_listener,
        accept_svc::Deps {
            catalog: b.store.clone(),
            ids: b.store.clone(),
            orders: b.store.clone(),
            entitlements: b.store.clone(),
            state: b.state.clone(),
            bus: b.bus.clone(),
            auth: auth.clone(),
            sealer: sealer.clone(),
            readiness: Readiness::new(),
        },
        accept_svc::Settings::default(),
        shutdown.clone(),
    ));
    services.spawn(notify_svc::run(
        notify_listener,
        notify_svc::Deps {
            bus: b.bus.clone(),
            state: b.state.clone(),
            status_writer: b.state.clone(),
            backplane: b.backplane.clone(),
            sealer,
            authenticator: auth.clone(),
            readiness: Readiness::new(),
        },
        notify_svc::Settings::default(),
        shutdown.clone(),
    ));
    services.spawn(gateway::run(
        gateway_listener,
        gateway::Deps {
            auth,
            readiness: Readiness::new(),
        },
        gateway::Settings {
            accept_url: format!("http://{accept_addr}"),
            notify_url: format!("http://{notify_addr}"),
            web_dir,
            dev_auth: true,
            oidc,
            ..gateway::Settings::default()
        },
        shutdown.clone(),
    ));
    println!("contoso dev is up");
    println!(
        "  gateway    http://{gateway_addr}  (grpc-web, REST /api, docs /docs, POST /dev/token)"
    );
    println!(
        "  accept-svc http://{accept_addr}  (gRPC: CatalogService, OrderService, EntitlementService)"
    );
    println!("  notify-svc http://{notify_addr}  (gRPC: OrderStatusService)");

    // The first service to stop (an error, or shutdown) stops the others.
    let mut first_error = None;
    while let Some(joined) = services.join_next().await {
        shutdown.cancel();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "a service failed");
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert_with(|| anyhow::anyhow!("a service task panicked: {e}"));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
