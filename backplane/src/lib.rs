//! The status backplane: a status update published for a user reaches every notify-svc instance
//! that has a stream of that user open. In-memory for one process, Redis pub/sub across replicas.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use async_trait::async_trait;
use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use contoso_domain::{Cause, StatusUpdate, UserId};

pub mod memory;
pub mod redis;

pub use self::memory::MemoryBackplane;
pub use self::redis::RedisBackplane;

/// Updates for one user, until the stream is dropped. A subscriber that falls too far behind (more
/// than the per-user buffer) sees the stream end rather than silently skip updates: the caller
/// treats it as a lost subscription (notify-svc ends the watch with UNAVAILABLE and the client
/// takes a fresh snapshot), and publishers are never held back.
pub type UpdateStream = BoxStream<'static, StatusUpdate>;

/// Why the backplane could not publish or subscribe.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The backing service cannot be reached right now.
    #[error("backplane unavailable while {context}")]
    Unavailable {
        /// What the backplane was doing, e.g. `publishing a status update`.
        context: String,
        #[source]
        source: Cause,
    },
}

impl BackplaneError {
    /// [`BackplaneError::Unavailable`] while doing `context`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Fans status updates out to the streams of one user, across every process that has one open.
#[async_trait]
pub trait Backplane: Send + Sync + fmt::Debug {
    /// Sends `update` to every instance subscribed to `user`.
    async fn publish(&self, user: &UserId, update: &StatusUpdate) -> Result<(), BackplaneError>;

    /// Receives every update published for `user` from now on. The subscription is in place
    /// when this returns.
    async fn subscribe(&self, user: &UserId) -> Result<UpdateStream, BackplaneError>;

    /// True while the backplane is reachable (for `/readyz`).
    async fn is_ready(&self) -> bool;
}

/// Updates one process buffers per user before a slow stream is ended.
pub(crate) const USER_CHANNEL_CAPACITY: usize = 256;

/// Wraps one user's broadcast receiver as an [`UpdateStream`]. A lagging stream ends (with a
/// warning) instead of holding publishers back or skipping what it missed. `on_drop` is dropped right after
/// the receiver, so an adapter can count the receivers left and clean up that user's channel.
pub(crate) fn update_stream<G>(rx: broadcast::Receiver<StatusUpdate>, on_drop: G) -> UpdateStream
where
    G: Send + Unpin + 'static,
{
    Guarded {
        updates: Some(BroadcastStream::new(rx)),
        _on_drop: on_drop,
    }
    .boxed()
}

struct Guarded<G> {
    updates: Option<BroadcastStream<StatusUpdate>>,
    _on_drop: G,
}

impl<G: Unpin> Stream for Guarded<G> {
    type Item = StatusUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StatusUpdate>> {
        let Some(updates) = self.updates.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(updates.poll_next_unpin(cx)) {
            Some(Ok(update)) => Poll::Ready(Some(update)),
            Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                tracing::warn!(
                    missed,
                    "a status stream fell behind; ending it so its client takes a fresh snapshot"
                );
                self.updates = None;
                Poll::Ready(None)
            }
            None => Poll::Ready(None),
        }
    }
}

impl<G> Drop for Guarded<G> {
    fn drop(&mut self) {
        // The receiver must be gone before the guard runs, or the guard would still count it.
        self.updates = None;
    }
}
