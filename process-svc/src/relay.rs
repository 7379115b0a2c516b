//! The outbox relay: publishes `orders.processed` for every committed order and marks it
//! COMPLETED. Several replicas may relay at once: leases make them skip each other's entries, and
//! the broker's deduplication (message id `{cid}:processed`) covers a crash between publishing an
//! entry and completing it.

use std::sync::Arc;

use futures::StreamExt;
use tokio::{sync::Notify, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use chrono::Utc;
use contoso_bus::{Bus, Envelope, Topic};
use contoso_domain::{Entitlement, OrderId, OrderStatus, Report};
use contoso_state::StatusWriter;
use contoso_store::{Outbox, OutboxEntry};
use contoso_telemetry::Parent;

use crate::{Settings, event, metrics};

#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) state: Arc<dyn StatusWriter>,
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) settings: Arc<Settings>,
}

/// Entries of one batch in flight at once.
const RELAY_CONCURRENCY: usize = 16;
/// How often the outbox backlog is measured for `/metrics`.
const BACKLOG_POLL: std::time::Duration = std::time::Duration::from_secs(5);
/// Published entries deleted per statement when pruning.
const PRUNE_BATCH: i64 = 500;

/// How relaying one batch ended.
#[derive(Debug, PartialEq, Eq)]
enum BatchEnd {
    /// Every leased entry was published; `full` when the batch was as large as allowed, so more
    /// may be waiting.
    Relayed { full: bool },
    /// The store or the bus failed: the rest waits for the next wake-up or tick.
    Stalled,
}

impl Relay {
    /// Relays on every wake-up and every poll tick until `stop` fires, then relays one last
    /// batch (the orders the draining consumer just recorded) within the drain deadline.
    pub(crate) async fn run(self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.outbox_poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(self.settings.outbox_prune_interval);
        prune.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut measure = tokio::time::interval(BACKLOG_POLL);
        measure.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = wake.notified() => {},
                _ = tick.tick() => {},
                _ = prune.tick() => {
                    self.prune().await;
                    continue;
                }
                _ = measure.tick() => {
                    self.measure_backlog().await;
                    continue;
                }
            }
            while self.relay_batch().await == (BatchEnd::Relayed { full: true }) {
                if stop.is_cancelled() {
                    break;
                }
            }
        }
        if tokio::time::timeout(self.settings.drain_deadline, self.relay_batch())
            .await
            .is_err()
        {
            tracing::warn!(
                "the outbox relay's last batch did not finish within the drain deadline"
            );
        }
        tracing::info!("outbox relay stopped");
    }

    /// Deletes published entries past their retention, a batch at a time, until none is left;
    /// a failure waits for the next prune tick. Several replicas may prune at once: each row goes
    /// once.
    async fn prune(&self) {
        let mut total = 0;
        loop {
            match self
                .outbox
                .prune_published(self.settings.outbox_retention, PRUNE_BATCH)
                .await
            {
                Ok(n) => {
                    total += n;
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %Report(&e), "pruning published outbox entries failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                pruned = total,
                "deleted published outbox entries past retention"
            );
        }
    }

    /// Relays one leased batch: COMPLETED recorded in the workflow state for each entry, what the
    /// batch's orders granted read in one query, each entry's events published, and every
    /// published entry completed in one transaction. Entries are independent orders, so their
    /// Redis writes and publishes run concurrently: one at a time, each waiting on a round trip,
    /// would cap the relay at a few hundred a second.
    async fn relay_batch(&self) -> BatchEnd {
        let limit = self.settings.outbox_batch_size;
        let entries = match self
            .outbox
            .lease_pending(limit, self.settings.outbox_lease)
            .await
        {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %Report(&e), "leasing outbox entries failed");
                return BatchEnd::Stalled;
            }
        };
        let leased = entries.len();
        let full = i64::try_from(leased).is_ok_and(|n| n >= limit);
        if leased == 0 {
            return BatchEnd::Relayed { full };
        }

        let advanced: Vec<OutboxEntry> = futures::stream::iter(entries)
            .map(|entry| async move {
                let advanced = self.advance(&entry).instrument(span(&entry)).await;
                advanced.then_some(entry)
            })
            .buffer_unordered(RELAY_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        // What the orders granted goes out with them, from the same outbox rows: a row is
        // completed only once both its events are published, so neither is lost.
        let order_ids: Vec<OrderId> = advanced.iter().map(|e| e.order_id).collect();
        let mut granted = match self.outbox.entitlements_granted(&order_ids).await {
            Ok(granted) => granted,
            Err(e) => {
                tracing::warn!(error = %Report(&e), "reading what the orders granted failed; will retry");
                return BatchEnd::Stalled;
            }
        };
        let published: Vec<OutboxEntry> = futures::stream::iter(advanced)
            .map(|entry| {
                let grants = granted.remove(&entry.order_id).unwrap_or_default();
                async move {
                    let published = self.publish(&entry, &grants).instrument(span(&entry)).await;
                    published.then_some(entry)
                }
            })
            .buffer_unordered(RELAY_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        if let Err(e) = self.outbox.complete(&published).await {
            // Published but not marked: republished after the lease, and the broker drops the
            // copies.
            tracing::warn!(error = %Report(&e), entries = published.len(), "completing outbox entries failed; will retry");
            return BatchEnd::Stalled;
        }
        for entry in &published {
            span(entry).in_scope(|| tracing::info!("order completed"));
            metrics::ORDERS_COMPLETED.get_or_create(&Vec::new()).inc();
            if let Some(accepted_at) = entry.accepted_at {
                let took = (Utc::now() - accepted_at).to_std().unwrap_or_default();
                metrics::ORDER_COMPLETION
                    .get_or_create(&Vec::new())
                    .observe(took.as_secs_f64());
            }
        }
        if published.len() < leased {
            // Entries that failed keep their lease until it expires; then any relay retries.
            return BatchEnd::Stalled;
        }
        BatchEnd::Relayed { full }
    }

    /// Moves the status to COMPLETED before anything announces it: once `orders.processed` is
    /// out, a watch opened at any moment must find COMPLETED either in its snapshot or on its live
    /// stream, never PROCESSING and then silence. False when the workflow state failed, so the
    /// entry is retried after its lease. A replay is harmless: the status only moves forward.
    async fn advance(&self, entry: &OutboxEntry) -> bool {
        match self
            .state
            .advance(
                entry.correlation_id,
                OrderStatus::Completed,
                Some(entry.order_id),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %Report(&e), "recording COMPLETED in workflow state failed; will retry");
                false
            }
        }
    }

    /// Publishes the entry's `orders.processed` and what its order granted on
    /// `orders.entitlements`. False when the bus failed, so the entry is retried after its lease;
    /// the broker drops a second copy within its window.
    async fn publish(&self, entry: &OutboxEntry, granted: &[Entitlement]) -> bool {
        let processed = Envelope {
            topic: Topic::OrderProcessed,
            message_id: event::processed_message_id(entry.correlation_id),
            payload: entry.payload.clone().into(),
        };
        if let Err(e) = self.bus.publish(processed).await {
            tracing::warn!(error = %Report(&e), "publishing orders.processed failed; will retry");
            return false;
        }
        let entitlements = Envelope {
            topic: Topic::EntitlementsGranted,
            message_id: event::entitlements_message_id(entry.correlation_id),
            payload: event::entitlements_granted(entry.correlation_id, entry.order_id, granted)
                .into(),
        };
        if let Err(e) = self.bus.publish(entitlements).await {
            tracing::warn!(error = %Report(&e), "publishing orders.entitlements failed; will retry");
            return false;
        }
        true
    }

    /// Reads the outbox backlog into its gauges; a failure leaves the last reading.
    async fn measure_backlog(&self) {
        match self.outbox.backlog().await {
            Ok(backlog) => {
                metrics::OUTBOX_BACKLOG
                    .get_or_create(&Vec::new())
                    .set(i64::try_from(backlog.pending).unwrap_or(i64::MAX));
                let age = backlog.oldest.map_or(0.0, |oldest| {
                    (Utc::now() - oldest)
                        .to_std()
                        .unwrap_or_default()
                        .as_secs_f64()
                });
                metrics::OUTBOX_OLDEST_AGE.set(age);
            }
            Err(e) => tracing::debug!(error = %Report(&e), "measuring the outbox backlog failed"),
        }
    }
}

/// The span of one entry's work, so its log lines carry the order: it continues the order's
/// trace from the span that recorded it.
fn span(entry: &OutboxEntry) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox",
        correlation_id = %entry.correlation_id,
        order_id = %entry.order_id,
        outbox_id = entry.id,
        trace_id = tracing::field::Empty,
    );
    let parent = match &entry.traceparent {
        Some(traceparent) => {
            Parent::remote(|name| (name == "traceparent").then_some(traceparent.as_str()))
        }
        None => Parent::current(),
    };
    parent
        .with_correlation_id(&entry.correlation_id.to_string())
        .adopt(&span);
    contoso_platform::telemetry::record_trace_id(&span);
    span
}
