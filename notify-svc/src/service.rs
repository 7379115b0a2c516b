//! `contoso.notify.v1.OrderStatusService`: parses the request, takes a stream slot, subscribes
//! to the caller's updates, reads the snapshot, and hands the rest to a per-stream task.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use contoso_backplane::Backplane;
use contoso_domain::{CorrelationId, StatusUpdate, UserId};
use contoso_platform::auth;
use contoso_proto::notify::v1::{
    WatchOrderStatusRequest, order_status_service_server::OrderStatusService,
};
use contoso_state::{StateError, StatusReader};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    Settings,
    error::WatchError,
    limits::StreamLimiter,
    watch::{self, Item, Watch},
};

/// Owner and status lookups in flight at once while building one snapshot.
const SNAPSHOT_CONCURRENCY: usize = 8;

#[derive(Debug)]
pub(crate) struct WatchService {
    state: Arc<dyn StatusReader>,
    backplane: Arc<dyn Backplane>,
    limiter: StreamLimiter,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
    next_stream: AtomicU64,
}

impl WatchService {
    pub(crate) fn new(
        state: Arc<dyn StatusReader>,
        backplane: Arc<dyn Backplane>,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state,
            backplane,
            limiter: StreamLimiter::new(settings.max_streams_per_user),
            settings,
            shutdown,
            next_stream: AtomicU64::new(1),
        }
    }

    async fn open(&self, user: &UserId, cids: &[CorrelationId]) -> Result<Watch, WatchError> {
        let permit = self
            .limiter
            .try_acquire(user)
            .ok_or(WatchError::TooManyStreams {
                max: self.settings.max_streams_per_user,
            })?;
        // Subscribe before reading the snapshot: an update landing in between is then queued on
        // the subscription instead of lost, and the forward-only filter drops it if the snapshot
        // already covered it.
        let updates = self.backplane.subscribe(user).await?;
        let snapshot = self.snapshot(user, cids).await?;
        Ok(Watch {
            snapshot,
            updates,
            permit,
        })
    }

    /// The current status of each named order the caller owns. Unknown orders and other users'
    /// orders are skipped alike, so the answer never reveals that someone else's order exists.
    async fn snapshot(
        &self,
        user: &UserId,
        cids: &[CorrelationId],
    ) -> Result<Vec<StatusUpdate>, StateError> {
        let found: Vec<Option<StatusUpdate>> = futures::stream::iter(cids.iter().copied())
            .map(|cid| self.owned_status(user, cid))
            .buffered(SNAPSHOT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn owned_status(
        &self,
        user: &UserId,
        cid: CorrelationId,
    ) -> Result<Option<StatusUpdate>, StateError> {
        if self.state.owner(cid).await?.as_ref() != Some(user) {
            return Ok(None);
        }
        Ok(self.state.status(cid).await?.map(|record| StatusUpdate {
            correlation_id: cid,
            status: record.status,
            order_id: record.order_id,
            occurred_at: record.updated_at,
            reason: String::new(),
        }))
    }
}

/// Parses the named ids, dropping repeats; the error names the first bad one.
pub(crate) fn parse_correlation_ids(
    raw: &[String],
    max: usize,
) -> Result<Vec<CorrelationId>, WatchError> {
    if raw.len() > max {
        return Err(WatchError::TooManyIds { max });
    }
    let mut cids: Vec<CorrelationId> = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let cid = text
            .parse()
            .map_err(|_| WatchError::InvalidCorrelationId { index })?;
        if !cids.contains(&cid) {
            cids.push(cid);
        }
    }
    Ok(cids)
}

#[tonic::async_trait]
impl OrderStatusService for WatchService {
    type WatchOrderStatusStream = ReceiverStream<Item>;

    async fn watch_order_status(
        &self,
        request: Request<WatchOrderStatusRequest>,
    ) -> Result<Response<Self::WatchOrderStatusStream>, Status> {
        let user = auth::caller(&request)?;
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("watch_order_status", user = %user, stream_id);
        let cids = parse_correlation_ids(
            &request.get_ref().correlation_ids,
            self.settings.max_correlation_ids,
        )?;
        let watch = self.open(&user, &cids).instrument(span.clone()).await?;
        span.in_scope(|| {
            tracing::debug!(
                named = cids.len(),
                snapshot = watch.snapshot.len(),
                "stream opened"
            );
        });

        let (tx, rx) = mpsc::channel(self.settings.stream_buffer.max(1));
        tokio::spawn(
            watch::forward(watch, tx, self.settings.clone(), self.shutdown.clone())
                .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_parsed_and_repeats_dropped() {
        let cid = CorrelationId::new();
        let raw = vec![cid.to_string(), cid.to_string().to_uppercase()];
        assert_eq!(parse_correlation_ids(&raw, 100).ok(), Some(vec![cid]));
    }

    #[test]
    fn the_first_malformed_id_is_named_by_index() {
        let raw = vec![
            CorrelationId::new().to_string(),
            "nope".into(),
            "also-bad".into(),
        ];
        assert!(matches!(
            parse_correlation_ids(&raw, 100),
            Err(WatchError::InvalidCorrelationId { index: 1 })
        ));
    }

    #[test]
    fn more_ids_than_the_limit_are_refused() {
        let raw: Vec<String> = (0..3).map(|_| CorrelationId::new().to_string()).collect();
        assert!(matches!(
            parse_correlation_ids(&raw, 2),
            Err(WatchError::TooManyIds { max: 2 })
        ));
    }
}
