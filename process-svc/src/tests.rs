//! The whole worker (`run`) over the in-memory adapters: the bus and the workflow state are
//! wrapped to record what the worker told them, and the store can be scripted to fail or stall.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use prost::Message;
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use contoso_bus::{
    Bus, ConsumerSpec, DeadLetter, DeadLetters, Deliveries, Delivery, Envelope, MemoryBus, Topic,
    recording::{Answer, Answered, RecordingBus},
};
use contoso_domain::{
    CorrelationId, NewOrder, OrderId, OrderLine, OrderRecord, OrderStatus, Product, Quantity,
    UserId,
};
use contoso_platform::{
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::{convert::to_timestamp, events::v1 as ev, orders::v1 as pb};
use contoso_state::{
    IntakeState, MemoryState, StateError, StatusReader, StatusRecord, StatusWriter,
};
use contoso_store::{
    CatalogSource, IdBlock, MemoryStore, OrderIdSource, OrderReader, OrderWriter, Outbox,
    OutboxEntry, Page, RecordOutcome, StoreError,
};
use contoso_testkit::eventually;

use crate::{Deps, Settings, run};

const DEADLINE: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Workflow state that records every `advance` and whether it moved the status, and can fail the
/// next few COMPLETED advances as an unreachable Redis would.
#[derive(Debug)]
struct RecordingState {
    inner: MemoryState,
    advances: Arc<Mutex<Vec<(OrderStatus, bool)>>>,
    completed_outages: Arc<AtomicUsize>,
}

#[async_trait]
impl StatusWriter for RecordingState {
    async fn advance(
        &self,
        cid: CorrelationId,
        status: OrderStatus,
        order_id: Option<OrderId>,
    ) -> Result<bool, StateError> {
        let outage = status == OrderStatus::Completed
            && self
                .completed_outages
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if outage {
            return Err(StateError::Unavailable {
                context: "advancing an order's status".into(),
                source: "scripted Redis outage".into(),
            });
        }
        let advanced = self.inner.advance(cid, status, order_id).await?;
        lock(&self.advances).push((status, advanced));
        Ok(advanced)
    }

    async fn restore_owner(&self, cid: CorrelationId, owner: &UserId) -> Result<(), StateError> {
        self.inner.restore_owner(cid, owner).await
    }
}

/// A memory store whose `record_order` can fail a number of times (the database down, or a
/// statement refused for no known reason), or wait for a permit, and that records the retention of
/// every outbox prune.
#[derive(Debug)]
struct ScriptedStore {
    inner: MemoryStore,
    outages_left: AtomicU32,
    refusals_left: AtomicU32,
    entered: Notify,
    gate: Option<Semaphore>,
    prunes: Mutex<Vec<Duration>>,
    /// The size of every batch `record_orders` was asked to record.
    batches: Mutex<Vec<usize>>,
}

impl Default for ScriptedStore {
    fn default() -> Self {
        Self {
            inner: MemoryStore::new().expect("the catalog loads"),
            outages_left: AtomicU32::new(0),
            refusals_left: AtomicU32::new(0),
            entered: Notify::new(),
            gate: None,
            prunes: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl CatalogSource for ScriptedStore {
    async fn all_products(&self) -> Result<Vec<Product>, StoreError> {
        self.inner.all_products().await
    }
}

#[async_trait]
impl OrderIdSource for ScriptedStore {
    async fn reserve_block(&self) -> Result<IdBlock, StoreError> {
        self.inner.reserve_block().await
    }
}

#[async_trait]
impl OrderWriter for ScriptedStore {
    async fn record_orders_traced(
        &self,
        batch: &[(&NewOrder, &[u8], Option<&str>)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        lock(&self.batches).push(batch.len());
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            let _permit = gate
                .acquire()
                .await
                .map_err(|e| StoreError::unavailable("waiting at the gate", e))?;
        }
        let outage = self
            .outages_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if outage.is_ok() {
            return Err(StoreError::unavailable(
                "recording an order",
                "scripted outage",
            ));
        }
        let refusal = self
            .refusals_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if refusal.is_ok() {
            return Err(StoreError::Query {
                context: "recording an order".into(),
                constraint: None,
                source: "scripted refusal of unknown cause".into(),
            });
        }
        self.inner.record_orders_traced(batch).await
    }
}

#[async_trait]
impl OrderReader for ScriptedStore {
    async fn list_orders(
        &self,
        customer: &UserId,
        offset: i64,
        limit: i64,
    ) -> Result<Page<OrderRecord>, StoreError> {
        self.inner.list_orders(customer, offset, limit).await
    }

    async fn get_order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.inner.get_order(order_id).await
    }

    async fn get_order_by_correlation(
        &self,
        cid: CorrelationId,
    ) -> Result<Option<OrderRecord>, StoreError> {
        self.inner.get_order_by_correlation(cid).await
    }

    async fn recorded_among(
        &self,
        order_ids: &[OrderId],
    ) -> Result<std::collections::HashSet<OrderId>, StoreError> {
        self.inner.recorded_among(order_ids).await
    }

    async fn soft_delete(&self, customer: &UserId, order_id: OrderId) -> Result<bool, StoreError> {
        self.inner.soft_delete(customer, order_id).await
    }
}

#[async_trait]
impl Outbox for ScriptedStore {
    async fn lease_pending(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.lease_pending(limit, lease).await
    }

    async fn complete(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.inner.complete(entries).await
    }

    async fn entitlements_granted(
        &self,
        order_ids: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<contoso_domain::Entitlement>>, StoreError> {
        self.inner.entitlements_granted(order_ids).await
    }

    async fn prune_published(&self, older_than: Duration, limit: i64) -> Result<u64, StoreError> {
        lock(&self.prunes).push(older_than);
        self.inner.prune_published(older_than, limit).await
    }

    async fn backlog(&self) -> Result<contoso_store::Backlog, StoreError> {
        self.inner.backlog().await
    }
}

/// One running worker and handles on everything it talks to.
struct Harness {
    bus: MemoryBus,
    state: MemoryState,
    store: Arc<ScriptedStore>,
    sealer: CustomerSealer,
    /// The worker's consumer answers through this; `bus` above is for publishing and observing.
    recording: RecordingBus,
    advances: Arc<Mutex<Vec<(OrderStatus, bool)>>>,
    completed_outages: Arc<AtomicUsize>,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(ScriptedStore::default(), Settings::default()).await
    }

    async fn start_with(store: ScriptedStore, settings: Settings) -> Self {
        let bus = MemoryBus::new();
        let state = MemoryState::new(Duration::from_secs(60));
        let store = Arc::new(store);
        let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS).expect("dev seal key");
        let recording = RecordingBus::new(Arc::new(bus.clone()));
        let advances = Arc::new(Mutex::new(Vec::new()));
        let completed_outages = Arc::new(AtomicUsize::new(0));
        let deps = Deps {
            bus: Arc::new(recording.clone()),
            state: Arc::new(RecordingState {
                inner: state.clone(),
                advances: advances.clone(),
                completed_outages: completed_outages.clone(),
            }),
            orders: store.clone(),
            outbox: store.clone(),
            sealer: sealer.clone(),
            readiness: Readiness::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(run(listener, deps, settings, shutdown.clone()));
        Self {
            bus,
            state,
            store,
            sealer,
            recording,
            advances,
            completed_outages,
            addr,
            shutdown,
            running,
        }
    }

    /// An `OrderAccepted` for two catalog products, as accept-svc would publish it, with the
    /// workflow state it would have written.
    async fn accepted_order(&self, user: &str) -> (NewOrder, ev::OrderAccepted) {
        let products = self.store.all_products().await.expect("catalog");
        let block = self.store.reserve_block().await.expect("id block");
        let cid = CorrelationId::new();
        let customer = UserId::parse(user).expect("user id");
        let order_id = OrderId::new(block.start).expect("positive id");
        let lines: Vec<ev::OrderAcceptedLine> = products
            .iter()
            .take(2)
            .zip(1..)
            .map(|(p, quantity)| ev::OrderAcceptedLine {
                product_id: p.id.clone(),
                product_name: p.name.clone(),
                quantity,
                unit_price_cents: p.effective_price_cents(),
            })
            .collect();
        let total_cents = lines
            .iter()
            .map(|l| l.unit_price_cents * i64::from(l.quantity))
            .sum();
        let accepted_at = Utc::now();
        let event = ev::OrderAccepted {
            correlation_id: cid.to_string(),
            order_id: order_id.get(),
            customer: Some(self.sealer.seal(cid, &customer).expect("seal")),
            lines: lines.clone(),
            total_cents,
            currency: "USD".into(),
            accepted_at: Some(to_timestamp(accepted_at)),
        };
        self.state
            .record_accepted(cid, &customer, order_id, &[])
            .await
            .expect("record accepted");
        let order = NewOrder {
            order_id,
            correlation_id: cid,
            customer,
            lines: lines
                .into_iter()
                .map(|l| OrderLine {
                    product_id: l.product_id,
                    product_name: l.product_name,
                    quantity: Quantity::try_from(l.quantity).expect("a valid quantity"),
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents,
            currency: "USD".into(),
            accepted_at,
        };
        (order, event)
    }

    async fn publish(&self, message_id: &str, payload: Vec<u8>) {
        let envelope = Envelope {
            topic: Topic::OrderAccepted,
            message_id: message_id.to_owned(),
            payload: Bytes::from(payload),
        };
        self.bus
            .publish(envelope)
            .await
            .expect("publish OrderAccepted");
    }

    /// Waits until the worker settled (acked or nacked) `count` deliveries, and returns them.
    async fn wait_for_settlements(&self, count: usize) -> Vec<Answered> {
        let what = format!("{count} settled deliveries");
        self.recording
            .wait_for(&what, DEADLINE, |answers| {
                let settled = settlements(answers);
                (settled.len() >= count).then_some(settled)
            })
            .await
    }

    async fn wait_until_completed(&self, order_id: OrderId) -> OrderRecord {
        eventually("the order to be COMPLETED", DEADLINE, || async {
            matches!(
                self.store.get_order(order_id).await,
                Ok(Some(OrderRecord {
                    status: OrderStatus::Completed,
                    ..
                }))
            )
        })
        .await;
        self.store
            .get_order(order_id)
            .await
            .expect("get order")
            .expect("order exists")
    }

    /// Everything published on the status topics, read through a group of its own.
    async fn observer(&self) -> Deliveries {
        let spec = ConsumerSpec::new("observer", [Topic::OrderProcessing, Topic::OrderProcessed]);
        self.bus.consume(&spec).await.expect("observer group")
    }

    /// The FAILED announcements, read through a group of its own.
    async fn failures(&self) -> Deliveries {
        let spec = ConsumerSpec::new("failures", [Topic::OrderFailed]);
        self.bus.consume(&spec).await.expect("failures group")
    }

    /// Waits for the one dead letter there should be, and returns it.
    async fn dead_letter(&self) -> DeadLetter {
        eventually("a dead letter", DEADLINE, || async {
            !self.bus.list(10).await.expect("list").is_empty()
        })
        .await;
        let mut letters = self.bus.list(10).await.expect("list");
        assert_eq!(letters.len(), 1, "{letters:?}");
        letters.remove(0)
    }

    /// The settlements of the deliveries of `message_id` so far.
    fn settled(&self, message_id: &str) -> Vec<(u64, Answer)> {
        settlements(&self.recording.answers())
            .into_iter()
            .filter(|a| a.is_for(message_id))
            .map(|a| (a.attempt, a.answer))
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(DEADLINE, self.running).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "run did not stop cleanly: {stopped:?}"
        );
    }
}

/// The acks and nacks among `answers`, leaving out in-progress heartbeats.
fn settlements(answers: &[Answered]) -> Vec<Answered> {
    answers
        .iter()
        .filter(|a| a.answer.settles())
        .cloned()
        .collect()
}

async fn next_delivery(deliveries: &mut Deliveries) -> Delivery {
    let next = tokio::time::timeout(DEADLINE, deliveries.next()).await;
    let delivery = next
        .expect("a delivery within the deadline")
        .expect("stream open")
        .expect("delivery");
    delivery.ack().await.expect("ack");
    delivery
}

#[tokio::test]
async fn an_accepted_order_is_recorded_completed_and_announced_on_both_status_topics() {
    let harness = Harness::start().await;
    let (order, event) = harness.accepted_order("alice").await;
    let cid = order.correlation_id;
    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;

    let recorded = harness.wait_until_completed(order.order_id).await;
    assert_eq!(recorded.correlation_id, cid);
    assert_eq!(recorded.customer.as_str(), "alice");
    assert_eq!(recorded.lines, order.lines);
    assert_eq!(recorded.total_cents, order.total_cents);

    let mut observer = harness.observer().await;
    let mut published = HashMap::new();
    for _ in 0..2 {
        let delivery = next_delivery(&mut observer).await;
        published.insert(delivery.topic, delivery);
    }
    let processing = &published[&Topic::OrderProcessing];
    assert_eq!(
        processing.message_id.as_deref(),
        Some(format!("{cid}:processing").as_str())
    );
    let changed = ev::OrderStatusChanged::decode(processing.payload.clone()).expect("decode");
    assert_eq!(changed.status(), pb::OrderStatus::Processing);
    assert_eq!(changed.order_id, order.order_id.get());

    let processed = &published[&Topic::OrderProcessed];
    assert_eq!(
        processed.message_id.as_deref(),
        Some(format!("{cid}:processed").as_str())
    );
    let done = ev::OrderProcessed::decode(processed.payload.clone()).expect("decode");
    assert_eq!(done.correlation_id, cid.to_string());
    assert_eq!(done.order_id, order.order_id.get());

    let settlements = harness.wait_for_settlements(1).await;
    assert_eq!(settlements[0].answer, Answer::Ack);
    harness.stop().await;
}

#[tokio::test]
async fn what_the_order_granted_is_announced_with_it_once_per_line() {
    let harness = Harness::start().await;
    let (order, event) = harness.accepted_order("dora").await;
    let cid = order.correlation_id;
    let spec = ConsumerSpec::new("grants", [Topic::EntitlementsGranted]);
    let mut grants = harness.bus.consume(&spec).await.expect("grants group");
    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;
    harness.wait_until_completed(order.order_id).await;

    let delivery = next_delivery(&mut grants).await;
    assert_eq!(
        delivery.message_id.as_deref(),
        Some(format!("{cid}:entitlements").as_str())
    );
    let granted = ev::EntitlementsGranted::decode(delivery.payload.clone()).expect("decode");
    assert_eq!(granted.correlation_id, cid.to_string());
    assert_eq!(granted.order_id, order.order_id.get());
    let lines: Vec<(i32, &str, i32)> = granted
        .grants
        .iter()
        .map(|g| (g.line_no, g.product_id.as_str(), g.seats))
        .collect();
    let expected: Vec<(i32, &str, i32)> = order
        .lines
        .iter()
        .zip(1..)
        .map(|(l, n)| (n, l.product_id.as_str(), l.quantity.get()))
        .collect();
    assert_eq!(lines, expected);
    let at = |t: &Option<_>| t.as_ref().and_then(contoso_proto::convert::from_timestamp);
    assert!(
        granted
            .grants
            .iter()
            .all(|g| at(&g.valid_from).is_some() && at(&g.valid_until) > at(&g.valid_from))
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_workflow_status_moves_from_accepted_through_processing_to_completed() {
    let harness = Harness::start().await;
    let (order, event) = harness.accepted_order("bob").await;
    let cid = order.correlation_id;
    let before = harness
        .state
        .status(cid)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(before.status, OrderStatus::Accepted);

    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;
    harness.wait_until_completed(order.order_id).await;
    eventually("COMPLETED in the workflow state", DEADLINE, || async {
        matches!(
            harness.state.status(cid).await,
            Ok(Some(StatusRecord {
                status: OrderStatus::Completed,
                ..
            }))
        )
    })
    .await;

    let after = harness
        .state
        .status(cid)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(after.order_id, Some(order.order_id));
    assert_eq!(
        *lock(&harness.advances),
        [
            (OrderStatus::Processing, true),
            (OrderStatus::Completed, true)
        ]
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_relay_prunes_published_outbox_entries_past_the_configured_retention() {
    let retention = Duration::from_secs(5 * 3600);
    let settings = Settings {
        outbox_retention: retention,
        outbox_prune_interval: Duration::from_millis(20),
        ..Settings::default()
    };
    let harness = Harness::start_with(ScriptedStore::default(), settings).await;
    eventually("two prunes", DEADLINE, || async {
        lock(&harness.store.prunes).len() >= 2
    })
    .await;
    assert!(
        lock(&harness.store.prunes).iter().all(|d| *d == retention),
        "{:?}",
        lock(&harness.store.prunes)
    );
    harness.stop().await;
}

#[tokio::test]
async fn completed_is_recorded_in_the_workflow_state_before_it_is_announced_even_after_a_redis_error()
 {
    let settings = Settings {
        outbox_lease: Duration::from_millis(200),
        outbox_poll_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let harness = Harness::start_with(ScriptedStore::default(), settings).await;
    harness.completed_outages.store(1, Ordering::SeqCst);
    let (order, event) = harness.accepted_order("erin").await;
    let cid = order.correlation_id;
    let mut observer = harness.observer().await;
    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;

    // The first attempt to record COMPLETED fails. The relay must not announce the order as
    // processed before the workflow state says COMPLETED (a watch opened in between would get a
    // stale snapshot and never hear of it), and must come back to it.
    loop {
        let delivery = next_delivery(&mut observer).await;
        if delivery.topic == Topic::OrderProcessed {
            let status = harness.state.status(cid).await.expect("status");
            assert_eq!(
                status.map(|s| s.status),
                Some(OrderStatus::Completed),
                "announced before the workflow state was COMPLETED"
            );
            break;
        }
    }
    harness.wait_until_completed(order.order_id).await;
    assert_eq!(
        *lock(&harness.advances),
        [
            (OrderStatus::Processing, true),
            (OrderStatus::Completed, true)
        ],
        "COMPLETED was recorded once it could be, before anything announced it"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_redelivered_order_accepted_creates_no_second_order_and_is_acked() {
    let harness = Harness::start().await;
    let (order, event) = harness.accepted_order("carol").await;
    let cid = order.correlation_id;
    let payload = event.encode_to_vec();
    harness.publish(&cid.to_string(), payload.clone()).await;
    harness.wait_until_completed(order.order_id).await;

    // A different message id gets past the broker's deduplication, as a redelivery would.
    harness.publish(&format!("{cid}:again"), payload).await;
    let settlements = harness.wait_for_settlements(2).await;

    assert!(
        settlements.iter().all(|s| s.answer == Answer::Ack),
        "{settlements:?}"
    );
    assert_eq!(
        settlements[1].message_id.as_deref(),
        Some(format!("{cid}:again").as_str())
    );
    let customer = UserId::parse("carol").expect("user id");
    let orders = harness
        .store
        .list_orders(&customer, 0, 10)
        .await
        .expect("list");
    assert_eq!(orders.total, 1);
    assert_eq!(orders.items[0].order_id, order.order_id);
    assert_eq!(orders.items[0].status, OrderStatus::Completed);
    harness.stop().await;
}

/// Reads the next FAILED announcement.
async fn next_failed(failures: &mut Deliveries) -> (Delivery, ev::OrderStatusChanged) {
    let delivery = next_delivery(failures).await;
    assert_eq!(delivery.topic, Topic::OrderFailed);
    let changed = ev::OrderStatusChanged::decode(delivery.payload.clone()).expect("decode");
    (delivery, changed)
}

#[tokio::test]
async fn a_customer_reference_that_does_not_open_fails_the_order_with_a_reason_and_is_dead_lettered_at_once()
 {
    let harness = Harness::start().await;
    let (order, mut event) = harness.accepted_order("dave").await;
    let cid = order.correlation_id;
    let stranger = UserId::parse("mallory").expect("user id");
    event.customer = Some(
        harness
            .sealer
            .seal(CorrelationId::new(), &stranger)
            .expect("seal"),
    );
    let mut failures = harness.failures().await;
    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;

    // The user sees FAILED, with a reason, on the status topic.
    let (announced, failed) = next_failed(&mut failures).await;
    assert_eq!(announced.message_id, Some(format!("{cid}:failed")));
    assert_eq!(failed.status(), pb::OrderStatus::Failed);
    assert_eq!(failed.correlation_id, cid.to_string());
    assert_eq!(failed.order_id, order.order_id.get());
    assert!(
        failed.reason.contains("customer reference"),
        "{}",
        failed.reason
    );
    // The operator finds it among the dead letters, given up on at its first delivery.
    let letter = harness.dead_letter().await;
    assert_eq!(letter.consumer, "process-svc");
    assert_eq!(letter.deliveries, 1);
    assert_eq!(letter.message_id, Some(cid.to_string()));
    assert_eq!(letter.payload, Bytes::from(event.encode_to_vec()));
    assert!(
        letter.reason.contains("customer reference"),
        "{}",
        letter.reason
    );
    assert_eq!(harness.settled(&cid.to_string()), [(1, Answer::DeadLetter)]);

    let status = harness
        .state
        .status(cid)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(status.status, OrderStatus::Failed);
    assert_eq!(
        harness.store.get_order(order.order_id).await.expect("get"),
        None
    );
    assert_eq!(
        harness
            .store
            .get_order_by_correlation(cid)
            .await
            .expect("get"),
        None
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_order_id_clash_fails_the_order_and_dead_letters_it() {
    let harness = Harness::start().await;
    let (first, first_event) = harness.accepted_order("gina").await;
    harness
        .publish(
            &first.correlation_id.to_string(),
            first_event.encode_to_vec(),
        )
        .await;
    harness.wait_until_completed(first.order_id).await;

    // Another order under the same reserved id: it can never be recorded.
    let (clash, mut clash_event) = harness.accepted_order("gina").await;
    clash_event.order_id = first.order_id.get();
    let mut failures = harness.failures().await;
    let cid = clash.correlation_id;
    harness
        .publish(&cid.to_string(), clash_event.encode_to_vec())
        .await;

    let (_, failed) = next_failed(&mut failures).await;
    assert_eq!(failed.correlation_id, cid.to_string());
    assert!(!failed.reason.is_empty());
    let letter = harness.dead_letter().await;
    assert_eq!(letter.message_id, Some(cid.to_string()));
    assert!(letter.reason.contains("order"), "{}", letter.reason);
    assert_eq!(harness.settled(&cid.to_string()), [(1, Answer::DeadLetter)]);
    let recorded = harness
        .store
        .get_order(first.order_id)
        .await
        .expect("get")
        .expect("the first order stays");
    assert_eq!(recorded.correlation_id, first.correlation_id);
    harness.stop().await;
}

#[tokio::test]
async fn an_order_for_a_product_withdrawn_after_acceptance_fails_at_once_with_a_reason_naming_it() {
    let harness = Harness::start().await;
    let (order, mut event) = harness.accepted_order("fay").await;
    let cid = order.correlation_id;
    // Accepted while AZ-220 was for sale; it is not any more (inactive in the catalog).
    let withdrawn = &mut event.lines[0];
    event.total_cents -= withdrawn.unit_price_cents * i64::from(withdrawn.quantity);
    withdrawn.product_id = "AZ-220".into();
    event.total_cents += withdrawn.unit_price_cents * i64::from(withdrawn.quantity);
    let mut failures = harness.failures().await;
    harness
        .publish(&cid.to_string(), event.encode_to_vec())
        .await;

    let (_, failed) = next_failed(&mut failures).await;
    assert_eq!(failed.correlation_id, cid.to_string());
    assert_eq!(failed.order_id, order.order_id.get());
    assert!(
        failed.reason.contains("AZ-220") && failed.reason.contains("no longer for sale"),
        "{}",
        failed.reason
    );
    let letter = harness.dead_letter().await;
    assert_eq!(letter.deliveries, 1);
    assert!(letter.reason.contains("AZ-220"), "{}", letter.reason);
    assert_eq!(harness.settled(&cid.to_string()), [(1, Answer::DeadLetter)]);
    assert_eq!(
        harness.store.get_order(order.order_id).await.expect("get"),
        None
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_at_once_and_never_retried() {
    let harness = Harness::start().await;
    harness
        .publish("garbage", vec![0xff, 0xff, 0xff, 0xff])
        .await;

    let letter = harness.dead_letter().await;
    assert_eq!(letter.message_id.as_deref(), Some("garbage"));
    assert_eq!(letter.consumer, "process-svc");
    assert_eq!(letter.deliveries, 1);
    assert_eq!(letter.topic, Some(Topic::OrderAccepted));
    assert_eq!(
        letter.payload,
        Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])
    );
    assert!(letter.reason.contains("OrderAccepted"), "{}", letter.reason);
    assert_eq!(harness.settled("garbage"), [(1, Answer::DeadLetter)]);

    // The worker goes on with the next order.
    let (order, event) = harness.accepted_order("hank").await;
    harness
        .publish(&order.correlation_id.to_string(), event.encode_to_vec())
        .await;
    harness.wait_until_completed(order.order_id).await;
    assert_eq!(harness.settled("garbage"), [(1, Answer::DeadLetter)]);
    harness.stop().await;
}

#[tokio::test]
async fn a_store_outage_longer_than_max_deliver_attempts_still_records_the_order_exactly_once() {
    let store = ScriptedStore {
        outages_left: AtomicU32::new(12),
        ..ScriptedStore::default()
    };
    let settings = Settings {
        max_deliver: 3,
        max_retry_backoff: Duration::from_millis(10),
        ..Settings::default()
    };
    let harness = Harness::start_with(store, settings).await;
    let (order, event) = harness.accepted_order("ivan").await;
    let cid = order.correlation_id.to_string();
    harness.publish(&cid, event.encode_to_vec()).await;

    harness.wait_until_completed(order.order_id).await;
    let settled = harness.wait_for_settlements(13).await;
    let retry = Answer::Nack(Duration::from_millis(10));
    let answers: Vec<Answer> = settled.iter().map(|a| a.answer).collect();
    assert_eq!(answers[..12], [retry; 12], "{settled:?}");
    assert_eq!(answers[12], Answer::Ack);
    assert_eq!(settled[12].attempt, 13);
    let customer = UserId::parse("ivan").expect("user id");
    let orders = harness
        .store
        .list_orders(&customer, 0, 10)
        .await
        .expect("list");
    assert_eq!(orders.total, 1);
    assert_eq!(harness.bus.list(10).await.expect("list"), Vec::new());
    harness.stop().await;
}

#[tokio::test]
async fn a_failure_of_unknown_cause_is_retried_then_failed_and_dead_lettered_after_max_deliver() {
    let store = ScriptedStore {
        refusals_left: AtomicU32::new(u32::MAX),
        ..ScriptedStore::default()
    };
    let settings = Settings {
        max_deliver: 3,
        max_retry_backoff: Duration::from_millis(10),
        ..Settings::default()
    };
    let harness = Harness::start_with(store, settings).await;
    let (order, event) = harness.accepted_order("jane").await;
    let cid = order.correlation_id.to_string();
    let mut failures = harness.failures().await;
    harness.publish(&cid, event.encode_to_vec()).await;

    let (_, failed) = next_failed(&mut failures).await;
    assert_eq!(failed.correlation_id, cid);
    let letter = harness.dead_letter().await;
    assert_eq!(letter.deliveries, 3);
    let retry = Answer::Nack(Duration::from_millis(10));
    assert_eq!(
        harness.settled(&cid),
        [(1, retry), (2, retry), (3, Answer::DeadLetter)]
    );
    harness.stop().await;
}

/// Starts a harness whose store holds the first order at its gate, publishes it and waits until it
/// is there, so the orders published next arrive together while the worker is busy.
async fn with_the_first_order_held(user: &str) -> (Harness, NewOrder) {
    let store = ScriptedStore {
        gate: Some(Semaphore::new(0)),
        ..ScriptedStore::default()
    };
    let harness = Harness::start_with(store, Settings::default()).await;
    let (first, event) = harness.accepted_order(user).await;
    harness
        .publish(&first.correlation_id.to_string(), event.encode_to_vec())
        .await;
    tokio::time::timeout(DEADLINE, harness.store.entered.notified())
        .await
        .expect("the first order reaches the store");
    (harness, first)
}

fn open_gate(harness: &Harness, permits: usize) {
    if let Some(gate) = &harness.store.gate {
        gate.add_permits(permits);
    }
}

#[tokio::test]
async fn orders_that_arrive_together_are_recorded_in_one_transaction() {
    let (harness, first) = with_the_first_order_held("lea").await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(harness.accepted_order("lea").await);
    }
    for (order, event) in &rest {
        harness
            .publish(&order.correlation_id.to_string(), event.encode_to_vec())
            .await;
    }
    open_gate(&harness, 2);

    for order in std::iter::once(&first).chain(rest.iter().map(|(o, _)| o)) {
        harness.wait_until_completed(order.order_id).await;
        assert_eq!(
            harness.settled(&order.correlation_id.to_string()),
            [(1, Answer::Ack)]
        );
    }
    assert_eq!(*lock(&harness.store.batches), [1, 3]);
    harness.stop().await;
}

#[tokio::test]
async fn an_order_of_a_batch_that_cannot_be_recorded_fails_alone_and_the_others_are_recorded() {
    let (harness, first) = with_the_first_order_held("max").await;
    let (good, good_event) = harness.accepted_order("max").await;
    let (bad, mut bad_event) = harness.accepted_order("max").await;
    // Accepted while AZ-220 was for sale.
    let line = &mut bad_event.lines[0];
    bad_event.total_cents -= line.unit_price_cents * i64::from(line.quantity);
    line.product_id = "AZ-220".into();
    bad_event.total_cents += line.unit_price_cents * i64::from(line.quantity);
    let (other, other_event) = harness.accepted_order("max").await;
    let mut failures = harness.failures().await;
    for (order, event) in [
        (&good, &good_event),
        (&bad, &bad_event),
        (&other, &other_event),
    ] {
        harness
            .publish(&order.correlation_id.to_string(), event.encode_to_vec())
            .await;
    }
    // The first order alone, the batch of three (refused as a whole), then each of them.
    open_gate(&harness, 5);

    let (_, failed) = next_failed(&mut failures).await;
    assert_eq!(failed.correlation_id, bad.correlation_id.to_string());
    assert!(failed.reason.contains("AZ-220"), "{}", failed.reason);
    for order in [&first, &good, &other] {
        harness.wait_until_completed(order.order_id).await;
        assert_eq!(
            harness.settled(&order.correlation_id.to_string()),
            [(1, Answer::Ack)]
        );
    }
    assert_eq!(
        harness.settled(&bad.correlation_id.to_string()),
        [(1, Answer::DeadLetter)]
    );
    assert_eq!(
        harness.store.get_order(bad.order_id).await.expect("get"),
        None
    );
    let mut batches = lock(&harness.store.batches).clone();
    batches.sort_unstable();
    assert_eq!(batches, [1, 1, 1, 1, 3]);
    harness.stop().await;
}

#[tokio::test]
async fn in_progress_signals_stop_at_the_cap_so_a_stuck_delivery_is_redelivered() {
    let store = ScriptedStore {
        gate: Some(Semaphore::new(0)),
        ..ScriptedStore::default()
    };
    let settings = Settings {
        ack_wait: Duration::from_millis(300),
        max_in_progress: Duration::from_millis(700),
        drain_deadline: Duration::from_millis(100),
        ..Settings::default()
    };
    let harness = Harness::start_with(store, settings).await;
    let (order, event) = harness.accepted_order("kim").await;
    let cid = order.correlation_id.to_string();
    harness.publish(&cid, event.encode_to_vec()).await;

    // The store never answers. Once the first delivery stops saying it is in progress, the
    // broker hands the message out again.
    harness
        .recording
        .first("a second delivery of the stuck order", DEADLINE, |a| {
            a.is_for(&cid) && a.attempt == 2
        })
        .await;
    let heartbeats = harness
        .recording
        .answers()
        .iter()
        .filter(|a| a.is_for(&cid) && a.attempt == 1 && a.answer == Answer::InProgress)
        .count();
    // One every ack_wait / 3 = 100 ms, for at most 700 ms.
    assert!(
        (1..=8).contains(&heartbeats),
        "{heartbeats} in-progress signals"
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_unavailable_database_is_retried_with_backoff_until_the_order_is_recorded() {
    let store = ScriptedStore {
        outages_left: AtomicU32::new(2),
        ..ScriptedStore::default()
    };
    let settings = Settings {
        max_retry_backoff: Duration::from_millis(30),
        ..Settings::default()
    };
    let harness = Harness::start_with(store, settings).await;
    let (order, event) = harness.accepted_order("erin").await;
    harness
        .publish(&order.correlation_id.to_string(), event.encode_to_vec())
        .await;

    harness.wait_until_completed(order.order_id).await;
    let settlements = harness.wait_for_settlements(3).await;
    let retry = Answer::Nack(Duration::from_millis(30));
    let settled: Vec<_> = settlements.into_iter().map(|s| s.answer).collect();
    assert_eq!(settled, [retry, retry, Answer::Ack]);
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_order_finish_and_acks_it() {
    let store = ScriptedStore {
        gate: Some(Semaphore::new(0)),
        ..ScriptedStore::default()
    };
    let harness = Harness::start_with(store, Settings::default()).await;
    let (order, event) = harness.accepted_order("frank").await;
    harness
        .publish(&order.correlation_id.to_string(), event.encode_to_vec())
        .await;

    tokio::time::timeout(DEADLINE, harness.store.entered.notified())
        .await
        .expect("the order reaches the store");
    harness.shutdown.cancel();
    if let Some(gate) = &harness.store.gate {
        gate.add_permits(1);
    }

    let stopped = tokio::time::timeout(DEADLINE, harness.running).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "run did not stop cleanly: {stopped:?}"
    );
    let settled: Vec<_> = settlements(&harness.recording.answers())
        .into_iter()
        .map(|s| s.answer)
        .collect();
    assert_eq!(settled, [Answer::Ack]);
    let recorded = harness
        .store
        .get_order(order.order_id)
        .await
        .expect("get")
        .expect("recorded");
    // The relay's last batch ran after the consumer drained.
    assert_eq!(recorded.status, OrderStatus::Completed);
}

#[tokio::test]
async fn the_listener_serves_the_standard_grpc_health_service() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    let harness = Harness::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", harness.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the health server");
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    harness.stop().await;
}
