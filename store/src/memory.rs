//! The in-memory store behind `contoso dev` and fast tests. It keeps the Postgres store's
//! semantics (hi/lo id blocks, idempotent recording, the same constraint names in its errors,
//! leased outbox entries, soft delete) so code tested against it behaves the same in production;
//! `tests/postgres.rs` runs one contract against both to keep it that way.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use contoso_domain::{
    CorrelationId, Entitlement, EntitlementId, Held, NewOrder, OrderId, OrderRecord, OrderStatus,
    Product, SeatAssignment, SeatRefusal, UserId, grant, sort_for_listing,
};

use crate::{
    Backlog, CatalogSource, Clock, Entitlements, IdBlock, MAX_BATCH, ORDER_ID_BLOCK_SIZE,
    OrderIdSource, OrderReader, OrderWriter, Outbox, OutboxEntry, PROCESSED_EVENT_KIND, Page,
    RecordOutcome, SeatError, Snapshot, StoreError, SystemClock, catalog, clock,
};

/// How many orders a [`MemoryStore`] holds before it refuses new ones, so a long `contoso dev`
/// session or a benchmark cannot grow the process without bound.
pub const DEFAULT_MAX_ORDERS: usize = 100_000;

/// A [`Store`](crate::Store) held in process memory. Clones share the same data, the way two
/// replicas share one database.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// The time entitlements are granted and checked by.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("products", &state.products.len())
            .field("orders", &state.orders.len())
            .field("pending_outbox", &state.outbox.len())
            .field("entitlements", &state.entitlements.len())
            .finish()
    }
}

#[derive(Debug)]
struct State {
    products: BTreeMap<String, Product>,
    next_block_start: i64,
    orders: BTreeMap<OrderId, OrderRecord>,
    by_correlation: HashMap<CorrelationId, OrderId>,
    /// Unpublished entries only: a published entry has nothing left to do in memory.
    outbox: BTreeMap<i64, PendingEntry>,
    next_outbox_id: i64,
    max_orders: usize,
    /// Every entitlement with its assignments (oldest first), as Postgres would load it.
    entitlements: BTreeMap<EntitlementId, Entitlement>,
    next_entitlement_id: i64,
}

#[derive(Debug)]
struct PendingEntry {
    entry: OutboxEntry,
    leased_until: Option<Instant>,
}

impl MemoryStore {
    /// A store serving the catalog from `products.json`, with no orders.
    pub fn new() -> Result<Self, StoreError> {
        Self::with_products(catalog::products()?)
    }

    /// A store serving `products` (checked with [`catalog::validate`]), with no orders.
    pub fn with_products(products: Vec<Product>) -> Result<Self, StoreError> {
        catalog::validate(&products)?;
        let products = products.into_iter().map(|p| (p.id.clone(), p)).collect();
        Ok(Self {
            state: Arc::new(Mutex::new(State {
                products,
                next_block_start: 1,
                orders: BTreeMap::new(),
                by_correlation: HashMap::new(),
                outbox: BTreeMap::new(),
                next_outbox_id: 1,
                max_orders: DEFAULT_MAX_ORDERS,
                entitlements: BTreeMap::new(),
                next_entitlement_id: 1,
            })),
            clock: Arc::new(SystemClock),
        })
    }

    /// The same store granting and checking entitlements by `clock` (tests move it to reach
    /// expiry and renewal edges). Clones made afterwards share it.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Caps the number of orders held; recording beyond it fails with
    /// [`StoreError::Unavailable`].
    pub fn with_max_orders(self, max_orders: usize) -> Self {
        self.lock().max_orders = max_orders;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below validates before it writes, so a panic elsewhere while holding
        // the lock cannot leave half an order behind; the data stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error Postgres would give for the same row, so that callers see one shape from both.
fn constraint_violation(what: &str, constraint: &str) -> StoreError {
    StoreError::Query {
        context: "recording an order".into(),
        constraint: Some(constraint.to_owned()),
        source: format!("{what} violates {constraint}").into(),
    }
}

impl State {
    /// Mirrors the order in which Postgres would reject the insert: row checks on the order,
    /// the correlation id (ON CONFLICT DO NOTHING), the primary key, the item checks, the FK.
    fn check_new_order(&self, order: &NewOrder) -> Result<Option<OrderId>, StoreError> {
        if order.total_cents < 0 {
            return Err(constraint_violation(
                "negative order total",
                "orders_total_cents_check",
            ));
        }
        if order.currency.len() != 3 || !order.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(constraint_violation(
                "invalid currency",
                "orders_currency_check",
            ));
        }
        if let Some(existing) = self.by_correlation.get(&order.correlation_id) {
            return Ok(Some(*existing));
        }
        if self.orders.contains_key(&order.order_id) {
            return Err(StoreError::OrderIdTaken(order.order_id));
        }
        for line in &order.lines {
            if line.unit_price_cents < 0 {
                return Err(constraint_violation(
                    "negative unit price",
                    "order_items_unit_price_cents_check",
                ));
            }
        }
        if let Some(line) = order
            .lines
            .iter()
            .find(|l| !self.products.contains_key(&l.product_id))
        {
            return Err(constraint_violation(
                &format!("unknown product {:?}", line.product_id),
                "order_items_product_id_fkey",
            ));
        }
        if let Some(line) = order
            .lines
            .iter()
            .find(|l| self.products.get(&l.product_id).is_some_and(|p| !p.active))
        {
            return Err(StoreError::NotForSale(line.product_id.clone()));
        }
        if self.orders.len() >= self.max_orders {
            return Err(StoreError::unavailable(
                "recording an order",
                format!(
                    "the in-memory store holds its maximum of {} orders",
                    self.max_orders
                ),
            ));
        }
        Ok(None)
    }

    /// The entitlements `order`'s lines would get at `now` ([`grant`], each line seeing the
    /// ones before it), checked before anything is written. The ids are the next ones in order.
    fn grants_for(
        &self,
        order: &NewOrder,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Entitlement, Option<EntitlementId>)>, StoreError> {
        let mut granted: Vec<(Entitlement, Option<EntitlementId>)> = Vec::new();
        let ids = self.next_entitlement_id..;
        for (next_id, (line, line_no)) in ids.zip(order.lines.iter().zip(1..)) {
            let what = || format!("order {} line {line_no}", order.order_id);
            let product = self
                .products
                .get(&line.product_id)
                .ok_or_else(|| StoreError::corrupt(what(), "its product is not in the catalog"))?;
            let held: Vec<Held> = self
                .entitlements
                .values()
                .chain(granted.iter().map(|(e, _)| e))
                .filter(|e| e.buyer == order.customer && e.product_id == line.product_id)
                .map(|e| Held {
                    id: e.id,
                    valid_until: e.validity.until,
                })
                .collect();
            let g = grant(now, product.billing_period, &held)
                .map_err(|e| StoreError::corrupt(what(), e))?;
            let id = EntitlementId::new(next_id).ok_or_else(|| {
                StoreError::unavailable("granting an entitlement", "entitlement ids exhausted")
            })?;
            let entitlement = Entitlement {
                id,
                buyer: order.customer.clone(),
                product_id: line.product_id.clone(),
                product_name: line.product_name.clone(),
                seats: line.quantity,
                validity: g.validity,
                order_id: order.order_id,
                line_no,
                assignments: Vec::new(),
            };
            granted.push((entitlement, g.renews));
        }
        Ok(granted)
    }

    /// Records grants from [`State::grants_for`], a renewal taking over the assignments of the
    /// entitlement it renews (oldest first, up to its seats).
    /// Records one order (see [`OrderWriter::record_orders`]); nothing is written when it fails.
    fn record(
        &mut self,
        order: &NewOrder,
        processed_event: &[u8],
        traceparent: Option<&str>,
        granted_at: DateTime<Utc>,
    ) -> Result<(RecordOutcome, Option<Written>), StoreError> {
        if let Some(existing) = self.check_new_order(order)? {
            return Ok((RecordOutcome::AlreadyRecorded(existing), None));
        }
        let grants = self.grants_for(order, granted_at)?;
        let now = Utc::now();
        let record = OrderRecord {
            order_id: order.order_id,
            correlation_id: order.correlation_id,
            customer: order.customer.clone(),
            status: OrderStatus::Processing,
            lines: order.lines.clone(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            accepted_at: order.accepted_at,
            created_at: now,
            updated_at: now,
            deleted: false,
        };
        self.orders.insert(order.order_id, record);
        self.by_correlation
            .insert(order.correlation_id, order.order_id);
        let entitlements = grants.iter().map(|(e, _)| e.id).collect();
        self.insert_grants(grants);
        let id = self.next_outbox_id;
        self.next_outbox_id += 1;
        let entry = OutboxEntry {
            id,
            correlation_id: order.correlation_id,
            order_id: order.order_id,
            kind: PROCESSED_EVENT_KIND.to_owned(),
            payload: processed_event.to_vec(),
            created_at: now,
            traceparent: traceparent.map(str::to_owned),
            accepted_at: Some(order.accepted_at),
        };
        self.outbox.insert(
            id,
            PendingEntry {
                entry,
                leased_until: None,
            },
        );
        let written = Written {
            order_id: order.order_id,
            correlation_id: order.correlation_id,
            outbox_id: id,
            entitlements,
        };
        Ok((RecordOutcome::Inserted, Some(written)))
    }

    /// Takes back what [`State::record`] wrote.
    fn undo(&mut self, written: Written) {
        self.orders.remove(&written.order_id);
        self.by_correlation.remove(&written.correlation_id);
        self.outbox.remove(&written.outbox_id);
        for id in written.entitlements {
            self.entitlements.remove(&id);
        }
    }

    fn insert_grants(&mut self, grants: Vec<(Entitlement, Option<EntitlementId>)>) {
        for (mut entitlement, renews) in grants {
            if let Some(renewed) = renews.and_then(|id| self.entitlements.get(&id)) {
                let seats = usize::try_from(entitlement.seats.get()).unwrap_or(0);
                entitlement.assignments = renewed.assignments.iter().take(seats).cloned().collect();
            }
            self.next_entitlement_id = entitlement.id.get() + 1;
            self.entitlements.insert(entitlement.id, entitlement);
        }
    }

    /// Entitlement `id`, or `NotFound`.
    fn entitlement_mut(&mut self, id: EntitlementId) -> Result<&mut Entitlement, SeatRefusal> {
        self.entitlements.get_mut(&id).ok_or(SeatRefusal::NotFound)
    }
}

fn sort_assignments(assignments: &mut [SeatAssignment]) {
    assignments.sort_by(|a, b| {
        (a.assigned_at, a.assignee.as_str()).cmp(&(b.assigned_at, b.assignee.as_str()))
    });
}

#[async_trait]
impl CatalogSource for MemoryStore {
    async fn all_products(&self) -> Result<Vec<Product>, StoreError> {
        Ok(self.lock().products.values().cloned().collect())
    }
}

#[async_trait]
impl OrderIdSource for MemoryStore {
    async fn reserve_block(&self) -> Result<IdBlock, StoreError> {
        let mut state = self.lock();
        let start = state.next_block_start;
        state.next_block_start = start.checked_add(ORDER_ID_BLOCK_SIZE).ok_or_else(|| {
            StoreError::unavailable("reserving an order id block", "order ids exhausted")
        })?;
        Ok(IdBlock {
            start,
            len: ORDER_ID_BLOCK_SIZE,
        })
    }
}

#[async_trait]
impl OrderWriter for MemoryStore {
    async fn record_orders_traced(
        &self,
        batch: &[(&NewOrder, &[u8], Option<&str>)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let granted_at = clock::now(&*self.clock);
        let mut state = self.lock();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut written = Vec::new();
        for (order, processed_event, traceparent) in batch {
            match state.record(order, processed_event, *traceparent, granted_at) {
                Ok((outcome, writes)) => {
                    outcomes.push(outcome);
                    written.extend(writes);
                }
                Err(e) => {
                    // All or nothing, as the transaction in Postgres.
                    for writes in written.into_iter().rev() {
                        state.undo(writes);
                    }
                    return Err(e);
                }
            }
        }
        Ok(outcomes)
    }
}

/// What recording one order wrote, to take it back when a later order of its batch fails.
#[derive(Debug)]
struct Written {
    order_id: OrderId,
    correlation_id: CorrelationId,
    outbox_id: i64,
    entitlements: Vec<EntitlementId>,
}

#[async_trait]
impl OrderReader for MemoryStore {
    async fn list_orders(
        &self,
        customer: &UserId,
        offset: i64,
        limit: i64,
    ) -> Result<Page<OrderRecord>, StoreError> {
        let state = self.lock();
        let mut mine: Vec<&OrderRecord> = state
            .orders
            .values()
            .filter(|o| &o.customer == customer && !o.deleted)
            .collect();
        mine.sort_by_key(|o| Reverse((o.accepted_at, o.order_id)));
        let total = i64::try_from(mine.len()).unwrap_or(i64::MAX);
        let offset = usize::try_from(offset.max(0)).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit.clamp(0, MAX_BATCH)).unwrap_or(0);
        let items = mine.into_iter().skip(offset).take(limit).cloned().collect();
        Ok(Page { items, total })
    }

    async fn get_order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        Ok(self.lock().orders.get(&order_id).cloned())
    }

    async fn get_order_by_correlation(
        &self,
        cid: CorrelationId,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let state = self.lock();
        let order = state
            .by_correlation
            .get(&cid)
            .and_then(|id| state.orders.get(id));
        Ok(order.cloned())
    }

    async fn recorded_among(&self, order_ids: &[OrderId]) -> Result<HashSet<OrderId>, StoreError> {
        let state = self.lock();
        Ok(order_ids
            .iter()
            .filter(|id| state.orders.contains_key(id))
            .copied()
            .collect())
    }

    async fn soft_delete(&self, customer: &UserId, order_id: OrderId) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.orders.get_mut(&order_id) {
            Some(o) if &o.customer == customer && !o.deleted => {
                o.deleted = true;
                o.updated_at = Utc::now();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn lease_pending(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = usize::try_from(limit.clamp(0, MAX_BATCH)).unwrap_or(0);
        let now = Instant::now();
        let until = now.checked_add(lease).unwrap_or(now);
        let mut state = self.lock();
        Ok(state
            .outbox
            .values_mut()
            .filter(|p| p.leased_until.is_none_or(|t| t < now))
            .take(limit)
            .map(|p| {
                p.leased_until = Some(until);
                p.entry.clone()
            })
            .collect())
    }

    async fn entitlements_granted(
        &self,
        order_ids: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<Entitlement>>, StoreError> {
        let mut granted: HashMap<OrderId, Vec<Entitlement>> = HashMap::new();
        for entitlement in self
            .lock()
            .entitlements
            .values()
            .filter(|e| order_ids.contains(&e.order_id))
        {
            granted
                .entry(entitlement.order_id)
                .or_default()
                .push(entitlement.clone());
        }
        for lines in granted.values_mut() {
            lines.sort_by_key(|e| e.line_no);
        }
        Ok(granted)
    }

    async fn prune_published(&self, _older_than: Duration, _limit: i64) -> Result<u64, StoreError> {
        // `complete` already removed every published entry.
        Ok(0)
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let state = self.lock();
        Ok(Backlog {
            pending: state.outbox.len() as u64,
            oldest: state.outbox.values().map(|p| p.entry.created_at).min(),
        })
    }

    async fn complete(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for entry in entries {
            state.outbox.remove(&entry.id);
            if let Some(o) = state.orders.get_mut(&entry.order_id)
                && !o.status.is_final()
            {
                o.status = OrderStatus::Completed;
                o.updated_at = Utc::now();
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Entitlements for MemoryStore {
    async fn list_entitlements(
        &self,
        user: &UserId,
    ) -> Result<Snapshot<Vec<Entitlement>>, StoreError> {
        let now = clock::now(&*self.clock);
        let state = self.lock();
        let mut mine: Vec<&Entitlement> = state
            .entitlements
            .values()
            .filter(|e| e.is_visible_to(user))
            .collect();
        // As Postgres caps it: those ending last are kept.
        mine.sort_by_key(|e| Reverse((e.validity.until, e.id)));
        let limit = usize::try_from(MAX_BATCH).unwrap_or(usize::MAX);
        let mut value: Vec<Entitlement> = mine.into_iter().take(limit).cloned().collect();
        sort_for_listing(&mut value, now);
        Ok(Snapshot { as_of: now, value })
    }

    async fn assign_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError> {
        let now = clock::now(&*self.clock);
        let mut state = self.lock();
        let entitlement = state.entitlement_mut(id)?;
        entitlement.check_assign(caller, assignee, now)?;
        entitlement.assignments.push(SeatAssignment {
            assignee: assignee.clone(),
            assigned_at: now,
        });
        sort_assignments(&mut entitlement.assignments);
        Ok(Snapshot {
            as_of: now,
            value: entitlement.clone(),
        })
    }

    async fn revoke_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError> {
        let now = clock::now(&*self.clock);
        let mut state = self.lock();
        let entitlement = state.entitlement_mut(id)?;
        entitlement.check_revoke(caller, assignee)?;
        entitlement.assignments.retain(|a| a.assignee != *assignee);
        Ok(Snapshot {
            as_of: now,
            value: entitlement.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_serves_the_data_file_catalog_ordered_by_id() {
        let store = MemoryStore::new().expect("catalog loads");
        let products = store.all_products().await.expect("products");
        assert_eq!(products.len(), 145);
        assert!(products.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[tokio::test]
    async fn clones_share_id_blocks() {
        let a = MemoryStore::new().expect("catalog loads");
        let b = a.clone();
        let first = a.reserve_block().await.expect("block");
        let second = b.reserve_block().await.expect("block");
        assert_eq!(
            first,
            IdBlock {
                start: 1,
                len: ORDER_ID_BLOCK_SIZE
            }
        );
        assert_eq!(second.start, first.start + ORDER_ID_BLOCK_SIZE);
    }

    #[tokio::test]
    async fn refuses_orders_beyond_its_capacity() {
        let store = MemoryStore::new()
            .expect("catalog loads")
            .with_max_orders(1);
        let order = |id: i64| NewOrder {
            order_id: OrderId::new(id).expect("positive"),
            correlation_id: CorrelationId::new(),
            customer: UserId::parse("alice").expect("user"),
            lines: Vec::new(),
            total_cents: 0,
            currency: "USD".into(),
            accepted_at: Utc::now(),
        };
        let first = order(1);
        assert_eq!(
            store.record_order(&first, b"").await.ok(),
            Some(RecordOutcome::Inserted)
        );
        assert!(matches!(
            store.record_order(&order(2), b"").await,
            Err(StoreError::Unavailable { .. })
        ));
        // A redelivery of a recorded order still answers, full or not.
        assert_eq!(
            store.record_order(&first, b"").await.ok(),
            Some(RecordOutcome::AlreadyRecorded(first.order_id))
        );
        assert!(format!("{store:?}").contains("orders: 1"));
    }

    #[tokio::test]
    async fn with_products_rejects_an_invalid_catalog() {
        let mut products = catalog::products().expect("catalog");
        products[0].discount_percent = 101;
        assert!(matches!(
            MemoryStore::with_products(products),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
