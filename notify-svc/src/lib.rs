//! notify-svc: live order status for the browser.
//!
//! Two halves share nothing but the backplane. The consumer ([`consumer`]) takes status events
//! from the broker's `notify-svc` group (one replica per event), finds the order's owner (the
//! customer the event carries sealed, or the Redis owner map), and
//! publishes the update on the owner's backplane channel. The gRPC service ([`service`]) serves
//! `WatchOrderStatus`: each stream subscribes to its caller's channel on this replica, sends a
//! snapshot of the named orders, then live updates and heartbeats.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use contoso_backplane::Backplane;
use contoso_bus::Bus;
use contoso_platform::{
    auth::{AuthInterceptor, Authenticator},
    seal::CustomerSealer,
    server::{GrpcHost, Readiness, ServerLimits},
};
use contoso_proto::notify::v1::order_status_service_server::OrderStatusServiceServer;
use contoso_state::{StatusReader, StatusWriter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

mod consumer;
mod error;
mod events;
mod forward_only;
mod limits;
mod metrics;
mod service;
mod watch;

#[cfg(test)]
mod tests;

/// The adapters notify-svc runs on. `main` wires NATS and Redis; `contoso dev` and tests wire
/// the in-memory ones.
#[derive(Debug, Clone)]
pub struct Deps {
    pub bus: Arc<dyn Bus>,
    /// Owners and statuses, for routing and snapshots.
    pub state: Arc<dyn StatusReader>,
    /// Moves a status forward before its event is fanned out, so a snapshot taken after the
    /// update never shows an older status (the same store as `state`).
    pub status_writer: Arc<dyn StatusWriter>,
    pub backplane: Arc<dyn Backplane>,
    /// Opens the customer that status events carry sealed: the owner to route to.
    pub sealer: CustomerSealer,
    pub authenticator: Arc<Authenticator>,
    pub readiness: Readiness,
}

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Idle streams get a heartbeat this often so proxies keep grpc-web responses open.
    pub heartbeat_interval: Duration,
    /// Concurrent streams one user may hold on this instance.
    pub max_streams_per_user: usize,
    /// Correlation ids one request may name.
    pub max_correlation_ids: usize,
    /// Messages queued per stream for a slow reader.
    pub stream_buffer: usize,
    /// How long a stream's queue may stay full before the client is dropped.
    pub client_stall_timeout: Duration,
    /// Orders per stream whose last sent status is remembered for the forward-only filter.
    pub forward_memory: usize,
    /// The durable consumer group every replica joins.
    pub consumer_group: String,
    /// Status events handled at once by this instance.
    pub consumer_concurrency: usize,
    /// Tries of one event whose owner stays unknown (or whose stored state is unreadable) before
    /// it is dead-lettered; Redis being unavailable never counts.
    pub max_deliver: i64,
    /// Pauses between owner lookups before an event is left for redelivery.
    pub owner_retry_delays: Vec<Duration>,
    /// Redelivery delay of an event whose owner is still unknown.
    pub missing_owner_redelivery: Duration,
    /// First redelivery delay after a Redis failure, doubled per attempt.
    pub retry_backoff: Duration,
    pub server: ServerLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            max_streams_per_user: 16,
            max_correlation_ids: 100,
            stream_buffer: 64,
            client_stall_timeout: Duration::from_secs(10),
            forward_memory: 1024,
            consumer_group: "notify-svc".to_owned(),
            consumer_concurrency: 32,
            max_deliver: 10,
            owner_retry_delays: [100, 250, 500].map(Duration::from_millis).to_vec(),
            missing_owner_redelivery: Duration::from_secs(2),
            retry_backoff: Duration::from_millis(500),
            server: ServerLimits::default(),
        }
    }
}

/// How long in-flight status events may take to finish once the server has stopped.
const CONSUMER_DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Joins the consumer group, then serves `OrderStatusService` (plus health, reflection,
/// grpc-web and probes) on `listener` until `shutdown` fires. Shutdown ends every open stream
/// and lets in-flight events finish.
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    metrics::register();
    contoso_bus::telemetry::register_metrics();
    let spec = consumer::spec(&settings);
    // Joined before serving, so a client whose stream is open can rely on events being consumed.
    let deliveries = deps
        .bus
        .consume(&spec)
        .await
        .with_context(|| format!("joining the {} consumer group", spec.group))?;
    let consumer_stop = shutdown.child_token();
    let mut consuming = tokio::spawn(consumer::run(
        Arc::new(consumer::Consumer::new(
            deps.state.clone(),
            deps.status_writer.clone(),
            deps.backplane.clone(),
            Arc::new(deps.sealer),
            settings.clone(),
        )),
        deps.bus.clone(),
        spec,
        deliveries,
        settings.consumer_concurrency,
        consumer_stop.clone(),
    ));

    let limits = settings.server.clone();
    let service =
        service::WatchService::new(deps.state, deps.backplane, settings, shutdown.clone());
    let grpc = InterceptedService::new(
        OrderStatusServiceServer::new(service).max_decoding_message_size(limits.max_message_bytes),
        AuthInterceptor::new(deps.authenticator),
    );
    let served = GrpcHost::new(deps.readiness)
        .limits(limits)
        .add_service(grpc)
        .serve(listener, shutdown)
        .await;

    // The server may also stop on an error; the consumer must not outlive it.
    consumer_stop.cancel();
    match tokio::time::timeout(CONSUMER_DRAIN_DEADLINE, &mut consuming).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "status event consumer task failed"),
        Err(_) => {
            // Unanswered events are redelivered after the ack wait, so giving up here loses none.
            consuming.abort();
            tracing::warn!("status events still in flight at the drain deadline; abandoning them");
        }
    }
    served
}
