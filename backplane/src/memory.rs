//! In-process [`Backplane`] for `contoso dev` and tests: one bounded broadcast channel per user
//! with open streams. A user's channel goes away with the last of their streams, so memory
//! follows the number of watched users, not the number of users ever seen.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{Backplane, BackplaneError, USER_CHANNEL_CAPACITY, UpdateStream, update_stream};
use contoso_domain::{StatusUpdate, UserId};

type Channels = Mutex<HashMap<UserId, broadcast::Sender<StatusUpdate>>>;

/// Status updates fanned out inside this process. Clones share the same channels.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackplane {
    channels: Arc<Channels>,
}

impl MemoryBackplane {
    /// An empty backplane.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many users have at least one open stream.
    pub fn watched_users(&self) -> usize {
        lock(&self.channels).len()
    }

    /// True while `user` has at least one open stream.
    pub fn is_watched(&self, user: &UserId) -> bool {
        lock(&self.channels).contains_key(user)
    }
}

/// Every critical section leaves the map consistent, so a poisoned lock is still usable.
fn lock(channels: &Channels) -> MutexGuard<'_, HashMap<UserId, broadcast::Sender<StatusUpdate>>> {
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops a user's channel once their last stream is gone. Weak, so streams that outlive the
/// backplane do not keep its map alive.
struct Unwatch {
    channels: Weak<Channels>,
    user: UserId,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let Some(channels) = self.channels.upgrade() else {
            return;
        };
        let mut channels = lock(&channels);
        // A subscribe that raced in under the lock has already added its receiver.
        if channels
            .get(&self.user)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.user);
        }
    }
}

#[async_trait]
impl Backplane for MemoryBackplane {
    async fn publish(&self, user: &UserId, update: &StatusUpdate) -> Result<(), BackplaneError> {
        if let Some(tx) = lock(&self.channels).get(user) {
            // Fails only when no stream is left; the last stream's guard removes the channel.
            let _ = tx.send(update.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, user: &UserId) -> Result<UpdateStream, BackplaneError> {
        let rx = lock(&self.channels)
            .entry(user.clone())
            .or_insert_with(|| broadcast::channel(USER_CHANNEL_CAPACITY).0)
            .subscribe();
        let unwatch = Unwatch {
            channels: Arc::downgrade(&self.channels),
            user: user.clone(),
        };
        Ok(update_stream(rx, unwatch))
    }

    async fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use futures::StreamExt;

    use super::*;
    use contoso_domain::{CorrelationId, OrderStatus};

    fn update(status: OrderStatus) -> StatusUpdate {
        StatusUpdate {
            correlation_id: CorrelationId::new(),
            status,
            order_id: None,
            occurred_at: Utc::now(),
            reason: String::new(),
        }
    }

    #[tokio::test]
    async fn a_users_channel_goes_away_with_their_last_stream() {
        let backplane = MemoryBackplane::new();
        let alice = UserId::parse("alice").unwrap();
        let first = backplane.subscribe(&alice).await.unwrap();
        let second = backplane.subscribe(&alice).await.unwrap();
        assert_eq!(backplane.watched_users(), 1);

        drop(first);
        assert_eq!(backplane.watched_users(), 1);
        drop(second);
        assert_eq!(backplane.watched_users(), 0);

        backplane
            .publish(&alice, &update(OrderStatus::Accepted))
            .await
            .unwrap();
        assert_eq!(backplane.watched_users(), 0, "publishing creates nothing");
    }

    #[tokio::test]
    async fn a_lagging_stream_ends_instead_of_skipping_and_publishers_never_block() {
        let backplane = MemoryBackplane::new();
        let alice = UserId::parse("alice").unwrap();
        let mut stream = backplane.subscribe(&alice).await.unwrap();

        // More than the buffer holds, with nobody reading: every publish still returns at once.
        let total = USER_CHANNEL_CAPACITY + 10;
        for _ in 0..total {
            backplane
                .publish(&alice, &update(OrderStatus::Processing))
                .await
                .unwrap();
        }

        // The stream cannot say what it missed, so it ends (notify-svc then ends the watch with
        // UNAVAILABLE and the client takes a fresh snapshot) rather than skip silently.
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap();
        assert_eq!(next, None, "a lagging stream must end, not skip");
    }
}
