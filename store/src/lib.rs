//! The system of record. Small traits ([`CatalogSource`], [`OrderIdSource`], [`OrderWriter`],
//! [`OrderReader`], [`Outbox`], [`Entitlements`]) with a Postgres implementation ([`PgStore`]) and an in-memory one
//! ([`MemoryStore`]) for the embedded dev mode and fast tests. The catalog comes from one data
//! file ([`catalog::PRODUCTS_JSON`]) that both seed.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use contoso_domain::{
    Cause, CorrelationId, Entitlement, EntitlementId, NewOrder, OrderId, OrderRecord, Product,
    SeatRefusal, UserId,
};

pub mod catalog;
pub mod clock;
pub mod config;
pub mod memory;
pub mod postgres;
mod schema;

pub use clock::{Clock, ManualClock, SystemClock};
pub use memory::MemoryStore;
pub use postgres::PgStore;

/// How many order ids one [`OrderIdSource::reserve_block`] hands out. Must equal the
/// `INCREMENT BY` of the `order_id_blocks` sequence: each `nextval` is the first id of a block.
pub const ORDER_ID_BLOCK_SIZE: i64 = 100;

/// The outbox `kind` of the event [`OrderWriter::record_order`] stores.
pub const PROCESSED_EVENT_KIND: &str = "orders.processed";

/// The most rows one call returns (a page of [`OrderReader::list_orders`], a batch of
/// [`Outbox::lease_pending`], a prune of [`Outbox::prune_published`]); larger requests are
/// clamped, so no caller can ask for everything.
pub const MAX_BATCH: i64 = 500;

/// A contiguous block of reserved order ids: `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// First id of the block.
    pub start: i64,
    /// Number of ids in the block ([`ORDER_ID_BLOCK_SIZE`]).
    pub len: i64,
}

/// What recording an accepted order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The order, its items and its outbox row were committed now.
    Inserted,
    /// An order with this correlation id was already recorded (a redelivery): nothing changed.
    AlreadyRecorded(OrderId),
}

/// A message waiting in the outbox to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox; entries are leased oldest first.
    pub id: i64,
    /// Correlation id of the order the event is about.
    pub correlation_id: CorrelationId,
    /// The order the event is about; [`Outbox::complete`] marks it COMPLETED.
    pub order_id: OrderId,
    /// Event kind, e.g. `orders.processed`.
    pub kind: String,
    /// Encoded event.
    pub payload: Vec<u8>,
    /// When the entry was written.
    pub created_at: DateTime<Utc>,
    /// The W3C `traceparent` of the span that recorded the order, when it was traced: the
    /// relay's publish continues that trace.
    pub traceparent: Option<String>,
    /// When the order was accepted (for the accept-to-completed latency), if it is still there.
    pub accepted_at: Option<DateTime<Utc>>,
}

/// The outbox entries not yet published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// How many there are.
    pub pending: u64,
    /// When the oldest of them was written.
    pub oldest: Option<DateTime<Utc>>,
}

/// A page of results and the number of matches over all pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Matches over all pages.
    pub total: i64,
}

/// Why a store call failed. Messages are for logs (with [`contoso_domain::Report`], which adds
/// the source chain), never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (connect, pool timeout, dropped connection): retryable.
    #[error("database unavailable while {context}")]
    Unavailable {
        /// What the store was doing, e.g. `reading order 42`.
        context: String,
        #[source]
        source: Cause,
    },
    /// The database rejected a statement.
    #[error("the database refused {context}")]
    Query {
        /// What the store was doing.
        context: String,
        /// The violated constraint, if any, e.g. `order_items_product_id_fkey` for an unknown
        /// product.
        constraint: Option<String>,
        #[source]
        source: Cause,
    },
    /// The reserved order id is already recorded under a different correlation id.
    #[error("order {0} is recorded with another correlation id")]
    OrderIdTaken(OrderId),
    /// A line names a product withdrawn from sale (inactive) since the order was accepted.
    #[error("product {0} is no longer for sale")]
    NotForSale(String),
    /// Stored data (or the catalog file) does not form valid domain values.
    #[error("stored data is malformed: {what}")]
    Corrupt {
        /// Which value, e.g. `order 42 line 1`.
        what: String,
        #[source]
        source: Cause,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] while doing `context`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: source.into(),
        }
    }

    /// [`StoreError::Corrupt`] for `what`.
    pub fn corrupt(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The constraint a [`StoreError::Query`] violated.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Query { constraint, .. } => constraint.as_deref(),
            _ => None,
        }
    }
}

/// Reads the catalog (accept-svc caches it in memory).
#[async_trait]
pub trait CatalogSource: Send + Sync + fmt::Debug {
    /// Every product, active or not, ordered by id.
    async fn all_products(&self) -> Result<Vec<Product>, StoreError>;
}

/// Reserves order ids in blocks (hi/lo): one round trip per block.
#[async_trait]
pub trait OrderIdSource: Send + Sync + fmt::Debug {
    /// A block of [`ORDER_ID_BLOCK_SIZE`] ids no other caller (in any process) receives.
    async fn reserve_block(&self) -> Result<IdBlock, StoreError>;
}

/// Records accepted orders (process-svc).
#[async_trait]
pub trait OrderWriter: Send + Sync + fmt::Debug {
    /// Records a batch of orders in one transaction, each with the `OrderProcessed` event its
    /// outbox row carries, and returns each one's outcome in the same order. For each order: upserts
    /// the customer, inserts the order under its reserved id with status PROCESSING, its items, one
    /// entitlement per line (the buyer, the product, as many seats as the quantity, valid from now
    /// as [`contoso_domain::grant`] rules, a renewal taking over the seat assignments of the
    /// entitlement it renews), and an outbox row of kind [`PROCESSED_EVENT_KIND`]. Idempotent on
    /// the correlation id: an order already recorded is [`RecordOutcome::AlreadyRecorded`] and
    /// writes (and grants) nothing.
    ///
    /// All or nothing: when one order cannot be recorded the whole batch is rolled back and its
    /// error returned, so a caller that needs to know which order it was records them one by one:
    /// [`StoreError::OrderIdTaken`] when an order id belongs to another correlation id,
    /// [`StoreError::NotForSale`] when a line's product has been withdrawn from sale, and
    /// [`StoreError::Query`] naming the constraint when a line is invalid.
    async fn record_orders(
        &self,
        batch: &[(&NewOrder, &[u8])],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let untraced: Vec<(&NewOrder, &[u8], Option<&str>)> = batch
            .iter()
            .map(|(order, event)| (*order, *event, None))
            .collect();
        self.record_orders_traced(&untraced).await
    }

    /// Records one order: [`OrderWriter::record_orders`] with a batch of one.
    async fn record_order(
        &self,
        order: &NewOrder,
        processed_event: &[u8],
    ) -> Result<RecordOutcome, StoreError> {
        let mut outcomes = self.record_orders(&[(order, processed_event)]).await?;
        outcomes.pop().ok_or_else(|| {
            StoreError::corrupt(
                format!("recording order {}", order.order_id),
                "the store returned no outcome",
            )
        })
    }

    /// [`OrderWriter::record_order`], keeping the order's `traceparent` with its outbox row; see
    /// [`OrderWriter::record_orders_traced`].
    async fn record_order_traced(
        &self,
        order: &NewOrder,
        processed_event: &[u8],
        traceparent: Option<&str>,
    ) -> Result<RecordOutcome, StoreError> {
        let mut outcomes = self
            .record_orders_traced(&[(order, processed_event, traceparent)])
            .await?;
        outcomes.pop().ok_or_else(|| {
            StoreError::corrupt(
                format!("recording order {}", order.order_id),
                "the store returned no outcome",
            )
        })
    }

    /// [`OrderWriter::record_orders`], keeping each order's `traceparent` (the W3C trace context
    /// of the span that recorded it) with its outbox row, so the relay's publish joins the
    /// order's trace. What an adapter implements; [`OrderWriter::record_orders`] is this without
    /// trace contexts.
    async fn record_orders_traced(
        &self,
        batch: &[(&NewOrder, &[u8], Option<&str>)],
    ) -> Result<Vec<RecordOutcome>, StoreError>;
}

/// Reads and soft-deletes a customer's orders (accept-svc).
#[async_trait]
pub trait OrderReader: Send + Sync + fmt::Debug {
    /// The customer's orders that are not deleted, newest first by acceptance time
    /// (`accepted_at`, then order id, both descending); `limit` is clamped to 0..=[`MAX_BATCH`]
    /// and a negative `offset` counts as 0.
    async fn list_orders(
        &self,
        customer: &UserId,
        offset: i64,
        limit: i64,
    ) -> Result<Page<OrderRecord>, StoreError>;

    /// One order by id, whoever owns it, deleted or not.
    async fn get_order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError>;

    /// One order by correlation id, whoever owns it, deleted or not.
    async fn get_order_by_correlation(
        &self,
        cid: CorrelationId,
    ) -> Result<Option<OrderRecord>, StoreError>;

    /// Which of `order_ids` are recorded, whoever owns them, deleted or not (one round trip).
    async fn recorded_among(&self, order_ids: &[OrderId]) -> Result<HashSet<OrderId>, StoreError>;

    /// Marks the order deleted if `customer` owns it. Returns false when it does not exist for
    /// that customer or is already deleted.
    async fn soft_delete(&self, customer: &UserId, order_id: OrderId) -> Result<bool, StoreError>;
}

/// The transactional outbox (process-svc's relay).
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug {
    /// Leases up to `limit` unpublished entries, oldest first, for `lease`; entries leased by
    /// another relay are skipped, so replicas do not publish the same entry at once.
    async fn lease_pending(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Marks the entries published and their orders COMPLETED (unless an order's status is already
    /// final), in one transaction. Completing an entry twice is harmless.
    async fn complete(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;

    /// The entitlements each of `order_ids` granted when it was recorded, by line: what the relay
    /// announces with the order. An order that granted nothing (or is unknown) maps to nothing.
    async fn entitlements_granted(
        &self,
        order_ids: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<Entitlement>>, StoreError>;

    /// Deletes up to `limit` entries published more than `older_than` ago, oldest first, and
    /// returns how many went. Unpublished entries are never touched. (The memory store keeps no
    /// published entries, so it has nothing to prune.)
    async fn prune_published(
        &self,
        older_than: std::time::Duration,
        limit: i64,
    ) -> Result<u64, StoreError>;

    /// How many entries wait to be published, and since when (`/metrics`).
    async fn backlog(&self) -> Result<Backlog, StoreError>;
}

/// A value read from the store and the store's time it was read at, by which validities (active,
/// days left) are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<T> {
    pub as_of: DateTime<Utc>,
    pub value: T,
}

/// Why a seat could not be assigned or revoked.
#[derive(Debug, thiserror::Error)]
pub enum SeatError {
    /// The rules refused it ([`contoso_domain::Entitlement::check_assign`],
    /// [`contoso_domain::Entitlement::check_revoke`]); nothing changed.
    #[error("seat change refused: {0}")]
    Refused(#[from] SeatRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Entitlements as their buyers and assignees see and manage them (accept-svc). They are granted
/// by [`OrderWriter::record_order`], never here; soft-deleting the order revokes nothing.
#[async_trait]
pub trait Entitlements: Send + Sync + fmt::Debug {
    /// What `user` bought or holds an assigned seat of, expired ones included, each with all its
    /// assignments, in [`contoso_domain::sort_for_listing`] order as of the store's time; at most
    /// [`MAX_BATCH`] (those ending last).
    async fn list_entitlements(
        &self,
        user: &UserId,
    ) -> Result<Snapshot<Vec<Entitlement>>, StoreError>;

    /// Gives `assignee` a seat of entitlement `id` for `caller`, under a lock on the entitlement
    /// so that concurrent assignments never exceed its seats. Refused as
    /// [`contoso_domain::Entitlement::check_assign`] rules (an unknown id, or one `caller` cannot
    /// see, is [`SeatRefusal::NotFound`]). Answers the entitlement as it is now.
    async fn assign_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError>;

    /// Takes back the seat `assignee` holds of entitlement `id`, as
    /// [`contoso_domain::Entitlement::check_revoke`] rules. Answers the entitlement as it is now.
    async fn revoke_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError>;
}

/// Everything a full store offers.
pub trait Store:
    CatalogSource + OrderIdSource + OrderWriter + OrderReader + Outbox + Entitlements
{
}

impl<T: CatalogSource + OrderIdSource + OrderWriter + OrderReader + Outbox + Entitlements> Store
    for T
{
}
