//! Ephemeral workflow state: who owns a correlation id, where its order is in the workflow, the
//! orders each user has in flight, and idempotency keys. Everything here expires (TTL); Postgres,
//! not this, is the system of record.
//! The seam is split by role ([`StatusReader`], [`StatusWriter`], [`IntakeState`]) so each service
//! receives only what it uses; [`MemoryState`] and [`RedisState`] implement them all.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use contoso_domain::{Cause, CorrelationId, OrderId, OrderStatus, UserId};

pub mod config;
pub mod memory;
pub mod redis;

pub use self::{config::RedisArgs, memory::MemoryState, redis::RedisState};

/// How long a completed idempotency key answers retries unless configured otherwise
/// (`IDEMPOTENCY_TTL_SECS`): a day, so a client retrying long after a failure still gets its
/// first order back.
pub const DEFAULT_IDEMPOTENCY_TTL: std::time::Duration =
    std::time::Duration::from_secs(24 * 60 * 60);

/// The status of one order as the workflow state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Where the order is in its workflow.
    pub status: OrderStatus,
    /// The business id, once known (a status recreated after expiry may not know it).
    pub order_id: Option<OrderId>,
    /// When the status was last written.
    pub updated_at: DateTime<Utc>,
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free and is now held by the caller, who must `complete` or `release` it.
    Claimed,
    /// Another request with the same key is still in flight.
    InFlight,
    /// An earlier request with this key finished; this is what it stored.
    Completed(Vec<u8>),
}

/// Why a workflow state call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store cannot be reached right now (retryable).
    #[error("workflow state store unavailable while {context}")]
    Unavailable {
        /// What the adapter was doing, e.g. `reading an order's owner`.
        context: String,
        #[source]
        source: Cause,
    },
    /// The store holds something under `key` this code cannot read.
    #[error("workflow state holds a malformed value for {key}: {detail}")]
    Corrupt { key: String, detail: String },
}

/// Reads who placed an order and where it is in its workflow (notify-svc; accept-svc's
/// `GetOrderStatus`).
#[async_trait]
pub trait StatusReader: Send + Sync + fmt::Debug {
    /// The user who placed `cid`, if the map has not expired.
    async fn owner(&self, cid: CorrelationId) -> Result<Option<UserId>, StateError>;

    /// The recorded status of `cid`, if it has not expired.
    async fn status(&self, cid: CorrelationId) -> Result<Option<StatusRecord>, StateError>;
}

/// Moves statuses forward (process-svc, notify-svc).
#[async_trait]
pub trait StatusWriter: Send + Sync + fmt::Debug {
    /// Moves the status of `cid` forward to `status` and refreshes the TTL of its map and status.
    /// Returns false, changing nothing, when the recorded status is already `status` or later.
    /// A missing status (expired) is recreated; an expired map is not. `order_id: None` keeps
    /// the order id already recorded. Atomic across concurrent callers in any process.
    async fn advance(
        &self,
        cid: CorrelationId,
        status: OrderStatus,
        order_id: Option<OrderId>,
    ) -> Result<bool, StateError>;

    /// Writes the owner map of `cid` with the workflow TTL unless one is there (`SET NX`): for a
    /// map lost with Redis's data, from the owner an event carries sealed. An existing map keeps
    /// its owner and its TTL.
    async fn restore_owner(&self, cid: CorrelationId, owner: &UserId) -> Result<(), StateError>;
}

/// An accepted order held in its owner's in-flight set until accept-svc sees it recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightOrder {
    /// The business id (the field name in the owner's set).
    pub order_id: OrderId,
    /// What intake stored: opaque bytes (accept-svc stores the encoded accepted order).
    pub snapshot: Vec<u8>,
}

/// What intake writes: a newly accepted order's owner map, status and in-flight snapshot, and
/// idempotency keys (accept-svc).
///
/// The in-flight set of a user (`order:inflight:{user}`) lets the caller read their own writes:
/// an order is listed from it between `PlaceOrder` answering and process-svc recording it in
/// Postgres. Each entry lives for the workflow TTL from when it was written; accept-svc drops the
/// entries it finds recorded ([`IntakeState::drop_inflight`]).
#[async_trait]
pub trait IntakeState: StatusReader {
    /// Records a newly accepted order, in one atomic step: `order:map:{cid} = owner`,
    /// `order:status:{cid} = ACCEPTED` and `snapshot` under `order_id` in the owner's in-flight
    /// set, all with the workflow TTL (the set's TTL is refreshed). Returns how many in-flight
    /// entries the owner now holds (expired ones not yet removed included), so a caller can
    /// prune a set that grows.
    ///
    /// Calling it again for the same order (a keyed retry replaying its intake) writes only what
    /// is missing or expired: a status already there is kept as it is (never moved back to
    /// ACCEPTED; only a missing order id is filled in), and neither an existing map nor an
    /// existing in-flight entry is rewritten or has its TTL extended.
    async fn record_accepted(
        &self,
        cid: CorrelationId,
        owner: &UserId,
        order_id: OrderId,
        snapshot: &[u8],
    ) -> Result<usize, StateError>;

    /// `user`'s in-flight orders that have not expired, ordered by order id. Expired entries are
    /// removed on the way.
    async fn inflight_orders(&self, user: &UserId) -> Result<Vec<InflightOrder>, StateError>;

    /// The snapshot of one of `user`'s in-flight orders, if it is there and has not expired.
    async fn inflight_order(
        &self,
        user: &UserId,
        order_id: OrderId,
    ) -> Result<Option<Vec<u8>>, StateError>;

    /// Removes `order_ids` from `user`'s in-flight set (orders found recorded). Ids not in the
    /// set are ignored.
    async fn drop_inflight(&self, user: &UserId, order_ids: &[OrderId]) -> Result<(), StateError>;

    /// Claims `key` for `user` (idempotent order placement). A claim that is neither completed
    /// nor released (the claimer died) lapses after the adapter's claim TTL, so retries are not
    /// blocked for the whole TTL.
    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<IdempotencyClaim, StateError>;

    /// Stores `result` under `key` for the idempotency TTL from now (`IDEMPOTENCY_TTL_SECS`,
    /// [`DEFAULT_IDEMPOTENCY_TTL`] unless configured), while the key is claimed or free. The first
    /// result wins: when one is already stored (a request whose claim lapsed while another took
    /// the key), nothing is written and that result is returned instead. `None` means `result`
    /// is what the key answers from now on.
    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError>;

    /// Replaces the result stored under `key` (a later state of the same outcome, e.g. the
    /// order once the broker confirmed it), with a fresh idempotency TTL. Does nothing when no
    /// result is stored: a claim, a released key or an expired one stays as it is.
    async fn replace_idempotency_result(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<(), StateError>;

    /// Frees a claimed key whose request failed, so a retry can run again.
    async fn release_idempotency_key(&self, user: &UserId, key: &str) -> Result<(), StateError>;
}

/// Every role at once: what an adapter implements and its contract tests exercise. Services take
/// only the role they use, so which service may write what is visible in their signatures.
#[async_trait]
pub trait WorkflowState: IntakeState + StatusWriter {
    /// True while the store is reachable (for `/readyz`).
    async fn is_ready(&self) -> bool;
}
