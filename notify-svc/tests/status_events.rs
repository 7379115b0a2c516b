//! notify-svc's consumer on a private `nats-server`: status events are ephemeral, so a
//! `notify-svc` durable that is created again (deleted by an operator, lost with the server's
//! state, or replaced) starts at new events instead of replaying the stream's retained days.

use std::{sync::Arc, time::Duration};

use contoso_backplane::RedisBackplane;
use contoso_bus::{Bus, Envelope, NatsBus, NatsSettings, Topic, recording::RecordingBus};
use contoso_domain::{CorrelationId, OrderId, UserId};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::{convert::to_timestamp, events::v1::OrderAccepted};
use contoso_state::{IntakeState, RedisState};
use contoso_testkit::{NatsServer, redis_url, unique_name};
use notify_svc::{Deps, Settings, run};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(120);

struct Replica {
    bus: RecordingBus,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    /// One replica of consumer group `group` handling one event at a time, so events are
    /// answered in stream order.
    async fn start(nats: &NatsServer, prefix: &str, group: &str) -> Self {
        let bus = NatsBus::connect(NatsSettings {
            url: nats.url(),
            ..NatsSettings::default()
        })
        .await
        .expect("connecting to nats-server");
        let bus = RecordingBus::new(Arc::new(bus));
        let state = Arc::new(
            RedisState::connect(&redis_url(), prefix, TTL)
                .await
                .expect("connecting Redis state"),
        );
        let backplane = RedisBackplane::connect(&redis_url(), prefix)
            .await
            .expect("connecting the Redis backplane");
        let auth = Authenticator::new(&AuthArgs::dev()).expect("the dev JWT settings are valid");
        let deps = Deps {
            bus: Arc::new(bus.clone()),
            state: state.clone(),
            status_writer: state,
            backplane: Arc::new(backplane),
            sealer: CustomerSealer::from_spec(DEV_SEAL_KEYS).expect("the dev seal key"),
            authenticator: Arc::new(auth),
            readiness: Readiness::new(),
        };
        let settings = Settings {
            consumer_concurrency: 1,
            consumer_group: group.to_owned(),
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(listener, deps, settings, shutdown.clone()));
        Self {
            bus,
            shutdown,
            server,
        }
    }

    async fn acked(&self, message_id: &str) {
        self.bus
            .first(&format!("an ack of {message_id}"), DEADLINE, |a| {
                a.is_for(message_id) && a.answer.settles()
            })
            .await;
    }

    /// Publishes probe orders until this replica answers one: its group then exists on the
    /// server, so nothing published from now on can be missed by a group that starts at new
    /// events (a probe published before the group existed is never delivered to it).
    async fn wait_until_consuming(&self, publisher: &dyn Bus, state: &RedisState) {
        let until = tokio::time::Instant::now() + DEADLINE;
        for n in 1000.. {
            let probe = accepted(publisher, state, n).await;
            let answered_by = tokio::time::Instant::now() + Duration::from_millis(500);
            while tokio::time::Instant::now() < answered_by {
                if self.bus.answers().iter().any(|a| a.is_for(&probe)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the replica answered no probe within {DEADLINE:?}"
            );
        }
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

/// Records alice's order and publishes its `OrderAccepted`; returns the message id.
async fn accepted(bus: &dyn Bus, state: &RedisState, order_id: i64) -> String {
    let cid = CorrelationId::new();
    let alice = UserId::parse("alice").expect("user id");
    state
        .record_accepted(cid, &alice, OrderId::new(order_id).expect("positive"), &[])
        .await
        .expect("recording the order map");
    let event = OrderAccepted {
        correlation_id: cid.to_string(),
        order_id,
        accepted_at: Some(to_timestamp(chrono::Utc::now())),
        ..OrderAccepted::default()
    };
    bus.publish(Envelope {
        topic: Topic::OrderAccepted,
        message_id: cid.to_string(),
        payload: event.encode_to_vec().into(),
    })
    .await
    .expect("publishing OrderAccepted");
    cid.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_notify_consumer_does_not_replay_old_status_events() {
    let nats = NatsServer::start();
    let prefix = format!("{}:", unique_name("notify"));
    let state = RedisState::connect(&redis_url(), &prefix, TTL)
        .await
        .expect("connecting Redis state");
    let publisher = NatsBus::connect(NatsSettings {
        url: nats.url(),
        ..NatsSettings::default()
    })
    .await
    .expect("connecting the publisher");

    let first = Replica::start(&nats, &prefix, "notify-svc").await;
    first.wait_until_consuming(&publisher, &state).await;
    let old = accepted(&publisher, &state, 1).await;
    first.acked(&old).await;
    first.stop().await;

    // The durable is created afresh (an operator deleted it, the server lost it, or the group
    // was renamed): a group the stream has never seen.
    let second = Replica::start(&nats, &prefix, "notify-svc-recreated").await;
    second.wait_until_consuming(&publisher, &state).await;
    let new = accepted(&publisher, &state, 2).await;
    // One event at a time, in stream order: a replayed old event would be answered first.
    second.acked(&new).await;
    let replayed: Vec<_> = second
        .bus
        .answers()
        .into_iter()
        .filter(|a| a.is_for(&old))
        .collect();
    assert!(
        replayed.is_empty(),
        "the recreated consumer replayed an old status event: {replayed:?}"
    );
    second.stop().await;
}
