//! process-svc: the order worker. It consumes `orders.accepted`, records each order in the system
//! of record (one transaction with an outbox row), and relays the outbox to `orders.processed`,
//! moving the workflow status ACCEPTED → PROCESSING → COMPLETED on the way. It has no gRPC API of
//! its own; its port serves health, reflection, `/healthz` and `/readyz`.
//!
//! Shutdown order: stop pulling messages, finish (and ack) in-flight ones within
//! [`Settings::drain_deadline`], let the relay publish one last batch, then stop the health server.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use contoso_bus::Bus;
use contoso_platform::{
    seal::CustomerSealer,
    server::{GrpcHost, Readiness, ServerLimits},
};
use contoso_state::StatusWriter;
use contoso_store::{OrderWriter, Outbox};

mod consumer;
mod event;
mod metrics;
mod relay;

#[cfg(test)]
mod tests;

/// The durable consumer group every replica joins, so each message goes to one of them.
pub const CONSUMER_GROUP: &str = "process-svc";

/// The capabilities process-svc works through: it records orders with their outbox rows, relays the
/// outbox, and moves workflow statuses forward.
#[derive(Debug, Clone)]
pub struct Deps {
    pub bus: Arc<dyn Bus>,
    pub state: Arc<dyn StatusWriter>,
    pub orders: Arc<dyn OrderWriter>,
    pub outbox: Arc<dyn Outbox>,
    /// Opens the customer reference sealed by accept-svc.
    pub sealer: CustomerSealer,
    pub readiness: Readiness,
}

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deliveries worked on at once by this replica.
    pub concurrency: usize,
    /// Most orders recorded in one transaction. A batch takes what has arrived, never waits for
    /// more; 1 records every order on its own.
    pub max_batch: usize,
    /// Failures of unknown cause (a refused statement, a panic) a message may have on this replica
    /// before it is given up on: announced FAILED and dead-lettered. Transient failures (the
    /// database unavailable) never count; the broker itself never gives up on a message.
    pub max_deliver: i64,
    /// How long a delivery may stay unacknowledged before the broker redelivers it.
    pub ack_wait: Duration,
    /// How long one delivery may keep telling the broker it is still in progress. Past this the
    /// signals stop, so a delivery stuck on a hung call is redelivered after the ack wait.
    pub max_in_progress: Duration,
    /// Longest wait before retrying a message that failed for a transient reason.
    pub max_retry_backoff: Duration,
    /// How often the relay looks at the outbox without being woken (entries of crashed replicas,
    /// expired leases).
    pub outbox_poll_interval: Duration,
    /// Outbox entries leased per batch.
    pub outbox_batch_size: i64,
    /// How long a leased entry is reserved for this relay.
    pub outbox_lease: Duration,
    /// How long published outbox entries are kept (for audit) before the relay deletes them.
    pub outbox_retention: Duration,
    /// How often the relay deletes published entries past their retention.
    pub outbox_prune_interval: Duration,
    /// How long in-flight deliveries, and then the relay's last batch, may take after shutdown.
    pub drain_deadline: Duration,
    /// Limits of the health server.
    pub server: ServerLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_batch: 16,
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            max_in_progress: Duration::from_secs(300),
            max_retry_backoff: Duration::from_secs(60),
            outbox_poll_interval: Duration::from_secs(1),
            outbox_batch_size: 50,
            outbox_lease: Duration::from_secs(30),
            outbox_retention: Duration::from_secs(7 * 24 * 3600),
            outbox_prune_interval: Duration::from_secs(600),
            drain_deadline: Duration::from_secs(20),
            server: ServerLimits::default(),
        }
    }
}

/// Runs the consumer, the outbox relay and the health server on `listener` until `shutdown`
/// fires, then drains in that order. Returns an error when the health server fails.
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    metrics::register();
    contoso_bus::telemetry::register_metrics();
    let wake = Arc::new(Notify::new());
    // Each stage has its own token so the stages stop one after the other, not all at once.
    let stop_consuming = shutdown.child_token();
    let stop_relay = CancellationToken::new();
    let stop_server = CancellationToken::new();

    let mut server = tokio::spawn(
        GrpcHost::new(deps.readiness.clone())
            .limits(settings.server.clone())
            .serve(listener, stop_server.clone()),
    );

    let relay = relay::Relay {
        bus: deps.bus.clone(),
        state: deps.state.clone(),
        outbox: deps.outbox,
        settings: settings.clone(),
    };
    let relay = tokio::spawn(relay.run(wake.clone(), stop_relay.clone()));

    let worker = consumer::Worker {
        bus: deps.bus,
        state: deps.state,
        orders: deps.orders,
        sealer: Arc::new(deps.sealer),
        wake,
        settings,
        strikes: Arc::default(),
    };
    let mut consuming = tokio::spawn(worker.run(stop_consuming.clone()));

    let mut server_result = None;
    tokio::select! {
        joined = &mut consuming => log_join("consumer", joined),
        joined = &mut server => {
            tracing::error!("health server stopped before shutdown; stopping the worker");
            server_result = Some(joined);
            stop_consuming.cancel();
            log_join("consumer", consuming.await);
        }
    }
    stop_relay.cancel();
    log_join("outbox relay", relay.await);
    stop_server.cancel();
    let served = match server_result {
        Some(joined) => joined,
        None => server.await,
    };
    served
        .context("health server task")?
        .context("health server")?;
    if !shutdown.is_cancelled() {
        anyhow::bail!("process-svc stopped without a shutdown request");
    }
    Ok(())
}

fn log_join(task: &str, joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(task, error = %e, "task ended abnormally");
    }
}
