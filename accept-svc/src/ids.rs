//! Order ids by hi/lo: a background task reserves blocks from the orders sequence (one Postgres
//! round trip per block) and keeps a bounded buffer of ids ready, so intake never waits on
//! Postgres per order. Ids left in the buffer at shutdown are simply never used (gaps are fine).

use std::{sync::Arc, time::Duration};

use contoso_domain::{OrderId, Report};
use contoso_store::OrderIdSource;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// Hands out reserved order ids.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    ids: Arc<Mutex<mpsc::Receiver<OrderId>>>,
}

impl IdAllocator {
    /// Starts the reserving task; `buffer` ids are kept ready ahead of demand.
    pub fn spawn(
        source: Arc<dyn OrderIdSource>,
        buffer: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let block = tokio::select! {
                    block = source.reserve_block() => block,
                    () = shutdown.cancelled() => return,
                };
                match block {
                    Ok(block) => {
                        backoff = Duration::from_millis(100);
                        tracing::debug!(
                            start = block.start,
                            len = block.len,
                            "reserved order id block"
                        );
                        for raw in block.start..block.start + block.len {
                            let Some(id) = OrderId::new(raw) else {
                                continue;
                            };
                            // Blocks while the buffer is full: that is the prefetch bound.
                            if tx.send(id).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %Report(&e), retry_in = ?backoff, "reserving an order id block failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {},
                            () = shutdown.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Self {
            ids: Arc::new(Mutex::new(rx)),
        }
    }

    /// The next id, or `None` when none arrives within `wait` (the id source is down).
    pub async fn next(&self, wait: Duration) -> Option<OrderId> {
        tokio::time::timeout(wait, async { self.ids.lock().await.recv().await })
            .await
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contoso_store::MemoryStore;
    use std::collections::HashSet;

    #[tokio::test]
    async fn ids_are_unique_across_blocks_and_allocators() {
        let store: Arc<dyn OrderIdSource> = Arc::new(MemoryStore::new().unwrap());
        let shutdown = CancellationToken::new();
        let a = IdAllocator::spawn(store.clone(), 10, shutdown.clone());
        let b = IdAllocator::spawn(store, 10, shutdown.clone());
        let mut seen = HashSet::new();
        for _ in 0..250 {
            assert!(seen.insert(a.next(Duration::from_secs(5)).await.unwrap()));
            assert!(seen.insert(b.next(Duration::from_secs(5)).await.unwrap()));
        }
        shutdown.cancel();
    }
}
