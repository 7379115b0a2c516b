//! Two notify-svc replicas on real infrastructure: a private `nats-server` (both replicas in the
//! one durable `notify-svc` group) and the shared Redis (state and backplane under one unique
//! prefix). A user with a stream on each replica sees every update on both, whichever replica
//! consumed the event.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    backplane::RedisBackplane,
    bus::{
        Acknowledge, Bus, BusError, ConsumerSpec, Deliveries, Delivery, Envelope, NatsBus,
        NatsSettings, Topic,
    },
    domain::{CorrelationId, OrderId, UserId, to_timestamp},
    server::Readiness,
    state::{RedisState, WorkflowState},
};
use contoso_proto::{
    events::v1::OrderAccepted,
    notify::v1::{
        OrderStatusUpdate, WatchOrderStatusRequest, WatchOrderStatusResponse,
        order_status_service_client::OrderStatusServiceClient, watch_order_status_response::Event,
    },
    orders::v1 as orders_pb,
};
use contoso_testkit::{NatsServer, redis_url, unique_name};
use futures::StreamExt;
use notify_svc::{Deps, Settings, run};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Streaming};

const DEADLINE: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(120);
const EVENTS: i64 = 12;

/// Counts the deliveries this replica acknowledged, to see which replica consumed what.
#[derive(Debug)]
struct CountingBus {
    inner: NatsBus,
    acked: Arc<AtomicUsize>,
}

struct CountingAcker {
    delivery: Delivery,
    acked: Arc<AtomicUsize>,
}

#[async_trait]
impl Acknowledge for CountingAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.delivery.ack().await?;
        self.acked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.delivery.nack(delay).await
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.delivery.in_progress().await
    }
}

#[async_trait]
impl Bus for CountingBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.inner.publish(envelope).await
    }

    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        let acked = self.acked.clone();
        let deliveries = self.inner.consume(spec).await?;
        Ok(deliveries
            .map(move |item| {
                item.map(|delivery| {
                    Delivery::new(
                        delivery.topic,
                        delivery.message_id.clone(),
                        delivery.payload.clone(),
                        delivery.attempt,
                        Box::new(CountingAcker {
                            delivery,
                            acked: acked.clone(),
                        }),
                    )
                })
            })
            .boxed())
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

fn nats_settings(nats: &NatsServer) -> NatsSettings {
    NatsSettings {
        url: nats.url(),
        ..NatsSettings::default()
    }
}

struct Replica {
    addr: SocketAddr,
    acked: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(nats: &NatsServer, prefix: &str, auth: &Authenticator) -> Self {
        let acked = Arc::new(AtomicUsize::new(0));
        let bus = NatsBus::connect(nats_settings(nats))
            .await
            .expect("connecting to nats-server");
        let state = RedisState::connect(&redis_url(), prefix, TTL)
            .await
            .expect("connecting Redis state");
        let backplane = RedisBackplane::connect(&redis_url(), prefix)
            .await
            .expect("connecting the Redis backplane");
        let deps = Deps {
            bus: Arc::new(CountingBus {
                inner: bus,
                acked: acked.clone(),
            }),
            state: Arc::new(state),
            backplane: Arc::new(backplane),
            authenticator: Arc::new(auth.clone()),
            readiness: Readiness::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let addr = listener.local_addr().expect("the listener's address");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(listener, deps, Settings::default(), shutdown.clone()));
        Self {
            addr,
            acked,
            shutdown,
            server,
        }
    }

    async fn watch(&self, token: &str) -> Streaming<WatchOrderStatusResponse> {
        let mut client = OrderStatusServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connecting to a replica");
        let mut request = Request::new(WatchOrderStatusRequest::default());
        let value = format!("Bearer {token}")
            .parse()
            .expect("an ASCII header value");
        request.metadata_mut().insert("authorization", value);
        client
            .watch_order_status(request)
            .await
            .expect("the stream opens")
            .into_inner()
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.server).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "a replica did not stop cleanly: {result:?}"
        );
    }
}

async fn next_update(stream: &mut Streaming<WatchOrderStatusResponse>) -> OrderStatusUpdate {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let message = stream
                .message()
                .await
                .expect("the stream did not fail")
                .expect("the stream did not end");
            if let Some(Event::Update(update)) = message.event {
                return update;
            }
        }
    })
    .await
    .expect("an update within the deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_streams_on_both_replicas_receive_every_update_whichever_replica_consumed_it() {
    let nats = NatsServer::start();
    let prefix = format!("{}:", unique_name("notify"));
    let auth = Authenticator::new(&AuthArgs::default()).expect("the dev JWT settings are valid");
    let first = Replica::start(&nats, &prefix, &auth).await;
    let second = Replica::start(&nats, &prefix, &auth).await;

    let alice = UserId::parse("alice").expect("user id");
    let token = auth
        .issue(&alice, Duration::from_secs(300))
        .expect("issuing a token");
    let mut on_first = first.watch(&token).await;
    let mut on_second = second.watch(&token).await;

    let state = RedisState::connect(&redis_url(), &prefix, TTL)
        .await
        .expect("connecting Redis state");
    let publisher = NatsBus::connect(nats_settings(&nats))
        .await
        .expect("connecting the publisher");
    for order_id in 1..=EVENTS {
        let cid = CorrelationId::new();
        let order = OrderId::new(order_id).expect("a positive order id");
        state
            .record_accepted(cid, &alice, order)
            .await
            .expect("recording the order map");
        let event = OrderAccepted {
            correlation_id: cid.to_string(),
            order_id,
            accepted_at: Some(to_timestamp(chrono::Utc::now())),
            ..OrderAccepted::default()
        };
        publisher
            .publish(Envelope {
                topic: Topic::OrderAccepted,
                message_id: cid.to_string(),
                payload: event.encode_to_vec().into(),
            })
            .await
            .expect("publishing OrderAccepted");

        for stream in [&mut on_first, &mut on_second] {
            let update = next_update(stream).await;
            assert_eq!(update.correlation_id, cid.to_string());
            assert_eq!(update.status, i32::from(orders_pb::OrderStatus::Accepted));
            assert_eq!(update.order_id, order_id);
        }
    }

    // A replica acknowledges just after publishing to the backplane, so the count may trail the
    // updates by a moment.
    let all_acked = tokio::time::timeout(DEADLINE, async {
        while first.acked() + second.acked() < EVENTS as usize {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(all_acked.is_ok(), "not every event was acknowledged");
    let (by_first, by_second) = (first.acked(), second.acked());
    assert_eq!(
        by_first + by_second,
        EVENTS as usize,
        "each event is handled by one replica once"
    );
    assert!(
        by_first > 0 && by_second > 0,
        "both replicas should have consumed events: {by_first} and {by_second}"
    );
    first.stop().await;
    second.stop().await;
}
