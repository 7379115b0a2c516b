//! One open `WatchOrderStatus` stream: a task that sends the snapshot, then the caller's live
//! updates (forward-only) and heartbeats, into a bounded channel the response reads from.
//!
//! The task ends, and with it the backplane subscription and the stream slot, when the client
//! goes away, when it stops reading for too long, or when the service shuts down (the response
//! then ends cleanly so the client reconnects to another replica).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use contoso_backplane::UpdateStream;
use contoso_domain::{OrderId, StatusUpdate};
use contoso_proto::convert::to_timestamp;
use contoso_proto::{
    notify::v1::{
        Heartbeat, OrderStatusUpdate, WatchOrderStatusResponse, watch_order_status_response::Event,
    },
    orders::v1 as orders_pb,
};
use futures::StreamExt;
use tokio::{sync::mpsc, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{Settings, forward_only::LastSent, limits::StreamPermit, metrics};

pub(crate) type Item = Result<WatchOrderStatusResponse, Status>;

/// Everything a stream needs, gathered by the handler before the response starts.
pub(crate) struct Watch {
    pub(crate) snapshot: Vec<StatusUpdate>,
    pub(crate) updates: UpdateStream,
    pub(crate) permit: StreamPermit,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("snapshot", &self.snapshot.len())
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

/// Why a stream stopped sending.
#[derive(Debug)]
enum Stop {
    ClientGone,
    ClientStalled,
    BackplaneLost,
    Shutdown,
}

struct Sink<'a> {
    tx: &'a mpsc::Sender<Item>,
    stall_timeout: Duration,
    shutdown: &'a CancellationToken,
}

impl Sink<'_> {
    async fn send(&self, event: Event) -> Result<(), Stop> {
        let item = Ok(WatchOrderStatusResponse { event: Some(event) });
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            sent = tokio::time::timeout(self.stall_timeout, self.tx.send(item)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::ClientGone),
                Err(_) => Err(Stop::ClientStalled),
            },
        }
    }
}

/// Runs one stream until it stops; the reason is logged.
pub(crate) async fn forward(
    watch: Watch,
    tx: mpsc::Sender<Item>,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    let Watch {
        snapshot,
        updates,
        permit,
    } = watch;
    let sink = Sink {
        tx: &tx,
        stall_timeout: settings.client_stall_timeout,
        shutdown: &shutdown,
    };
    let open = metrics::OpenStream::new();
    let stop = send_all(&sink, snapshot, updates, &settings).await;
    drop(open);
    match stop {
        Stop::ClientStalled => tracing::warn!(
            stall_timeout = ?settings.client_stall_timeout,
            "client stopped reading; dropping its stream"
        ),
        Stop::ClientGone => tracing::debug!("client closed the stream"),
        Stop::BackplaneLost => {
            tracing::warn!("backplane subscription ended; asked the client to reconnect")
        }
        Stop::Shutdown => {
            tracing::debug!("shutting down; ending the stream so the client reconnects")
        }
    }
    drop(permit);
}

async fn send_all(
    sink: &Sink<'_>,
    snapshot: Vec<StatusUpdate>,
    mut updates: UpdateStream,
    settings: &Settings,
) -> Stop {
    let mut sent = LastSent::new(settings.forward_memory);
    for update in snapshot {
        if sent.advance(update.correlation_id, update.status)
            && let Err(stop) = sink.send(Event::Update(to_proto(&update))).await
        {
            return stop;
        }
    }

    let period = settings.heartbeat_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            biased;
            () = sink.shutdown.cancelled() => return Stop::Shutdown,
            () = sink.tx.closed() => return Stop::ClientGone,
            next = updates.next() => match next {
                Some(update) if sent.advance(update.correlation_id, update.status) => {
                    metrics::backplane("in");
                    Event::Update(to_proto(&update))
                }
                Some(update) => {
                    tracing::debug!(
                        correlation_id = %update.correlation_id,
                        status = %update.status,
                        "dropping an update that does not move the order forward"
                    );
                    continue;
                }
                None => {
                    // The subscription was lost or fell behind: without it this stream would go
                    // silent or miss updates, so it ends with UNAVAILABLE and the client
                    // reconnects and takes a fresh snapshot. Waits for room like any other item
                    // (a lagging client's channel is full), within the stall timeout.
                    let ended = Err(Status::unavailable("status updates were interrupted; reconnect"));
                    let _ = tokio::time::timeout(sink.stall_timeout, sink.tx.send(ended)).await;
                    return Stop::BackplaneLost;
                }
            },
            _ = heartbeat.tick() => Event::Heartbeat(Heartbeat { sent_at: Some(to_timestamp(Utc::now())) }),
        };
        if let Err(stop) = sink.send(event).await {
            return stop;
        }
    }
}

pub(crate) fn to_proto(update: &StatusUpdate) -> OrderStatusUpdate {
    OrderStatusUpdate {
        correlation_id: update.correlation_id.to_string(),
        status: orders_pb::OrderStatus::from(update.status).into(),
        order_id: update.order_id.map_or(0, OrderId::get),
        occurred_at: Some(to_timestamp(update.occurred_at)),
        reason: update.reason.clone(),
    }
}
