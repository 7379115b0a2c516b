//! Caps how many streams one user may hold open on this instance, so one client (or a leaked
//! tab loop) cannot pin unbounded tasks and subscriptions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use contoso_domain::UserId;

type OpenStreams = Arc<Mutex<HashMap<UserId, usize>>>;

#[derive(Debug, Clone)]
pub(crate) struct StreamLimiter {
    max_per_user: usize,
    open: OpenStreams,
}

/// One open stream. Dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    user: UserId,
    open: OpenStreams,
}

/// Each critical section leaves the map consistent, so a poisoned lock is still usable.
fn lock(open: &OpenStreams) -> MutexGuard<'_, HashMap<UserId, usize>> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StreamLimiter {
    pub(crate) fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user,
            open: OpenStreams::default(),
        }
    }

    /// A permit, or `None` when `user` already holds the maximum.
    pub(crate) fn try_acquire(&self, user: &UserId) -> Option<StreamPermit> {
        let mut open = lock(&self.open);
        let count = open.entry(user.clone()).or_default();
        if *count >= self.max_per_user {
            return None;
        }
        *count += 1;
        Some(StreamPermit {
            user: user.clone(),
            open: self.open.clone(),
        })
    }

    #[cfg(test)]
    pub(crate) fn open_for(&self, user: &UserId) -> usize {
        lock(&self.open).get(user).copied().unwrap_or(0)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            // Users come and go; keep only those with streams open.
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn a_user_gets_at_most_the_limit_and_others_are_unaffected() {
        let limiter = StreamLimiter::new(2);
        let alice = user("alice");
        let first = limiter.try_acquire(&alice);
        let second = limiter.try_acquire(&alice);
        assert!(first.is_some() && second.is_some());
        assert!(limiter.try_acquire(&alice).is_none());
        assert!(limiter.try_acquire(&user("bob")).is_some());
    }

    #[test]
    fn dropping_a_permit_frees_its_slot_and_forgets_idle_users() {
        let limiter = StreamLimiter::new(1);
        let alice = user("alice");
        let permit = limiter.try_acquire(&alice);
        assert!(limiter.try_acquire(&alice).is_none());
        drop(permit);
        assert_eq!(limiter.open_for(&alice), 0);
        assert!(lock(&limiter.open).is_empty());
        assert!(limiter.try_acquire(&alice).is_some());
    }
}
