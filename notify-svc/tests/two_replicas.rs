//! Two notify-svc replicas on real infrastructure: a private `nats-server` (both replicas in the
//! one durable `notify-svc` group) and the shared Redis (state and backplane under one unique
//! prefix). A user with a stream on each replica sees every update on both, whichever replica
//! consumed the event.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use contoso_backplane::RedisBackplane;
use contoso_bus::{
    Bus, Envelope, NatsBus, NatsSettings, Topic,
    recording::{Answer, RecordingBus},
};
use contoso_domain::{CorrelationId, OrderId, UserId};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::convert::to_timestamp;
use contoso_proto::{
    events::v1::OrderAccepted,
    notify::v1::{
        OrderStatusUpdate, WatchOrderStatusRequest, WatchOrderStatusResponse,
        order_status_service_client::OrderStatusServiceClient, watch_order_status_response::Event,
    },
    orders::v1 as orders_pb,
};
use contoso_state::{IntakeState, RedisState};
use contoso_testkit::{NatsServer, eventually, redis_url, unique_name};
use notify_svc::{Deps, Settings, run};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Streaming};

const DEADLINE: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(120);
const EVENTS: i64 = 12;

fn nats_settings(nats: &NatsServer) -> NatsSettings {
    NatsSettings {
        url: nats.url(),
        ..NatsSettings::default()
    }
}

struct Replica {
    addr: SocketAddr,
    /// Shows which deliveries this replica acknowledged, to see which replica consumed what.
    bus: RecordingBus,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(nats: &NatsServer, prefix: &str, auth: &Authenticator) -> Self {
        let bus = NatsBus::connect(nats_settings(nats))
            .await
            .expect("connecting to nats-server");
        let bus = RecordingBus::new(Arc::new(bus));
        let state = RedisState::connect(&redis_url(), prefix, TTL)
            .await
            .expect("connecting Redis state");
        let backplane = RedisBackplane::connect(&redis_url(), prefix)
            .await
            .expect("connecting the Redis backplane");
        let state = Arc::new(state);
        let deps = Deps {
            bus: Arc::new(bus.clone()),
            state: state.clone(),
            status_writer: state,
            backplane: Arc::new(backplane),
            sealer: CustomerSealer::from_spec(DEV_SEAL_KEYS).expect("the dev seal key"),
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
            bus,
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
        let answers = self.bus.answers();
        answers.iter().filter(|a| a.answer == Answer::Ack).count()
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
    let auth = Authenticator::new(&AuthArgs::dev()).expect("the dev JWT settings are valid");
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
            .record_accepted(cid, &alice, order, &[])
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
    eventually("every event acknowledged", DEADLINE, || async {
        first.acked() + second.acked() >= EVENTS as usize
    })
    .await;
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
