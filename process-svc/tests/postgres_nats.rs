//! process-svc against the real servers: a fresh Postgres database, Redis under a unique key
//! prefix, and a private nats-server per test. Orders are published as accept-svc would publish
//! them, and the outcome is read back from Postgres, Redis and the stream.

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use prost::Message;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use contoso_bus::{
    Bus, ConsumerSpec, DeadLetters, Deliveries, Envelope, NatsBus, NatsSettings, Topic,
};
use contoso_domain::Product;
use contoso_domain::{CorrelationId, OrderStatus, UserId};
use contoso_platform::{
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::convert::to_timestamp;
use contoso_proto::events::v1 as ev;
use contoso_state::{RedisState, WorkflowState};
use contoso_store::{CatalogSource, OrderIdSource, OrderReader, PgStore};
use contoso_testkit::{NatsServer, TestDatabase, eventually, redis_url, unique_name};
use process_svc::{Deps, Settings};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Everything one test owns.
struct World {
    db: TestDatabase,
    nats: NatsServer,
    redis_prefix: String,
    store: Arc<PgStore>,
    sealer: CustomerSealer,
    products: Vec<Product>,
    next_order_id: std::ops::Range<i64>,
}

/// One running process-svc instance.
struct Instance {
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(DEADLINE, self.running).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "process-svc did not stop cleanly: {stopped:?}"
        );
    }
}

impl World {
    async fn create() -> Self {
        let db = TestDatabase::create().await;
        contoso_store::postgres::migrate(db.url())
            .await
            .expect("migrating the test database");
        let store = Arc::new(
            PgStore::connect(db.url(), 4)
                .await
                .expect("connecting to Postgres"),
        );
        let products = store.all_products().await.expect("catalog");
        let block = store.reserve_block().await.expect("order id block");
        Self {
            db,
            nats: NatsServer::start(),
            redis_prefix: format!("{}:", unique_name("process")),
            store,
            sealer: CustomerSealer::from_spec(DEV_SEAL_KEYS).expect("dev seal key"),
            products: products.into_iter().filter(|p| p.active).collect(),
            next_order_id: block.start..block.start + block.len,
        }
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(self.nats_bus().await)
    }

    async fn nats_bus(&self) -> NatsBus {
        let settings = NatsSettings {
            url: self.nats.url(),
            ..NatsSettings::default()
        };
        NatsBus::connect(settings)
            .await
            .expect("connecting to NATS")
    }

    async fn state(&self) -> Arc<dyn WorkflowState> {
        let state = RedisState::connect(&redis_url(), &self.redis_prefix, Duration::from_secs(300))
            .await
            .expect("connecting to Redis");
        Arc::new(state)
    }

    /// Starts process-svc on 127.0.0.1:0 with its own connections, as a separate replica would.
    async fn start(&self, settings: Settings) -> Instance {
        let store = Arc::new(
            PgStore::connect(self.db.url(), 4)
                .await
                .expect("connecting to Postgres"),
        );
        let deps = Deps {
            bus: self.bus().await,
            state: self.state().await,
            orders: store.clone(),
            outbox: store,
            sealer: self.sealer.clone(),
            readiness: Readiness::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(process_svc::run(listener, deps, settings, shutdown.clone()));
        Instance { shutdown, running }
    }

    /// An `OrderAccepted` for `user` as accept-svc publishes it: an id from a reserved block,
    /// a sealed customer and catalog prices.
    fn accepted(&mut self, user: &str) -> (CorrelationId, ev::OrderAccepted) {
        let cid = CorrelationId::new();
        let order_id = self
            .next_order_id
            .next()
            .expect("ids left in the reserved block");
        let customer = UserId::parse(user).expect("user id");
        let offset = usize::try_from(order_id).unwrap_or(0) % self.products.len();
        let lines: Vec<_> = self
            .products
            .iter()
            .cycle()
            .skip(offset)
            .take(2)
            .zip(1..)
            .map(|(product, quantity)| ev::OrderAcceptedLine {
                product_id: product.id.clone(),
                product_name: product.name.clone(),
                quantity,
                unit_price_cents: product.effective_price_cents(),
            })
            .collect();
        let total_cents = lines
            .iter()
            .map(|l| l.unit_price_cents * i64::from(l.quantity))
            .sum();
        let event = ev::OrderAccepted {
            correlation_id: cid.to_string(),
            order_id,
            customer: Some(self.sealer.seal(cid, &customer).expect("seal")),
            lines,
            total_cents,
            currency: "USD".into(),
            accepted_at: Some(to_timestamp(Utc::now())),
        };
        (cid, event)
    }

    async fn count(&self, sql: &str, cid: Option<CorrelationId>) -> i64 {
        let mut conn = AsyncPgConnection::establish(self.db.url())
            .await
            .expect("connecting to Postgres");
        let query = diesel::sql_query(sql);
        let counted = match cid {
            Some(cid) => {
                query
                    .bind::<SqlUuid, _>(cid.as_uuid())
                    .get_result::<Count>(&mut conn)
                    .await
            }
            None => query.get_result::<Count>(&mut conn).await,
        };
        counted.expect("counting rows").n
    }

    async fn orders_of(&self, cid: CorrelationId) -> i64 {
        self.count(
            "SELECT count(*) AS n FROM orders WHERE correlation_id = $1",
            Some(cid),
        )
        .await
    }

    async fn wait_until_completed(&self, cid: CorrelationId) {
        eventually(
            &format!("order {cid} to be COMPLETED"),
            DEADLINE,
            || async {
                matches!(
                    self.store.get_order_by_correlation(cid).await,
                    Ok(Some(order)) if order.status == OrderStatus::Completed
                )
            },
        )
        .await;
    }
}

async fn publish(bus: &dyn Bus, message_id: String, event: &ev::OrderAccepted) {
    let envelope = Envelope {
        topic: Topic::OrderAccepted,
        message_id,
        payload: Bytes::from(event.encode_to_vec()),
    };
    bus.publish(envelope)
        .await
        .expect("publishing OrderAccepted");
}

/// Reads `orders.processed` until every id in `expected` was seen, acking as it goes.
async fn wait_for_processed(observer: &mut Deliveries, expected: &HashSet<String>) {
    let mut seen = HashSet::new();
    let until = Instant::now() + DEADLINE;
    while !expected.is_subset(&seen) {
        let next = tokio::time::timeout_at(until, observer.next()).await;
        let delivery = next
            .expect("orders.processed within the deadline")
            .expect("stream open")
            .expect("delivery");
        assert_eq!(delivery.topic, Topic::OrderProcessed);
        let processed =
            ev::OrderProcessed::decode(delivery.payload.clone()).expect("OrderProcessed");
        assert_eq!(
            delivery.message_id,
            Some(format!("{}:processed", processed.correlation_id))
        );
        seen.insert(processed.correlation_id);
        delivery.ack().await.expect("ack");
    }
}

async fn processed_observer(bus: &dyn Bus) -> Deliveries {
    let spec = ConsumerSpec::new(unique_name("observer"), [Topic::OrderProcessed]);
    bus.consume(&spec).await.expect("observer consumer")
}

#[tokio::test]
async fn an_accepted_order_is_recorded_completed_and_published_and_its_redelivery_is_not_recorded_twice()
 {
    let mut world = World::create().await;
    // One at a time, so the marker order below is only pulled once the redelivery was settled.
    let instance = world
        .start(Settings {
            concurrency: 1,
            ..Settings::default()
        })
        .await;
    let bus = world.bus().await;
    let mut observer = processed_observer(bus.as_ref()).await;

    let (cid, event) = world.accepted("alice");
    publish(bus.as_ref(), cid.to_string(), &event).await;
    world.wait_until_completed(cid).await;
    wait_for_processed(&mut observer, &HashSet::from([cid.to_string()])).await;

    let order = world
        .store
        .get_order_by_correlation(cid)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(order.order_id.get(), event.order_id);
    assert_eq!(order.customer.as_str(), "alice");
    assert_eq!(order.total_cents, event.total_cents);
    assert_eq!(order.lines.len(), 2);
    let status = world
        .state()
        .await
        .status(cid)
        .await
        .expect("redis")
        .expect("status");
    assert_eq!(status.status, OrderStatus::Completed);

    // A different message id gets past the stream's deduplication, as a redelivery would.
    publish(bus.as_ref(), format!("{cid}:redelivered"), &event).await;
    let (marker, marker_event) = world.accepted("bob");
    publish(bus.as_ref(), marker.to_string(), &marker_event).await;
    world.wait_until_completed(marker).await;

    assert_eq!(world.orders_of(cid).await, 1);
    assert_eq!(world.orders_of(marker).await, 1);
    let after = world
        .store
        .get_order_by_correlation(cid)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(after.status, OrderStatus::Completed);
    assert_eq!(after.order_id, order.order_id);
    assert_eq!(
        world.count("SELECT count(*) AS n FROM outbox", None).await,
        2
    );
    instance.stop().await;
}

#[tokio::test]
async fn two_instances_on_one_stream_record_each_of_twenty_orders_exactly_once() {
    let mut world = World::create().await;
    let first = world.start(Settings::default()).await;
    let second = world.start(Settings::default()).await;
    let bus = world.bus().await;
    let mut observer = processed_observer(bus.as_ref()).await;

    let mut cids = Vec::new();
    for i in 0..20 {
        let (cid, event) = world.accepted(&format!("user-{}", i % 3));
        publish(bus.as_ref(), cid.to_string(), &event).await;
        cids.push(cid);
    }
    for cid in &cids {
        world.wait_until_completed(*cid).await;
    }
    let expected: HashSet<String> = cids.iter().map(ToString::to_string).collect();
    wait_for_processed(&mut observer, &expected).await;

    for cid in &cids {
        assert_eq!(world.orders_of(*cid).await, 1, "order {cid}");
    }
    assert_eq!(
        world.count("SELECT count(*) AS n FROM orders", None).await,
        20
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) AS n FROM orders WHERE status = 'COMPLETED'",
                None
            )
            .await,
        20
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
                None
            )
            .await,
        0
    );
    let state = world.state().await;
    for cid in &cids {
        let status = state.status(*cid).await.expect("redis").expect("status");
        assert_eq!(status.status, OrderStatus::Completed, "order {cid}");
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn an_undecodable_message_and_an_order_that_cannot_be_opened_land_in_the_dead_letter_stream_at_once()
 {
    let mut world = World::create().await;
    let instance = world.start(Settings::default()).await;
    let bus = world.nats_bus().await;
    let failures = ConsumerSpec::new(unique_name("failures"), [Topic::OrderFailed]);
    let mut failures = bus.consume(&failures).await.expect("failures consumer");

    bus.publish(Envelope {
        topic: Topic::OrderAccepted,
        message_id: "garbage".into(),
        payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
    })
    .await
    .expect("publishing garbage");
    let (cid, mut event) = world.accepted("mallory");
    event.customer = world.accepted("mallory").1.customer;
    publish(&bus, cid.to_string(), &event).await;

    // FAILED, with a reason, for the order that names itself.
    let delivery = tokio::time::timeout(DEADLINE, failures.next())
        .await
        .expect("orders.failed within the deadline")
        .expect("stream open")
        .expect("delivery");
    let failed = ev::OrderStatusChanged::decode(delivery.payload.clone()).expect("decode");
    assert_eq!(failed.correlation_id, cid.to_string());
    assert!(
        failed.reason.contains("customer reference"),
        "{}",
        failed.reason
    );
    delivery.ack().await.expect("ack");

    eventually("both in the dead letters", DEADLINE, || async {
        bus.list(10).await.map(|l| l.len()).unwrap_or(0) >= 2
    })
    .await;
    let letters = bus.list(10).await.expect("listing dead letters");
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter.consumer, "process-svc");
        assert_eq!(letter.deliveries, 1, "given up on at once: {letter:?}");
        assert_eq!(letter.subject, "orders.accepted");
    }
    let ids: HashSet<Option<String>> = letters.iter().map(|l| l.message_id.clone()).collect();
    assert_eq!(
        ids,
        HashSet::from([Some("garbage".to_owned()), Some(cid.to_string())])
    );
    assert_eq!(world.orders_of(cid).await, 0);
    let status = world
        .state()
        .await
        .status(cid)
        .await
        .expect("redis")
        .map(|s| s.status);
    assert_eq!(status, Some(OrderStatus::Failed));
    instance.stop().await;
}
