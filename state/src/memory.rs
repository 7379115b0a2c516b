//! In-memory [`WorkflowState`] for `contoso dev` and tests: the same semantics as the Redis
//! adapter (TTLs, forward-only statuses, in-flight orders, idempotency claims), in one process.
//!
//! Expired entries are invisible at once and swept out on a later write, so memory stays bounded
//! by what was written within roughly one TTL. Time is `tokio::time`, so tests can pause it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use crate::{
    DEFAULT_IDEMPOTENCY_TTL, IdempotencyClaim, InflightOrder, IntakeState, StateError,
    StatusReader, StatusRecord, StatusWriter, WorkflowState,
};
use contoso_domain::{CorrelationId, OrderId, OrderStatus, UserId};

/// How long a claimed idempotency key stays in flight when neither completed nor released (the
/// claimer crashed), capped at the idempotency TTL. Long enough for any intake request to finish.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(120);

/// Full sweeps run at most this often, however short the TTL.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// ...and at least this often, however long the TTL.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Workflow state held in this process. Clones share the same state.
#[derive(Debug, Clone)]
pub struct MemoryState {
    ttl: Duration,
    idempotency_ttl: Duration,
    claim_ttl: Duration,
    inner: Arc<Mutex<Tables>>,
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

#[derive(Debug)]
enum Idempotency {
    Pending,
    Done(Vec<u8>),
}

/// The map and the status expire independently, as the two Redis keys do; each in-flight entry
/// expires a TTL after it was written, as the Redis adapter's entries do.
#[derive(Debug)]
struct Tables {
    owners: HashMap<CorrelationId, Expiring<UserId>>,
    statuses: HashMap<CorrelationId, Expiring<StatusRecord>>,
    inflight: HashMap<UserId, HashMap<OrderId, Expiring<Vec<u8>>>>,
    idempotency: HashMap<(UserId, String), Expiring<Idempotency>>,
    next_sweep: Instant,
}

impl Tables {
    /// Writes the owner map of `cid` unless a live one is there (`SET NX`).
    fn set_owner_unless_live(
        &mut self,
        cid: CorrelationId,
        owner: &UserId,
        now: Instant,
        expires_at: Instant,
    ) {
        if !self.owners.get(&cid).is_some_and(|e| e.live(now)) {
            self.owners.insert(
                cid,
                Expiring {
                    value: owner.clone(),
                    expires_at,
                },
            );
        }
    }

    fn live_status(&self, cid: &CorrelationId, now: Instant) -> Option<&StatusRecord> {
        self.statuses
            .get(cid)
            .filter(|e| e.live(now))
            .map(|e| &e.value)
    }

    fn sweep_if_due(&mut self, now: Instant, interval: Duration) {
        if now < self.next_sweep {
            return;
        }
        self.owners.retain(|_, e| e.live(now));
        self.statuses.retain(|_, e| e.live(now));
        self.idempotency.retain(|_, e| e.live(now));
        self.inflight.retain(|_, orders| {
            orders.retain(|_, e| e.live(now));
            !orders.is_empty()
        });
        self.next_sweep = now + interval;
    }
}

impl MemoryState {
    /// State whose workflow entries expire `ttl` after they were written or last advanced, and
    /// whose completed idempotency keys live for [`DEFAULT_IDEMPOTENCY_TTL`]. A zero TTL is
    /// raised to one millisecond, as Redis would refuse it.
    pub fn new(ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            ttl,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            claim_ttl: DEFAULT_CLAIM_TTL.min(DEFAULT_IDEMPOTENCY_TTL),
            inner: Arc::new(Mutex::new(Tables {
                owners: HashMap::new(),
                statuses: HashMap::new(),
                inflight: HashMap::new(),
                idempotency: HashMap::new(),
                next_sweep: Instant::now() + sweep_interval(ttl),
            })),
        }
    }

    /// Overrides how long a completed idempotency key answers retries (default
    /// [`DEFAULT_IDEMPOTENCY_TTL`], at least one millisecond). The claim TTL is lowered to it if
    /// longer.
    pub fn with_idempotency_ttl(mut self, idempotency_ttl: Duration) -> Self {
        self.idempotency_ttl = idempotency_ttl.max(Duration::from_millis(1));
        self.claim_ttl = self.claim_ttl.min(self.idempotency_ttl);
        self
    }

    /// Overrides how long an unfinished idempotency claim blocks retries (default
    /// [`DEFAULT_CLAIM_TTL`], never more than the idempotency TTL).
    pub fn with_claim_ttl(mut self, claim_ttl: Duration) -> Self {
        self.claim_ttl = claim_ttl.clamp(Duration::from_millis(1), self.idempotency_ttl);
        self
    }

    /// Every critical section leaves the tables consistent, so a panic elsewhere while holding
    /// the lock does not make them unusable.
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks for a write, first sweeping expired entries when a sweep is due.
    fn tables_for_write(&self, now: Instant) -> MutexGuard<'_, Tables> {
        let mut tables = self.tables();
        tables.sweep_if_due(now, sweep_interval(self.ttl));
        tables
    }

    /// Entries held (owner maps, statuses, idempotency keys), expired ones not yet swept included.
    /// In-flight orders are counted by [`MemoryState::inflight_count`].
    pub fn entry_count(&self) -> usize {
        let tables = self.tables();
        tables.owners.len() + tables.statuses.len() + tables.idempotency.len()
    }

    /// In-flight order snapshots held, of every user, expired ones not yet swept included.
    pub fn inflight_count(&self) -> usize {
        self.tables().inflight.values().map(HashMap::len).sum()
    }
}

fn sweep_interval(ttl: Duration) -> Duration {
    ttl.clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
}

fn idempotency_key(user: &UserId, key: &str) -> (UserId, String) {
    (user.clone(), key.to_owned())
}

fn remove_inflight(tables: &mut Tables, user: &UserId, order_ids: &[OrderId]) {
    if let Some(mine) = tables.inflight.get_mut(user) {
        for order_id in order_ids {
            mine.remove(order_id);
        }
        if mine.is_empty() {
            tables.inflight.remove(user);
        }
    }
}

#[async_trait]
impl StatusReader for MemoryState {
    async fn owner(&self, cid: CorrelationId) -> Result<Option<UserId>, StateError> {
        let now = Instant::now();
        Ok(self
            .tables()
            .owners
            .get(&cid)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone()))
    }

    async fn status(&self, cid: CorrelationId) -> Result<Option<StatusRecord>, StateError> {
        let now = Instant::now();
        Ok(self.tables().live_status(&cid, now).cloned())
    }
}

#[async_trait]
impl StatusWriter for MemoryState {
    async fn advance(
        &self,
        cid: CorrelationId,
        status: OrderStatus,
        order_id: Option<OrderId>,
    ) -> Result<bool, StateError> {
        let now = Instant::now();
        let expires_at = now + self.ttl;
        let mut tables = self.tables_for_write(now);
        let current = tables.live_status(&cid, now);
        if current.is_some_and(|record| !record.status.can_advance_to(status)) {
            return Ok(false);
        }
        let record = StatusRecord {
            status,
            order_id: order_id.or(current.and_then(|record| record.order_id)),
            updated_at: Utc::now(),
        };
        tables.statuses.insert(
            cid,
            Expiring {
                value: record,
                expires_at,
            },
        );
        // Like PEXPIRE on a missing key: an expired map is not brought back.
        if let Some(owner) = tables.owners.get_mut(&cid).filter(|e| e.live(now)) {
            owner.expires_at = expires_at;
        }
        Ok(true)
    }

    async fn restore_owner(&self, cid: CorrelationId, owner: &UserId) -> Result<(), StateError> {
        let now = Instant::now();
        self.tables_for_write(now)
            .set_owner_unless_live(cid, owner, now, now + self.ttl);
        Ok(())
    }
}

#[async_trait]
impl IntakeState for MemoryState {
    async fn record_accepted(
        &self,
        cid: CorrelationId,
        owner: &UserId,
        order_id: OrderId,
        snapshot: &[u8],
    ) -> Result<usize, StateError> {
        let now = Instant::now();
        let expires_at = now + self.ttl;
        let mut tables = self.tables_for_write(now);
        // Like the Redis script: only what is missing (or expired) is written, so a replay never
        // moves a status back nor extends what is there.
        tables.set_owner_unless_live(cid, owner, now, expires_at);
        match tables.statuses.get_mut(&cid).filter(|e| e.live(now)) {
            Some(current) => {
                current.value.order_id.get_or_insert(order_id);
            }
            None => {
                tables.statuses.insert(
                    cid,
                    Expiring {
                        value: StatusRecord {
                            status: OrderStatus::Accepted,
                            order_id: Some(order_id),
                            updated_at: Utc::now(),
                        },
                        expires_at,
                    },
                );
            }
        }
        let mine = tables.inflight.entry(owner.clone()).or_default();
        if !mine.get(&order_id).is_some_and(|e| e.live(now)) {
            mine.insert(
                order_id,
                Expiring {
                    value: snapshot.to_vec(),
                    expires_at,
                },
            );
        }
        Ok(mine.len())
    }

    async fn inflight_orders(&self, user: &UserId) -> Result<Vec<InflightOrder>, StateError> {
        let now = Instant::now();
        let mut tables = self.tables();
        let Some(mine) = tables.inflight.get_mut(user) else {
            return Ok(Vec::new());
        };
        // Like the Redis adapter, expired entries are removed as they are found.
        mine.retain(|_, e| e.live(now));
        let mut orders: Vec<InflightOrder> = mine
            .iter()
            .map(|(order_id, e)| InflightOrder {
                order_id: *order_id,
                snapshot: e.value.clone(),
            })
            .collect();
        if mine.is_empty() {
            tables.inflight.remove(user);
        }
        orders.sort_by_key(|o| o.order_id);
        Ok(orders)
    }

    async fn inflight_order(
        &self,
        user: &UserId,
        order_id: OrderId,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        Ok(self
            .tables()
            .inflight
            .get(user)
            .and_then(|mine| mine.get(&order_id))
            .filter(|e| e.live(now))
            .map(|e| e.value.clone()))
    }

    async fn drop_inflight(&self, user: &UserId, order_ids: &[OrderId]) -> Result<(), StateError> {
        remove_inflight(&mut self.tables(), user, order_ids);
        Ok(())
    }

    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<IdempotencyClaim, StateError> {
        let now = Instant::now();
        let mut tables = self.tables_for_write(now);
        let slot = idempotency_key(user, key);
        match tables.idempotency.get(&slot).filter(|e| e.live(now)) {
            Some(Expiring {
                value: Idempotency::Pending,
                ..
            }) => Ok(IdempotencyClaim::InFlight),
            Some(Expiring {
                value: Idempotency::Done(result),
                ..
            }) => Ok(IdempotencyClaim::Completed(result.clone())),
            None => {
                tables.idempotency.insert(
                    slot,
                    Expiring {
                        value: Idempotency::Pending,
                        expires_at: now + self.claim_ttl,
                    },
                );
                Ok(IdempotencyClaim::Claimed)
            }
        }
    }

    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let mut tables = self.tables_for_write(now);
        let slot = idempotency_key(user, key);
        if let Some(Expiring {
            value: Idempotency::Done(held),
            ..
        }) = tables.idempotency.get(&slot).filter(|e| e.live(now))
        {
            return Ok(Some(held.clone()));
        }
        // The result is kept for the idempotency TTL from now, however long the claim took.
        tables.idempotency.insert(
            slot,
            Expiring {
                value: Idempotency::Done(result.to_vec()),
                expires_at: now + self.idempotency_ttl,
            },
        );
        Ok(None)
    }

    async fn replace_idempotency_result(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let mut tables = self.tables_for_write(now);
        if let Some(entry) = tables
            .idempotency
            .get_mut(&idempotency_key(user, key))
            .filter(|e| e.live(now) && matches!(e.value, Idempotency::Done(_)))
        {
            *entry = Expiring {
                value: Idempotency::Done(result.to_vec()),
                expires_at: now + self.idempotency_ttl,
            };
        }
        Ok(())
    }

    async fn release_idempotency_key(&self, user: &UserId, key: &str) -> Result<(), StateError> {
        let now = Instant::now();
        let mut tables = self.tables();
        let slot = idempotency_key(user, key);
        let pending = tables
            .idempotency
            .get(&slot)
            .is_some_and(|e| e.live(now) && matches!(e.value, Idempotency::Pending));
        if pending {
            tables.idempotency.remove(&slot);
        }
        Ok(())
    }
}

#[async_trait]
impl WorkflowState for MemoryState {
    async fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn order(n: i64) -> OrderId {
        OrderId::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn owner_and_status_disappear_when_the_ttl_passes() {
        let state = MemoryState::new(TTL);
        let cid = CorrelationId::new();
        state
            .record_accepted(cid, &alice(), order(1), b"snapshot")
            .await
            .unwrap();

        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(state.owner(cid).await.unwrap(), Some(alice()));
        assert!(state.status(cid).await.unwrap().is_some());

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(state.owner(cid).await.unwrap(), None);
        assert_eq!(state.status(cid).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn advance_refreshes_the_ttl_of_map_and_status() {
        let state = MemoryState::new(TTL);
        let cid = CorrelationId::new();
        state
            .record_accepted(cid, &alice(), order(1), b"snapshot")
            .await
            .unwrap();

        tokio::time::advance(TTL / 2).await;
        assert!(
            state
                .advance(cid, OrderStatus::Processing, None)
                .await
                .unwrap()
        );
        tokio::time::advance(TTL / 2 + Duration::from_secs(1)).await;

        assert_eq!(state.owner(cid).await.unwrap(), Some(alice()));
        let record = state.status(cid).await.unwrap().unwrap();
        assert_eq!(record.status, OrderStatus::Processing);
        assert_eq!(
            record.order_id,
            Some(order(1)),
            "advance without an id keeps the known one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn advance_recreates_an_expired_status_but_not_the_map() {
        let state = MemoryState::new(TTL);
        let cid = CorrelationId::new();
        state
            .record_accepted(cid, &alice(), order(1), b"snapshot")
            .await
            .unwrap();
        tokio::time::advance(TTL * 2).await;

        assert!(
            state
                .advance(cid, OrderStatus::Accepted, None)
                .await
                .unwrap()
        );
        let record = state.status(cid).await.unwrap().unwrap();
        assert_eq!(record.status, OrderStatus::Accepted);
        assert_eq!(record.order_id, None);
        assert_eq!(state.owner(cid).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_on_a_later_write() {
        let state = MemoryState::new(TTL);
        for n in 1..=10 {
            state
                .record_accepted(CorrelationId::new(), &alice(), order(n), b"snapshot")
                .await
                .unwrap();
            state
                .claim_idempotency_key(&alice(), &format!("k{n}"))
                .await
                .unwrap();
        }
        assert_eq!(state.entry_count(), 30);

        tokio::time::advance(TTL + sweep_interval(TTL)).await;
        state
            .record_accepted(CorrelationId::new(), &alice(), order(11), b"snapshot")
            .await
            .unwrap();
        assert_eq!(state.entry_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_claim_expires_after_the_claim_ttl() {
        let state = MemoryState::new(TTL).with_claim_ttl(Duration::from_secs(5));
        let user = alice();
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Claimed
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::InFlight
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Claimed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_key_is_kept_for_the_ttl_then_forgotten() {
        let state = MemoryState::new(TTL)
            .with_idempotency_ttl(TTL)
            .with_claim_ttl(Duration::from_secs(5));
        let user = alice();
        state.claim_idempotency_key(&user, "k").await.unwrap();
        state
            .complete_idempotency_key(&user, "k", b"done")
            .await
            .unwrap();

        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Completed(b"done".to_vec())
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Claimed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn completed_keys_live_for_the_idempotency_ttl_not_the_workflow_ttl() {
        let state = MemoryState::new(TTL);
        let user = alice();
        state.claim_idempotency_key(&user, "k").await.unwrap();
        state
            .complete_idempotency_key(&user, "k", b"done")
            .await
            .unwrap();

        tokio::time::advance(TTL * 10).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Completed(b"done".to_vec()),
            "the default idempotency TTL is a day, far beyond the workflow TTL"
        );
        tokio::time::advance(DEFAULT_IDEMPOTENCY_TTL - TTL * 10).await;
        assert_eq!(
            state.claim_idempotency_key(&user, "k").await.unwrap(),
            IdempotencyClaim::Claimed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_inflight_entries_are_swept_on_a_later_write() {
        let state = MemoryState::new(TTL);
        for n in 1..=5 {
            state
                .record_accepted(CorrelationId::new(), &alice(), order(n), b"o")
                .await
                .unwrap();
        }
        assert_eq!(state.inflight_count(), 5);

        tokio::time::advance(TTL + sweep_interval(TTL)).await;
        let count = state
            .record_accepted(CorrelationId::new(), &alice(), order(6), b"o")
            .await
            .unwrap();
        assert_eq!((count, state.inflight_count()), (1, 1));
    }
}
