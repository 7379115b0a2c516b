//! The service end to end on the in-memory adapters: `run` on 127.0.0.1:0, a real tonic client,
//! events published on the bus. The bus is wrapped so tests can see how each delivery was
//! answered (ack, or nack with which delay, on which attempt), and the backplane can be wrapped
//! so its subscriptions end on demand, the way a lost Redis pub/sub connection ends them.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use contoso_backplane::{Backplane, BackplaneError, MemoryBackplane, UpdateStream};
use contoso_bus::{
    Bus, DeadLetter, DeadLetters, Envelope, MemoryBus, Topic,
    recording::{Answer, Answered, RecordingBus},
};
use contoso_domain::{CorrelationId, OrderId, OrderStatus, StatusUpdate, UserId};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::{
    convert::to_timestamp,
    events::v1::{OrderAccepted, OrderProcessed, OrderStatusChanged},
    notify::v1::{
        OrderStatusUpdate, WatchOrderStatusRequest, WatchOrderStatusResponse,
        order_status_service_client::OrderStatusServiceClient, watch_order_status_response::Event,
    },
    orders::v1 as orders_pb,
};
use contoso_state::{IntakeState, MemoryState, StatusReader, StatusWriter};
use futures::StreamExt;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, Streaming, transport::Channel};
use tonic_types::StatusExt;

use crate::{Deps, Settings, run};

/// Generous: only a failing test waits this long.
const DEADLINE: Duration = Duration::from_secs(10);

fn sealer() -> CustomerSealer {
    CustomerSealer::from_spec(DEV_SEAL_KEYS).expect("the dev seal key")
}

/// Settings that make redeliveries and heartbeats quick enough for a test.
fn fast_settings() -> Settings {
    Settings {
        owner_retry_delays: vec![Duration::from_millis(1), Duration::from_millis(1)],
        missing_owner_redelivery: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        ..Settings::default()
    }
}

struct Harness {
    addr: SocketAddr,
    bus: Arc<RecordingBus>,
    /// The bus under the recording, for its dead letters.
    memory: MemoryBus,
    state: Arc<MemoryState>,
    auth: Authenticator,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    async fn start(settings: Settings) -> Self {
        Self::start_with(settings, Arc::new(MemoryBackplane::new())).await
    }

    async fn start_with(settings: Settings, backplane: Arc<dyn Backplane>) -> Self {
        let memory = MemoryBus::new();
        let bus = Arc::new(RecordingBus::new(Arc::new(memory.clone())));
        let state = Arc::new(MemoryState::new(Duration::from_secs(600)));
        let auth = Authenticator::new(&AuthArgs::dev()).expect("the dev JWT settings are valid");
        let deps = Deps {
            bus: bus.clone(),
            state: state.clone(),
            status_writer: state.clone(),
            backplane,
            sealer: sealer(),
            authenticator: Arc::new(auth.clone()),
            readiness: Readiness::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let addr = listener.local_addr().expect("the listener's address");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(listener, deps, settings, shutdown.clone()));
        Self {
            addr,
            bus,
            memory,
            state,
            auth,
            shutdown,
            server,
        }
    }

    async fn client(&self) -> OrderStatusServiceClient<Channel> {
        OrderStatusServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connecting to notify-svc")
    }

    fn token(&self, user: &str) -> String {
        let user = UserId::parse(user).expect("a valid user id");
        self.auth
            .issue(&user, Duration::from_secs(300))
            .expect("issuing a token")
    }

    async fn watch_with_token(
        &self,
        token: Option<&str>,
        cids: &[String],
    ) -> Result<Streaming<WatchOrderStatusResponse>, Status> {
        let mut request = Request::new(WatchOrderStatusRequest {
            correlation_ids: cids.to_vec(),
        });
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .expect("an ASCII header value");
            request.metadata_mut().insert("authorization", value);
        }
        self.client()
            .await
            .watch_order_status(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn watch(
        &self,
        user: &str,
        cids: &[CorrelationId],
    ) -> Result<Streaming<WatchOrderStatusResponse>, Status> {
        let cids: Vec<String> = cids.iter().map(ToString::to_string).collect();
        self.watch_with_token(Some(&self.token(user)), &cids).await
    }

    async fn accepted(&self, user: &str, order_id: i64) -> CorrelationId {
        let cid = CorrelationId::new();
        self.state
            .record_accepted(
                cid,
                &UserId::parse(user).expect("user id"),
                order(order_id),
                &[],
            )
            .await
            .expect("recording the order map");
        cid
    }

    async fn publish(&self, topic: Topic, message_id: String, payload: Vec<u8>) {
        self.bus
            .publish(Envelope {
                topic,
                message_id,
                payload: payload.into(),
            })
            .await
            .expect("publishing on the memory bus");
    }

    async fn publish_accepted(&self, cid: CorrelationId, order_id: i64) -> String {
        let id = format!("{cid}:accepted");
        let event = OrderAccepted {
            correlation_id: cid.to_string(),
            order_id,
            accepted_at: Some(to_timestamp(chrono::Utc::now())),
            ..OrderAccepted::default()
        };
        self.publish(Topic::OrderAccepted, id.clone(), event.encode_to_vec())
            .await;
        id
    }

    /// Publishes PROCESSING; `tag` keeps a deliberate duplicate from being deduplicated by id.
    async fn publish_processing(&self, cid: CorrelationId, order_id: i64, tag: &str) -> String {
        let id = format!("{cid}:processing{tag}");
        let event = OrderStatusChanged {
            correlation_id: cid.to_string(),
            order_id,
            status: orders_pb::OrderStatus::Processing.into(),
            occurred_at: Some(to_timestamp(chrono::Utc::now())),
            ..OrderStatusChanged::default()
        };
        self.publish(Topic::OrderProcessing, id.clone(), event.encode_to_vec())
            .await;
        id
    }

    async fn publish_processed(&self, cid: CorrelationId, order_id: i64) -> String {
        let id = format!("{cid}:processed");
        let event = OrderProcessed {
            correlation_id: cid.to_string(),
            order_id,
            processed_at: Some(to_timestamp(chrono::Utc::now())),
            ..OrderProcessed::default()
        };
        self.publish(Topic::OrderProcessed, id.clone(), event.encode_to_vec())
            .await;
        id
    }

    /// Waits for the one dead letter there should be, and returns it.
    async fn dead_letter(&self) -> DeadLetter {
        contoso_testkit::eventually("a dead letter", DEADLINE, || async {
            !self.memory.list(10).await.expect("list").is_empty()
        })
        .await;
        let mut letters = self.memory.list(10).await.expect("list");
        assert_eq!(letters.len(), 1, "{letters:?}");
        letters.remove(0)
    }

    /// The first answer given to a delivery of `message_id`.
    async fn answer_for(&self, message_id: &str) -> Answered {
        self.bus
            .first(message_id, DEADLINE, |a| a.is_for(message_id))
            .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.server).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "run did not stop cleanly: {result:?}"
        );
    }
}

/// A [`MemoryBackplane`] whose open subscriptions [`Severing::sever`] ends, standing for a Redis
/// backplane that lost its pub/sub connection. Subscriptions made afterwards work again.
#[derive(Debug, Default)]
struct Severing {
    inner: MemoryBackplane,
    severed: Mutex<CancellationToken>,
}

impl Severing {
    /// Ends every subscription open now.
    fn sever(&self) {
        let mut current = self.severed.lock().expect("the token lock is not poisoned");
        std::mem::take(&mut *current).cancel();
    }
}

#[tonic::async_trait]
impl Backplane for Severing {
    async fn publish(&self, user: &UserId, update: &StatusUpdate) -> Result<(), BackplaneError> {
        self.inner.publish(user, update).await
    }

    async fn subscribe(&self, user: &UserId) -> Result<UpdateStream, BackplaneError> {
        let severed = self
            .severed
            .lock()
            .expect("the token lock is not poisoned")
            .clone();
        let updates = self.inner.subscribe(user).await?;
        Ok(updates.take_until(severed.cancelled_owned()).boxed())
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

fn order(id: i64) -> OrderId {
    OrderId::new(id).expect("a positive order id")
}

async fn next_event(stream: &mut Streaming<WatchOrderStatusResponse>) -> Event {
    let message = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("the stream did not fail")
        .expect("the stream did not end");
    message.event.expect("every response carries an event")
}

/// The next status update, skipping heartbeats.
async fn next_update(stream: &mut Streaming<WatchOrderStatusResponse>) -> OrderStatusUpdate {
    loop {
        if let Event::Update(update) = next_event(stream).await {
            return update;
        }
    }
}

/// Reads the next status update (skipping heartbeats) and checks what it says.
async fn expect_update(
    stream: &mut Streaming<WatchOrderStatusResponse>,
    cid: CorrelationId,
    status: OrderStatus,
    order_id: i64,
) {
    let update = next_update(stream).await;
    assert_eq!(update.correlation_id, cid.to_string());
    assert_eq!(
        update.status,
        i32::from(orders_pb::OrderStatus::from(status)),
        "{update:?}"
    );
    assert_eq!(update.order_id, order_id);
}

#[tokio::test]
async fn a_stream_gets_the_snapshot_then_live_updates_in_order() {
    let harness = Harness::start(fast_settings()).await;
    let cid = harness.accepted("alice", 42).await;
    let mut stream = harness
        .watch("alice", &[cid])
        .await
        .expect("the stream opens");

    expect_update(&mut stream, cid, OrderStatus::Accepted, 42).await;
    harness.publish_processing(cid, 42, "").await;
    expect_update(&mut stream, cid, OrderStatus::Processing, 42).await;
    harness.publish_processed(cid, 42).await;
    expect_update(&mut stream, cid, OrderStatus::Completed, 42).await;
    harness.stop().await;
}

#[tokio::test]
async fn a_late_processing_after_completed_is_not_forwarded() {
    let harness = Harness::start(fast_settings()).await;
    let cid = harness.accepted("alice", 7).await;
    let mut stream = harness
        .watch("alice", &[cid])
        .await
        .expect("the stream opens");
    expect_update(&mut stream, cid, OrderStatus::Accepted, 7).await;
    harness.publish_processed(cid, 7).await;
    expect_update(&mut stream, cid, OrderStatus::Completed, 7).await;

    // Once the late event is on the backplane, anything published after it reaches the stream
    // after it too: the marker being next proves the late one was dropped.
    let late = harness.publish_processing(cid, 7, ":late").await;
    assert_eq!(harness.answer_for(&late).await.answer, Answer::Ack);
    let marker = harness.accepted("alice", 8).await;
    harness.publish_accepted(marker, 8).await;
    expect_update(&mut stream, marker, OrderStatus::Accepted, 8).await;
    harness.stop().await;
}

#[tokio::test]
async fn another_users_order_named_in_the_request_is_neither_in_the_snapshot_nor_streamed() {
    let harness = Harness::start(Settings {
        heartbeat_interval: Duration::from_millis(50),
        ..fast_settings()
    })
    .await;
    let bobs = harness.accepted("bob", 1).await;
    let alices = harness.accepted("alice", 2).await;
    let unknown = CorrelationId::new();
    let mut stream = harness
        .watch("alice", &[bobs, unknown, alices])
        .await
        .expect("the stream opens");

    // The whole snapshot is queued before the first heartbeat.
    expect_update(&mut stream, alices, OrderStatus::Accepted, 2).await;
    assert!(matches!(next_event(&mut stream).await, Event::Heartbeat(_)));

    let bobs_event = harness.publish_processing(bobs, 1, "").await;
    assert_eq!(harness.answer_for(&bobs_event).await.answer, Answer::Ack);
    harness.publish_processing(alices, 2, "").await;
    expect_update(&mut stream, alices, OrderStatus::Processing, 2).await;
    harness.stop().await;
}

#[tokio::test]
async fn every_open_stream_of_the_user_receives_the_update() {
    let harness = Harness::start(fast_settings()).await;
    let cid = harness.accepted("alice", 3).await;
    let mut first = harness
        .watch("alice", &[])
        .await
        .expect("the first stream opens");
    let mut second = harness
        .watch("alice", &[])
        .await
        .expect("the second stream opens");

    harness.publish_processing(cid, 3, "").await;
    expect_update(&mut first, cid, OrderStatus::Processing, 3).await;
    expect_update(&mut second, cid, OrderStatus::Processing, 3).await;
    harness.stop().await;
}

#[tokio::test]
async fn a_missing_or_forged_token_is_unauthenticated() {
    let harness = Harness::start(fast_settings()).await;
    let missing = harness
        .watch_with_token(None, &[])
        .await
        .expect_err("no token is refused");
    assert_eq!(missing.code(), Code::Unauthenticated);

    let forger = Authenticator::new(&AuthArgs {
        secret: Some("not-the-service-secret-but-long-enough-0000".into()),
        ..AuthArgs::dev()
    })
    .expect("valid forger settings");
    let forged = forger
        .issue(
            &UserId::parse("alice").expect("user id"),
            Duration::from_secs(60),
        )
        .expect("issuing");
    let refused = harness
        .watch_with_token(Some(&forged), &[])
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    harness.stop().await;
}

#[tokio::test]
async fn a_malformed_correlation_id_is_invalid_argument_naming_its_field() {
    let harness = Harness::start(fast_settings()).await;
    let token = harness.token("alice");
    let ids = [CorrelationId::new().to_string(), "not-a-uuid".to_owned()];
    let status = harness
        .watch_with_token(Some(&token), &ids)
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let fields: Vec<String> = details
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(fields, ["correlation_ids[1]"]);
    harness.stop().await;
}

#[tokio::test]
async fn more_than_a_hundred_correlation_ids_are_invalid_argument() {
    let harness = Harness::start(fast_settings()).await;
    let ids: Vec<CorrelationId> = (0..101).map(|_| CorrelationId::new()).collect();
    let status = harness.watch("alice", &ids).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("correlation_ids"), "{status:?}");
    harness.stop().await;
}

#[tokio::test]
async fn too_many_streams_for_one_user_is_resource_exhausted_until_one_closes() {
    let harness = Harness::start(Settings {
        max_streams_per_user: 2,
        ..fast_settings()
    })
    .await;
    let first = harness.watch("alice", &[]).await.expect("first");
    let _second = harness.watch("alice", &[]).await.expect("second");

    let refused = harness
        .watch("alice", &[])
        .await
        .expect_err("a third is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        harness.watch("bob", &[]).await.is_ok(),
        "other users are unaffected"
    );

    // The slot frees once the server notices the client went away.
    drop(first);
    let reopened = tokio::time::timeout(DEADLINE, async {
        loop {
            match harness.watch("alice", &[]).await {
                Ok(stream) => return stream,
                Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "no slot freed after a stream was dropped");
    harness.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let harness = Harness::start(Settings {
        heartbeat_interval: Duration::from_millis(50),
        ..fast_settings()
    })
    .await;
    let mut stream = harness.watch("alice", &[]).await.expect("the stream opens");
    for _ in 0..2 {
        match next_event(&mut stream).await {
            Event::Heartbeat(beat) => assert!(beat.sent_at.is_some()),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    harness.stop().await;
}

#[tokio::test]
async fn an_event_whose_owner_is_unknown_is_nacked_and_delivered_again() {
    let harness = Harness::start(fast_settings()).await;
    let mut stream = harness.watch("alice", &[]).await.expect("the stream opens");
    let cid = CorrelationId::new();
    let id = harness.publish_processing(cid, 5, "").await;

    let first = harness.answer_for(&id).await;
    assert_eq!(first.attempt, 1);
    assert!(matches!(first.answer, Answer::Nack(_)), "{first:?}");

    harness
        .state
        .record_accepted(
            cid,
            &UserId::parse("alice").expect("user id"),
            order(5),
            &[],
        )
        .await
        .expect("recording the map");
    expect_update(&mut stream, cid, OrderStatus::Processing, 5).await;
    let last = harness
        .bus
        .first(&format!("an ack of {id}"), DEADLINE, |a| {
            a.is_for(&id) && a.answer == Answer::Ack
        })
        .await;
    assert!(last.attempt >= 2, "{last:?}");
    harness.stop().await;
}

#[tokio::test]
async fn an_event_whose_owner_map_is_gone_is_routed_by_its_sealed_customer_and_the_map_restored() {
    let harness = Harness::start(fast_settings()).await;
    let mut stream = harness.watch("alice", &[]).await.expect("the stream opens");
    // Redis lost the owner map (flushed, restarted); the event still carries its owner, sealed.
    let cid = CorrelationId::new();
    let alice = UserId::parse("alice").expect("user id");
    let event = OrderProcessed {
        correlation_id: cid.to_string(),
        order_id: 6,
        processed_at: Some(to_timestamp(chrono::Utc::now())),
        customer: Some(sealer().seal(cid, &alice).expect("sealing")),
    };
    let id = format!("{cid}:processed");
    harness
        .publish(Topic::OrderProcessed, id.clone(), event.encode_to_vec())
        .await;

    expect_update(&mut stream, cid, OrderStatus::Completed, 6).await;
    let answered = harness.answer_for(&id).await;
    assert_eq!((answered.attempt, answered.answer), (1, Answer::Ack));
    // Restored, so a snapshot finds the order as the caller's again.
    assert_eq!(
        harness.state.owner(cid).await.expect("owner"),
        Some(alice.clone())
    );
    let mut snapshot = harness
        .watch("alice", &[cid])
        .await
        .expect("a second stream opens");
    expect_update(&mut snapshot, cid, OrderStatus::Completed, 6).await;

    // Sealed for someone else's order, it does not open: the map decides, and it has no owner.
    let other = CorrelationId::new();
    let forged = OrderProcessed {
        correlation_id: other.to_string(),
        order_id: 7,
        customer: Some(sealer().seal(cid, &alice).expect("sealing")),
        ..OrderProcessed::default()
    };
    let forged_id = format!("{other}:processed");
    harness
        .publish(
            Topic::OrderProcessed,
            forged_id.clone(),
            forged.encode_to_vec(),
        )
        .await;
    let answered = harness.answer_for(&forged_id).await;
    assert!(matches!(answered.answer, Answer::Nack(_)), "{answered:?}");
    assert_eq!(harness.state.owner(other).await.expect("owner"), None);
    harness.stop().await;
}

#[tokio::test]
async fn a_malformed_event_is_dead_lettered_at_once() {
    let harness = Harness::start(fast_settings()).await;
    // Serving means the group was joined; it starts at events published from then on.
    let _stream = harness.watch("alice", &[]).await.expect("the stream opens");
    harness
        .publish(
            Topic::OrderProcessed,
            "garbage-1".into(),
            vec![0xff, 0xff, 0xff],
        )
        .await;
    let answered = harness.answer_for("garbage-1").await;
    assert_eq!((answered.attempt, answered.answer), (1, Answer::DeadLetter));
    let letter = harness.dead_letter().await;
    assert_eq!(letter.consumer, "notify-svc");
    assert_eq!(letter.message_id.as_deref(), Some("garbage-1"));
    assert_eq!(letter.topic, Some(Topic::OrderProcessed));
    assert!(
        letter.reason.contains("OrderProcessed"),
        "{}",
        letter.reason
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_event_whose_owner_stays_unknown_is_dead_lettered_after_max_deliver_tries() {
    let harness = Harness::start(Settings {
        max_deliver: 3,
        ..fast_settings()
    })
    .await;
    let _stream = harness.watch("alice", &[]).await.expect("the stream opens");
    let id = harness
        .publish_processing(CorrelationId::new(), 8, "")
        .await;

    let gave_up = harness
        .bus
        .first(&format!("giving up on {id}"), DEADLINE, |a| {
            a.is_for(&id) && a.answer == Answer::DeadLetter
        })
        .await;
    assert_eq!(gave_up.attempt, 3);
    let answers: Vec<(u64, bool)> = harness
        .bus
        .answers()
        .iter()
        .filter(|a| a.is_for(&id))
        .map(|a| (a.attempt, matches!(a.answer, Answer::Nack(_))))
        .collect();
    assert_eq!(answers, [(1, true), (2, true), (3, false)]);
    let letter = harness.dead_letter().await;
    assert_eq!(letter.deliveries, 3);
    assert!(letter.reason.contains("owner"), "{}", letter.reason);
    harness.stop().await;
}

/// Skips messages until the stream ends (cleanly or with a status), within [`DEADLINE`].
async fn stream_end(
    stream: &mut Streaming<WatchOrderStatusResponse>,
) -> Result<Option<WatchOrderStatusResponse>, Status> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended within the deadline")
}

#[tokio::test]
async fn shutdown_ends_open_streams_cleanly() {
    let harness = Harness::start(fast_settings()).await;
    let mut stream = harness.watch("alice", &[]).await.expect("the stream opens");
    harness.shutdown.cancel();
    let end = stream_end(&mut stream).await;
    assert!(matches!(end, Ok(None)), "the stream ended with {end:?}");
    harness.stop().await;
}

#[tokio::test]
async fn a_status_event_is_recorded_before_it_is_fanned_out_so_later_snapshots_are_not_stale() {
    let harness = Harness::start(fast_settings()).await;
    let cid = harness.accepted("alice", 11).await;
    let mut live = harness
        .watch("alice", &[cid])
        .await
        .expect("the stream opens");
    expect_update(&mut live, cid, OrderStatus::Accepted, 11).await;

    // process-svc's own write of PROCESSING is missing (say Redis refused it); its event arrives.
    harness.publish_processing(cid, 11, "").await;
    expect_update(&mut live, cid, OrderStatus::Processing, 11).await;

    // A watch opened now must not be told ACCEPTED.
    let mut later = harness
        .watch("alice", &[cid])
        .await
        .expect("the stream opens");
    expect_update(&mut later, cid, OrderStatus::Processing, 11).await;
    harness.stop().await;
}

#[tokio::test]
async fn a_watch_that_falls_behind_ends_with_unavailable_instead_of_skipping_updates() {
    let backplane = Arc::new(MemoryBackplane::new());
    let harness = Harness::start_with(fast_settings(), backplane.clone()).await;
    let mut stream = harness.watch("alice", &[]).await.expect("the stream opens");
    let alice = UserId::parse("alice").expect("a valid user id");
    // Far more than the per-user buffer plus what the transport holds, while the client reads
    // nothing: the watch falls behind.
    for _ in 0..5_000 {
        let update = StatusUpdate {
            correlation_id: CorrelationId::new(),
            status: OrderStatus::Processing,
            order_id: None,
            occurred_at: chrono::Utc::now(),
            reason: String::new(),
        };
        backplane
            .publish(&alice, &update)
            .await
            .expect("publishing never blocks");
    }
    let end = stream_end(&mut stream).await;
    let status = end.expect_err("a lagging stream ends with an error, not cleanly or never");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    harness.stop().await;
}

#[tokio::test]
async fn an_ended_backplane_subscription_ends_the_stream_with_unavailable() {
    let backplane = Arc::new(Severing::default());
    let harness = Harness::start_with(fast_settings(), backplane.clone()).await;
    let cid = harness.accepted("alice", 9).await;
    let mut stream = harness
        .watch("alice", &[cid])
        .await
        .expect("the stream opens");
    expect_update(&mut stream, cid, OrderStatus::Accepted, 9).await;

    backplane.sever();
    let end = stream_end(&mut stream).await;
    let status = end.expect_err("the stream ends with an error, not cleanly");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // What changed while the stream was gone reaches the client through the new snapshot.
    harness
        .state
        .advance(cid, OrderStatus::Processing, None)
        .await
        .expect("advancing the status");
    let mut again = harness
        .watch("alice", &[cid])
        .await
        .expect("the client reconnects");
    expect_update(&mut again, cid, OrderStatus::Processing, 9).await;
    harness.publish_processed(cid, 9).await;
    expect_update(&mut again, cid, OrderStatus::Completed, 9).await;
    harness.stop().await;
}
