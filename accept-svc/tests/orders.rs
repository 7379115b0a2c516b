//! OrderService over a real tonic server on port 0, wired to the in-memory adapters (and to a bus
//! that refuses to confirm, for the rollback path).

mod common;

use common::{as_user, user};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use contoso_bus::{Bus, BusError, ConsumerSpec, Deliveries, Envelope, MemoryBus, Topic};
use contoso_domain::{CorrelationId, OrderId, OrderStatus};
use contoso_domain::{NewOrder, OrderLine, Quantity};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::{
    events::v1::OrderAccepted,
    orders::v1::{
        self as pb, GetOrderRequest, GetOrderStatusRequest, OrderLineRequest, PlaceOrderRequest,
        order_service_client::OrderServiceClient,
    },
};
use contoso_state::{IntakeState, MemoryState, StatusReader, StatusWriter};
use contoso_store::{
    IdBlock, MemoryStore, OrderIdSource, OrderReader, OrderWriter, Outbox, StoreError,
};
use futures::StreamExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, transport::Channel};

/// Order lines as (product id, quantity).
type Lines<'a> = &'a [(&'a str, i32)];

struct Harness {
    client: OrderServiceClient<Channel>,
    auth: Authenticator,
    state: Arc<MemoryState>,
    store: Arc<MemoryStore>,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(bus: Arc<dyn Bus>) -> Harness {
    start_with(bus, Options::default()).await
}

/// What a test may change in the harness.
struct Options {
    state: MemoryState,
    /// The order id source; the store's own when `None`.
    ids: Option<Arc<dyn OrderIdSource>>,
    id_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            state: MemoryState::new(Duration::from_secs(60)),
            ids: None,
            id_wait: Duration::from_secs(2),
        }
    }
}

async fn start_with(bus: Arc<dyn Bus>, options: Options) -> Harness {
    let auth = Authenticator::new(&AuthArgs::dev()).unwrap();
    let state = Arc::new(options.state);
    let store = Arc::new(MemoryStore::new().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let deps = accept_svc::Deps {
        catalog: store.clone(),
        ids: options.ids.unwrap_or_else(|| store.clone()),
        orders: store.clone(),
        entitlements: store.clone(),
        state: state.clone(),
        bus: bus.clone(),
        auth: Arc::new(auth.clone()),
        sealer: CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap(),
        readiness: Readiness::new(),
    };
    let settings = accept_svc::Settings {
        id_wait: options.id_wait,
        ..Default::default()
    };
    tokio::spawn(accept_svc::run(listener, deps, settings, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    Harness {
        client: OrderServiceClient::new(channel),
        auth,
        state,
        store,
        bus,
        shutdown,
    }
}

impl Harness {
    fn request<T>(&self, who: &str, message: T) -> Request<T> {
        as_user(&self.auth, who, message)
    }

    fn place_request(
        &self,
        who: &str,
        lines: &[(&str, i32)],
        key: &str,
    ) -> Request<PlaceOrderRequest> {
        let req = PlaceOrderRequest {
            lines: lines
                .iter()
                .map(|(id, q)| OrderLineRequest {
                    product_id: (*id).into(),
                    quantity: *q,
                })
                .collect(),
            idempotency_key: key.into(),
        };
        self.request(who, req)
    }

    async fn place(
        &self,
        who: &str,
        lines: &[(&str, i32)],
        key: &str,
    ) -> Result<pb::Order, tonic::Status> {
        let response = self
            .client
            .clone()
            .place_order(self.place_request(who, lines, key))
            .await?;
        Ok(response.into_inner().order.unwrap())
    }

    /// Starts a `PlaceOrder` in a task of its own, so the test can drop it (the client gives up,
    /// and the server drops the handler with the stream).
    fn spawn_place(
        &self,
        who: &str,
        lines: &[(&str, i32)],
        key: &str,
    ) -> tokio::task::JoinHandle<Result<pb::Order, tonic::Status>> {
        let mut client = self.client.clone();
        let request = self.place_request(who, lines, key);
        tokio::spawn(async move {
            let response = client.place_order(request).await?;
            Ok(response.into_inner().order.unwrap())
        })
    }
}

/// What the stream holds so far, in order: every `OrderAccepted` a new consumer group reads, up to
/// and including that of a keyless marker order of alice's placed now (the last element).
async fn published_events(h: &Harness) -> Vec<OrderAccepted> {
    let marker = h.place("alice", &[("CKA", 1)], "").await.unwrap();
    let mut deliveries = h
        .bus
        .consume(&ConsumerSpec::new("test", [Topic::OrderAccepted]))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let event = next_accepted(&mut deliveries).await;
        let last = event.correlation_id == marker.correlation_id;
        events.push(event);
        if last {
            return events;
        }
    }
}

/// The correlation ids of `events`.
fn cids(events: &[OrderAccepted]) -> Vec<&str> {
    events.iter().map(|e| e.correlation_id.as_str()).collect()
}

async fn next_accepted(deliveries: &mut Deliveries) -> OrderAccepted {
    let delivery = tokio::time::timeout(Duration::from_secs(5), deliveries.next())
        .await
        .expect("an OrderAccepted within 5 s")
        .unwrap()
        .unwrap();
    delivery.ack().await.unwrap();
    OrderAccepted::decode(delivery.payload.clone()).unwrap()
}

#[tokio::test]
async fn place_order_answers_with_the_whole_accepted_order_and_publishes_a_sealed_event() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let order = h
        .place("alice", &[("AZ-700", 2), ("SAA-C03", 1)], "")
        .await
        .unwrap();

    assert!(order.order_id > 0);
    assert_eq!(order.status, pb::OrderStatus::Accepted as i32);
    assert!(order.created_at.is_some());
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.lines[0].product_id, "AZ-700");
    assert!(!order.lines[0].product_name.is_empty());
    assert_eq!(
        order.total_cents,
        order.lines.iter().map(|l| l.line_total_cents).sum::<i64>()
    );

    let mut deliveries = h
        .bus
        .consume(&ConsumerSpec::new("test", [Topic::OrderAccepted]))
        .await
        .unwrap();
    let event = next_accepted(&mut deliveries).await;
    assert_eq!(event.correlation_id, order.correlation_id);
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.total_cents, order.total_cents);
    let cid: CorrelationId = order.correlation_id.parse().unwrap();
    let sealed = event.customer.unwrap();
    assert!(
        !sealed.ciphertext.windows(5).any(|w| w == b"alice"),
        "the event must not carry a readable user id"
    );
    let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap();
    assert_eq!(sealer.open(cid, &sealed).unwrap(), user("alice"));

    assert_eq!(h.state.owner(cid).await.unwrap(), Some(user("alice")));
    assert_eq!(
        h.state.status(cid).await.unwrap().unwrap().status,
        OrderStatus::Accepted
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_behind() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let cases: [(Lines, Code, &str); 4] = [
        (&[], Code::InvalidArgument, "lines"),
        (&[("AZ-700", 0)], Code::InvalidArgument, "lines[0].quantity"),
        (
            &[("AZ-700", 101)],
            Code::InvalidArgument,
            "lines[0].quantity",
        ),
        (&[("NOPE-1", 1)], Code::NotFound, "lines[0].product_id"),
    ];
    for (lines, code, field) in cases {
        let err = h.place("alice", lines, "").await.unwrap_err();
        assert_eq!(err.code(), code, "{lines:?}");
        assert!(
            err.message().contains(field),
            "{lines:?}: {}",
            err.message()
        );
    }
    let many: Vec<(&str, i32)> = vec![("AZ-700", 1); 51];
    assert_eq!(
        h.place("alice", &many, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Nothing was published: the only message the stream holds is the marker order's.
    assert_eq!(published_events(&h).await.len(), 1);
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_are_unauthenticated() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let req = || PlaceOrderRequest {
        lines: vec![OrderLineRequest {
            product_id: "AZ-700".into(),
            quantity: 1,
        }],
        idempotency_key: String::new(),
    };

    let err = h
        .client
        .clone()
        .place_order(Request::new(req()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let forger = Authenticator::new(&AuthArgs {
        secret: Some("x".repeat(40)),
        ..AuthArgs::dev()
    })
    .unwrap();
    let forged = forger
        .issue(&user("alice"), Duration::from_secs(60))
        .unwrap();
    for token in [forged.as_str(), "not.a.jwt"] {
        let mut request = Request::new(req());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let err = h.client.clone().place_order(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token}");
    }
}

/// A broker that never confirms a publish (and stores nothing).
#[derive(Debug, Default)]
struct RefusingBus {
    attempts: AtomicUsize,
}

#[async_trait]
impl Bus for RefusingBus {
    async fn publish(&self, _: Envelope) -> Result<(), BusError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(BusError::not_confirmed("publishing", "no ack"))
    }
    async fn consume(&self, _: &ConsumerSpec) -> Result<Deliveries, BusError> {
        Err(BusError::unavailable("consuming", "refusing"))
    }
    async fn is_ready(&self) -> bool {
        false
    }
}

/// Issue 8 changed this: an order whose publish was not confirmed may be in the stream, so its
/// workflow keys stay (with their TTL) instead of being removed.
#[tokio::test]
async fn an_unconfirmed_publish_is_retried_then_unavailable_and_keeps_the_workflow_keys() {
    let bus = Arc::new(RefusingBus::default());
    let h = start(bus.clone()).await;
    let err = h.place("alice", &[("AZ-700", 1)], "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        bus.attempts.load(Ordering::SeqCst),
        3,
        "published three times within the request"
    );
    let kept = h.state.inflight_orders(&user("alice")).await.unwrap();
    assert_eq!(kept.len(), 1, "the in-flight entry is kept");
    let order = pb::Order::decode(kept[0].snapshot.as_slice()).unwrap();
    let cid: CorrelationId = order.correlation_id.parse().unwrap();
    assert_eq!(h.state.owner(cid).await.unwrap(), Some(user("alice")));
    assert_eq!(
        h.state.status(cid).await.unwrap().unwrap().status,
        OrderStatus::Accepted
    );
}

/// A broker that stores every message but loses the confirmation of the first `lose` publishes,
/// as a timeout would.
#[derive(Debug)]
struct LostAckBus {
    inner: MemoryBus,
    lose: AtomicUsize,
    /// The message id of every publish, in order.
    published: std::sync::Mutex<Vec<String>>,
}

impl LostAckBus {
    fn losing(lose: usize) -> Self {
        Self {
            inner: MemoryBus::new(),
            lose: AtomicUsize::new(lose),
            published: std::sync::Mutex::default(),
        }
    }

    fn published(&self) -> Vec<String> {
        self.published.lock().unwrap().clone()
    }
}

#[async_trait]
impl Bus for LostAckBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.published
            .lock()
            .unwrap()
            .push(envelope.message_id.clone());
        self.inner.publish(envelope).await?;
        let lost = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Err(BusError::not_confirmed("publishing", "timed out"));
        }
        Ok(())
    }
    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        self.inner.consume(spec).await
    }
    async fn is_ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_lost_ack_is_published_again_with_the_same_message_id_within_the_request() {
    let bus = Arc::new(LostAckBus::losing(2));
    let h = start(bus.clone()).await;
    let placed = h.place("alice", &[("AZ-700", 1)], "").await.unwrap();

    assert_eq!(
        bus.published(),
        vec![placed.correlation_id.clone(); 3],
        "three attempts, one message id"
    );
    let events = published_events(&h).await;
    assert_eq!(
        cids(&events[..events.len() - 1]),
        [placed.correlation_id.as_str()],
        "the stream holds the order once"
    );
}

#[tokio::test]
async fn an_order_stored_without_a_confirmation_keeps_its_owner_so_its_updates_can_be_routed() {
    // Every attempt of the request loses its ack; the message is in the stream all the same.
    let bus = Arc::new(LostAckBus::losing(3));
    let h = start(bus.clone()).await;
    let err = h.place("alice", &[("AZ-700", 1)], "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    // process-svc consumes it and moves it on; notify-svc routes its updates by the owner map.
    let mut deliveries = h
        .bus
        .consume(&ConsumerSpec::new("test", [Topic::OrderAccepted]))
        .await
        .unwrap();
    let event = next_accepted(&mut deliveries).await;
    let cid: CorrelationId = event.correlation_id.parse().unwrap();
    assert!(
        h.state
            .advance(cid, OrderStatus::Processing, None)
            .await
            .unwrap()
    );
    assert_eq!(
        h.state.owner(cid).await.unwrap(),
        Some(user("alice")),
        "the owner map survives the unconfirmed publish"
    );
    let record = h.state.status(cid).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.order_id.map(OrderId::get)),
        (OrderStatus::Processing, Some(event.order_id))
    );
    assert_eq!(
        h.get("alice", event.order_id).await.unwrap().correlation_id,
        event.correlation_id,
        "its owner reads it while it is in flight"
    );
}

#[tokio::test]
async fn a_retry_after_an_unconfirmed_publish_republishes_the_same_order_once() {
    // The first request loses the ack of each of its attempts.
    let bus = Arc::new(LostAckBus::losing(3));
    let h = start(bus.clone()).await;
    let err = h
        .place("alice", &[("AZ-700", 1)], "cart-7")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let first_id = bus.published()[0].clone();

    let retried = h.place("alice", &[("AZ-700", 1)], "cart-7").await.unwrap();
    let again = h.place("alice", &[("AZ-700", 1)], "cart-7").await.unwrap();
    assert_eq!(retried, again);
    assert_eq!(retried.correlation_id, first_id);

    // The lost first publish and the retry carried one message id: one event, for the retried order.
    let events = published_events(&h).await;
    let [first, marker] = events.as_slice() else {
        panic!("one event besides the marker's: {events:?}");
    };
    assert_eq!(
        (first.correlation_id.as_str(), first.order_id),
        (retried.correlation_id.as_str(), retried.order_id)
    );
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!(ids(&listed), vec![marker.order_id, retried.order_id]);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_first_order() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let first = h.place("alice", &[("AZ-700", 1)], "cart-42").await.unwrap();
    let again = h.place("alice", &[("AZ-700", 1)], "cart-42").await.unwrap();
    assert_eq!(first, again);
    let other_user = h.place("bob", &[("AZ-700", 1)], "cart-42").await.unwrap();
    assert_ne!(other_user.correlation_id, first.correlation_id);
}

#[tokio::test]
async fn another_users_order_and_status_are_not_found_as_if_missing() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let order = h.place("alice", &[("AZ-700", 1)], "").await.unwrap();
    let status = h
        .client
        .clone()
        .get_order_status(h.request(
            "bob",
            GetOrderStatusRequest {
                correlation_id: order.correlation_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let cid: CorrelationId = order.correlation_id.parse().unwrap();
    let order_id = OrderId::new(order.order_id).unwrap();
    h.store
        .record_order(
            &NewOrder {
                order_id,
                correlation_id: cid,
                customer: user("alice"),
                lines: vec![OrderLine {
                    product_id: "AZ-700".into(),
                    product_name: "x".into(),
                    quantity: Quantity::try_from(1).unwrap(),
                    unit_price_cents: 100,
                }],
                total_cents: 100,
                currency: "USD".into(),
                accepted_at: chrono::Utc::now(),
            },
            b"event",
        )
        .await
        .unwrap();
    let err = h
        .client
        .clone()
        .get_order(h.request(
            "bob",
            GetOrderRequest {
                order_id: order.order_id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mine = h
        .client
        .clone()
        .get_order(h.request(
            "alice",
            GetOrderRequest {
                order_id: order.order_id,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        mine.into_inner().order.unwrap().correlation_id,
        order.correlation_id
    );
    let err = h
        .client
        .clone()
        .get_order(h.request("alice", GetOrderRequest { order_id: -1 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

// ---- read-your-writes, deleting in flight, idempotency conflicts ----------------------------

impl Harness {
    async fn get(&self, who: &str, order_id: i64) -> Result<pb::Order, tonic::Status> {
        let response = self
            .client
            .clone()
            .get_order(self.request(who, GetOrderRequest { order_id }))
            .await?;
        Ok(response.into_inner().order.unwrap())
    }

    async fn list(
        &self,
        who: &str,
        offset: i32,
        size: i32,
    ) -> Result<pb::ListOrdersResponse, tonic::Status> {
        let response = self
            .client
            .clone()
            .list_orders(self.request(who, pb::ListOrdersRequest { offset, size }))
            .await?;
        Ok(response.into_inner())
    }

    async fn delete(&self, who: &str, order_id: i64) -> Result<(), tonic::Status> {
        self.client
            .clone()
            .delete_order(self.request(who, pb::DeleteOrderRequest { order_id }))
            .await?;
        Ok(())
    }

    /// Records a placed order in the store, as process-svc would.
    async fn record(&self, who: &str, order: &pb::Order) {
        let new_order = NewOrder {
            order_id: OrderId::new(order.order_id).unwrap(),
            correlation_id: order.correlation_id.parse().unwrap(),
            customer: user(who),
            lines: order
                .lines
                .iter()
                .map(|l| OrderLine {
                    product_id: l.product_id.clone(),
                    product_name: l.product_name.clone(),
                    quantity: Quantity::try_from(l.quantity).unwrap(),
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents: order.total_cents,
            currency: order.currency.clone(),
            accepted_at: contoso_proto::convert::from_timestamp(order.created_at.as_ref().unwrap())
                .unwrap(),
        };
        self.store.record_order(&new_order, b"event").await.unwrap();
    }
}

fn ids(response: &pb::ListOrdersResponse) -> Vec<i64> {
    response.orders.iter().map(|o| o.order_id).collect()
}

#[tokio::test]
async fn a_placed_order_is_readable_and_listed_at_once_and_once_recorded_listed_once() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let placed = h
        .place("alice", &[("AZ-700", 2), ("SAA-C03", 1)], "")
        .await
        .unwrap();

    // Nothing processes it: it is only in the workflow state.
    assert_eq!(h.get("alice", placed.order_id).await.unwrap(), placed);
    let listed = h.list("alice", 0, 0).await.unwrap();
    assert_eq!(listed.orders, std::slice::from_ref(&placed));
    assert_eq!((listed.total, listed.offset, listed.size), (1, 0, 20));
    assert_eq!(listed.orders[0].status, pb::OrderStatus::Accepted as i32);

    // Another user neither reads nor lists it.
    let err = h.get("bob", placed.order_id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let bobs = h.list("bob", 0, 0).await.unwrap();
    assert_eq!((bobs.orders.len(), bobs.total), (0, 0));

    // The workflow status shows through while it is in flight.
    let cid: CorrelationId = placed.correlation_id.parse().unwrap();
    assert!(
        h.state
            .advance(cid, OrderStatus::Processing, None)
            .await
            .unwrap()
    );
    let processing = pb::OrderStatus::Processing as i32;
    assert_eq!(
        h.get("alice", placed.order_id).await.unwrap().status,
        processing
    );
    assert_eq!(
        h.list("alice", 0, 10).await.unwrap().orders[0].status,
        processing
    );

    // Recorded: listed once, from the store, and the in-flight entry is pruned.
    h.record("alice", &placed).await;
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!((ids(&listed), listed.total), (vec![placed.order_id], 1));
    assert_eq!(
        pb::Order {
            status: pb::OrderStatus::Accepted as i32,
            ..listed.orders[0].clone()
        },
        placed,
        "the recorded order reads as it was accepted"
    );
    assert_eq!(h.state.inflight_count(), 0, "recorded entries are pruned");
    assert_eq!(
        h.get("alice", placed.order_id).await.unwrap().status,
        processing
    );

    // A newer order in flight is listed before the recorded one.
    let newer = h.place("alice", &[("AZ-104", 1)], "").await.unwrap();
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!(
        (ids(&listed), listed.total),
        (vec![newer.order_id, placed.order_id], 2)
    );
}

#[tokio::test]
async fn list_pages_over_recorded_and_in_flight_orders_newest_first() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let mut placed = Vec::new();
    for product in ["AZ-700", "AZ-104", "AZ-900", "SAA-C03", "CKA"] {
        placed.push(h.place("alice", &[(product, 1)], "").await.unwrap());
    }
    // Every other one recorded, in reverse order of acceptance.
    for order in placed.iter().rev().step_by(2) {
        h.record("alice", order).await;
    }
    let newest_first: Vec<i64> = placed.iter().rev().map(|o| o.order_id).collect();

    let all = h.list("alice", 0, 10).await.unwrap();
    assert_eq!((ids(&all), all.total), (newest_first.clone(), 5));
    for offset in 0..6 {
        let page = h.list("alice", offset, 2).await.unwrap();
        let expected: Vec<i64> = newest_first
            .iter()
            .skip(offset as usize)
            .take(2)
            .copied()
            .collect();
        assert_eq!(
            (ids(&page), page.total, page.offset, page.size),
            (expected, 5, offset, 2),
            "offset {offset}"
        );
    }
}

#[tokio::test]
async fn deleting_an_order_in_flight_is_refused_until_it_is_recorded() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let placed = h.place("alice", &[("AZ-700", 1)], "").await.unwrap();

    let err = h.delete("alice", placed.order_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "order {} is still being processed; delete it once it is completed",
            placed.order_id
        )
    );
    assert_eq!(
        h.get("alice", placed.order_id).await.unwrap(),
        placed,
        "a refused delete loses nothing"
    );
    assert_eq!(
        h.delete("bob", placed.order_id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        h.delete("alice", placed.order_id + 1000)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    h.record("alice", &placed).await;
    h.delete("alice", placed.order_id).await.unwrap();
    assert_eq!(
        h.get("alice", placed.order_id).await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!((listed.orders.len(), listed.total), (0, 0));
    assert_eq!(
        h.delete("alice", placed.order_id).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// Issue 8 changed this: an order refused with UNAVAILABLE may still have reached the stream, so
/// it stays readable by its owner (as ACCEPTED) until it is recorded or its keys expire.
#[tokio::test]
async fn a_failed_intake_stays_readable_by_its_owner_only() {
    let h = start(Arc::new(RefusingBus::default())).await;
    let err = h.place("alice", &[("AZ-700", 1)], "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(h.state.inflight_count(), 1);
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!((listed.orders.len(), listed.total), (1, 1));
    assert_eq!(listed.orders[0].status, pb::OrderStatus::Accepted as i32);
    let bobs = h.list("bob", 0, 10).await.unwrap();
    assert_eq!((bobs.orders.len(), bobs.total), (0, 0));
}

#[tokio::test]
async fn the_same_key_and_the_same_lines_answer_the_first_order_and_publish_once() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let first = h
        .place("alice", &[("AZ-700", 1), ("AZ-104", 2)], "cart-1")
        .await
        .unwrap();
    let again = h
        .place("alice", &[("az-700", 1), ("AZ-104", 2)], "cart-1")
        .await
        .unwrap();
    assert_eq!(first, again);

    let events = published_events(&h).await;
    assert_eq!(
        cids(&events[..events.len() - 1]),
        [first.correlation_id.as_str()],
        "the retry published nothing"
    );
}

#[tokio::test]
async fn the_same_key_with_other_lines_is_already_exists_and_publishes_nothing() {
    let h = start(Arc::new(MemoryBus::new())).await;
    let first = h
        .place("alice", &[("AZ-700", 1), ("AZ-104", 2)], "cart-2")
        .await
        .unwrap();
    let others: [Lines; 4] = [
        &[("AZ-700", 2), ("AZ-104", 2)],
        &[("AZ-104", 2), ("AZ-700", 1)],
        &[("AZ-700", 1)],
        &[("AZ-700", 1), ("AZ-104", 2), ("CKA", 1)],
    ];
    for lines in others {
        let err = h.place("alice", lines, "cart-2").await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{lines:?}");
        assert!(
            err.message().contains("\"cart-2\"")
                && err.message().contains("already used for a different order"),
            "{}",
            err.message()
        );
    }
    // The key still answers its own order, and bob's key of the same name is his own.
    assert_eq!(
        h.place("alice", &[("AZ-700", 1), ("AZ-104", 2)], "cart-2")
            .await
            .unwrap(),
        first
    );
    let bobs = h.place("bob", &[("CKA", 1)], "cart-2").await.unwrap();

    let events = published_events(&h).await;
    let marker = events.last().expect("the marker's event");
    assert_eq!(
        cids(&events[..events.len() - 1]),
        [first.correlation_id.as_str(), bobs.correlation_id.as_str()]
    );
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!(
        (ids(&listed), listed.total),
        (vec![marker.order_id, first.order_id], 2)
    );
}

// ---- interrupted intakes (issue 8) ----------------------------------------------------------

/// Where a [`StallingBus`] publish is.
#[derive(Debug, Clone, PartialEq)]
enum Stall {
    Idle,
    /// The message (this id) is stored, and the confirmation never comes.
    Stalled(String),
    /// The stalled publish was dropped with its request.
    Dropped(String),
}

/// A broker that stores the first message it is given and then never confirms it, as a broker
/// whose ack is lost while the caller is stopped (process killed, grpc-timeout, drain deadline).
#[derive(Debug)]
struct StallingBus {
    inner: MemoryBus,
    stall_next: AtomicBool,
    stall: tokio::sync::watch::Sender<Stall>,
    publishes: AtomicUsize,
}

impl StallingBus {
    fn new() -> Self {
        Self {
            inner: MemoryBus::new(),
            stall_next: AtomicBool::new(true),
            stall: tokio::sync::watch::channel(Stall::Idle).0,
            publishes: AtomicUsize::new(0),
        }
    }

    /// Waits until the stall is where `reached` says, and returns it.
    async fn wait_for(&self, what: &str, reached: impl Fn(&Stall) -> bool) -> Stall {
        let mut rx = self.stall.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(reached))
            .await
            .unwrap_or_else(|_| panic!("{what} within 5 s"))
            .unwrap()
            .clone()
    }
}

/// Marks the stalled publish as dropped when its future goes away.
struct DropMark<'a>(&'a tokio::sync::watch::Sender<Stall>, String);

impl Drop for DropMark<'_> {
    fn drop(&mut self) {
        self.0.send_replace(Stall::Dropped(self.1.clone()));
    }
}

#[async_trait]
impl Bus for StallingBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        let id = envelope.message_id.clone();
        self.inner.publish(envelope).await?;
        if self.stall_next.swap(false, Ordering::SeqCst) {
            let _mark = DropMark(&self.stall, id.clone());
            self.stall.send_replace(Stall::Stalled(id));
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        self.inner.consume(spec).await
    }
    async fn is_ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_retry_after_the_first_request_stopped_mid_publish_answers_the_same_single_order() {
    let bus = Arc::new(StallingBus::new());
    // A claim that lapses quickly: the retry below then runs well past it.
    let h = start_with(
        bus.clone(),
        Options {
            state: MemoryState::new(Duration::from_secs(60))
                .with_claim_ttl(Duration::from_millis(300)),
            ..Options::default()
        },
    )
    .await;
    let lines = [("AZ-700", 1), ("AZ-104", 2)];

    let first = h.spawn_place("alice", &lines, "cart-stop");
    let Stall::Stalled(published) = bus
        .wait_for("the first publish", |s| *s != Stall::Idle)
        .await
    else {
        panic!("the first publish was not stalled");
    };
    first.abort();
    bus.wait_for("the first request to be dropped", |s| {
        matches!(s, Stall::Dropped(_))
    })
    .await;

    // Once the first request is gone, a retry succeeds: the same order, published once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let retried = loop {
        match h.place("alice", &lines, "cart-stop").await {
            Err(e) if e.code() == Code::Aborted && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            other => break other.expect("the retry after the first request was dropped"),
        }
    };
    assert_eq!(
        retried.correlation_id, published,
        "the retry answers the order the stopped request published"
    );
    assert_eq!(
        h.place("alice", &lines, "cart-stop").await.unwrap(),
        retried
    );
    let err = h
        .place("alice", &[("AZ-700", 1)], "cart-stop")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "other lines under the key");

    let events = published_events(&h).await;
    let [event, marker] = events.as_slice() else {
        panic!("one order under the key, published once: {events:?}");
    };
    assert_eq!(
        (event.correlation_id.as_str(), event.order_id),
        (retried.correlation_id.as_str(), retried.order_id)
    );
    let cid: CorrelationId = retried.correlation_id.parse().unwrap();
    assert_eq!(h.state.owner(cid).await.unwrap(), Some(user("alice")));
    let listed = h.list("alice", 0, 10).await.unwrap();
    assert_eq!(
        ids(&listed),
        vec![marker.order_id, retried.order_id],
        "one order listed for the key"
    );
}

#[tokio::test]
async fn a_retry_of_an_order_already_recorded_answers_it_without_publishing_again() {
    let bus = Arc::new(StallingBus::new());
    let h = start(bus.clone()).await;
    let first = h.spawn_place("alice", &[("AZ-700", 1)], "cart-late");
    bus.wait_for("the first publish", |s| *s != Stall::Idle)
        .await;
    first.abort();
    bus.wait_for("the first request to be dropped", |s| {
        matches!(s, Stall::Dropped(_))
    })
    .await;
    // process-svc records and completes the order before the client retries.
    let placed = h.list("alice", 0, 10).await.unwrap().orders[0].clone();
    h.record("alice", &placed).await;
    let cid: CorrelationId = placed.correlation_id.parse().unwrap();
    assert!(
        h.state
            .advance(cid, OrderStatus::Completed, None)
            .await
            .unwrap()
    );
    let published = bus.publishes.load(Ordering::SeqCst);

    let retried = h
        .place("alice", &[("AZ-700", 1)], "cart-late")
        .await
        .unwrap();
    assert_eq!(retried, placed, "the order as it was accepted");
    assert_eq!(
        bus.publishes.load(Ordering::SeqCst),
        published,
        "a recorded order is not published again"
    );
    assert_eq!(
        h.state.status(cid).await.unwrap().unwrap().status,
        OrderStatus::Completed
    );
}

/// An id source that hands out nothing until it is opened.
#[derive(Debug)]
struct GatedIds {
    inner: MemoryStore,
    open: tokio::sync::watch::Sender<bool>,
}

#[async_trait]
impl OrderIdSource for GatedIds {
    async fn reserve_block(&self) -> Result<IdBlock, StoreError> {
        let mut open = self.open.subscribe();
        // The sender lives as long as `self`.
        let _ = open.wait_for(|open| *open).await;
        self.inner.reserve_block().await
    }
}

#[tokio::test]
async fn a_request_dropped_before_its_order_exists_frees_its_key_at_once() {
    let ids = Arc::new(GatedIds {
        inner: MemoryStore::new().unwrap(),
        open: tokio::sync::watch::channel(false).0,
    });
    let h = start_with(
        Arc::new(MemoryBus::new()),
        Options {
            ids: Some(ids.clone()),
            id_wait: Duration::from_secs(60),
            ..Options::default()
        },
    )
    .await;

    let first = h.spawn_place("alice", &[("AZ-700", 1)], "cart-early");
    wait_until("the key to be claimed", || h.state.entry_count() == 1).await;
    first.abort();
    wait_until("the dropped request's claim to be released", || {
        h.state.entry_count() == 0
    })
    .await;

    ids.open.send_replace(true);
    let placed = h
        .place("alice", &[("AZ-700", 1)], "cart-early")
        .await
        .unwrap();
    assert_eq!(
        h.place("alice", &[("AZ-700", 1)], "cart-early")
            .await
            .unwrap(),
        placed
    );
}

/// Polls `condition` until it holds, failing after 5 s.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 5 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of(
    h: &Harness,
    who: &str,
    cid: &str,
) -> Result<pb::GetOrderStatusResponse, tonic::Status> {
    h.client
        .clone()
        .get_order_status(h.request(
            who,
            GetOrderStatusRequest {
                correlation_id: cid.to_owned(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_status_comes_from_the_order_history_when_the_workflow_state_lags_or_the_order_is_deleted()
 {
    let h = start(Arc::new(MemoryBus::new())).await;
    let order = h.place("alice", &[("AZ-700", 1)], "").await.unwrap();
    let cid = order.correlation_id.clone();
    assert_eq!(
        status_of(&h, "alice", &cid).await.unwrap().status,
        pb::OrderStatus::Accepted as i32
    );

    // Recorded and completed in Postgres while the workflow state still says ACCEPTED (its
    // writes failed): the further status wins.
    h.record("alice", &order).await;
    let leased = h
        .store
        .lease_pending(10, Duration::from_secs(60))
        .await
        .unwrap();
    h.store.complete(&leased[..1]).await.unwrap();
    let answer = status_of(&h, "alice", &cid).await.unwrap();
    assert_eq!(answer.status, pb::OrderStatus::Completed as i32);
    assert_eq!(answer.order_id, order.order_id);

    // A soft-deleted order is gone for its owner, whatever the workflow state says.
    let deleted = h
        .store
        .soft_delete(&user("alice"), OrderId::new(order.order_id).unwrap())
        .await
        .unwrap();
    assert!(deleted);
    let gone = status_of(&h, "alice", &cid).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}
