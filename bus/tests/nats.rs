//! The bus contract, run against both adapters: the in-memory one and the JetStream one on a
//! private `nats-server` per test. Then the JetStream adapter's failure modes: no server at
//! all, and a server that stops and comes back.

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use contoso_bus::{
    Bus, BusError, ConsumerSpec, DeadLetters, Deliveries, Delivery, Envelope, NatsBus,
    NatsSettings, StartPolicy, Topic,
};
use contoso_testkit::{NatsServer, eventually};
use futures::StreamExt;
use tokio::time::{Instant, timeout};

/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(30);

fn envelope(topic: Topic, id: &str) -> Envelope {
    Envelope {
        topic,
        message_id: id.to_owned(),
        payload: Bytes::from(format!("payload of {id}")),
    }
}

async fn next(deliveries: &mut Deliveries) -> Delivery {
    timeout(WAIT, deliveries.next())
        .await
        .expect("a delivery before the deadline")
        .expect("the delivery stream stays open")
        .expect("a delivery, not an error")
}

fn id(delivery: &Delivery) -> &str {
    delivery.message_id.as_deref().unwrap_or_default()
}

/// Opens, or joins, the `intake` group on `orders.accepted`.
async fn intake(bus: &dyn Bus) -> Deliveries {
    bus.consume(&ConsumerSpec::new("intake", [Topic::OrderAccepted]))
        .await
        .expect("opening the intake group")
}

/// Publishes `id` on `orders.accepted`; the broker must confirm it.
async fn publish_accepted(bus: &dyn Bus, id: &str) {
    bus.publish(envelope(Topic::OrderAccepted, id))
        .await
        .expect("publish confirmed");
}

/// The next deliveries must be `ids`, in order; acks each.
async fn expect_ids(deliveries: &mut Deliveries, ids: &[&str]) {
    for expected in ids {
        let delivery = next(deliveries).await;
        assert_eq!(id(&delivery), *expected);
        delivery.ack().await.expect("ack confirmed");
    }
}

async fn nats_bus(server: &NatsServer) -> Arc<dyn Bus> {
    nats_adapter(server).await
}

async fn nats_adapter(server: &NatsServer) -> Arc<NatsBus> {
    let settings = NatsSettings {
        url: server.url(),
        ..Default::default()
    };
    Arc::new(
        NatsBus::connect(settings)
            .await
            .expect("connecting to the test nats-server"),
    )
}

/// Absence cannot be awaited: watch past the ack wait, when an unsettled message would return.
async fn assert_nothing_within(deliveries: &mut Deliveries, window: Duration) {
    if let Ok(Some(extra)) = timeout(window, deliveries.next()).await {
        panic!("expected no delivery, got {extra:?}");
    }
}

/// The intake group with a short ack wait, so a message left unsettled would come back quickly.
async fn quick_intake(bus: &dyn Bus) -> (ConsumerSpec, Deliveries) {
    let mut spec = ConsumerSpec::new("intake", [Topic::OrderAccepted]);
    spec.ack_wait = Duration::from_secs(1);
    let deliveries = bus.consume(&spec).await.expect("opening the intake group");
    (spec, deliveries)
}

/// Publishes `id`, takes it on its second delivery and dead-letters it; returns its dead-letter
/// id.
async fn dead_letter_one(
    bus: &dyn Bus,
    dead: &dyn DeadLetters,
    deliveries: &mut Deliveries,
    id: &str,
) -> u64 {
    publish_accepted(bus, id).await;
    let first = next(deliveries).await;
    first.nack(Duration::ZERO).await.expect("nack sent");
    let second = next(deliveries).await;
    assert_eq!(second.attempt, 2);
    second
        .dead_letter("order id clash:\nrecorded under another id")
        .await
        .expect("dead-lettered");
    let listed = dead.list(100).await.expect("listing dead letters");
    listed
        .iter()
        .find(|d| d.message_id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("{id} is not among the dead letters {listed:?}"))
        .id
}

// ---- The contract: what every adapter must do. ----

async fn publish_is_acknowledged_and_consumed_with_attempt_1(bus: Arc<dyn Bus>) {
    publish_accepted(&*bus, "m-1").await;

    let mut deliveries = intake(&*bus).await;
    let delivery = next(&mut deliveries).await;

    assert_eq!(delivery.topic, Topic::OrderAccepted);
    assert_eq!(id(&delivery), "m-1");
    assert_eq!(delivery.payload, Bytes::from_static(b"payload of m-1"));
    assert_eq!(delivery.attempt, 1);
    delivery.ack().await.expect("ack confirmed");
    assert!(bus.is_ready().await);
}

async fn same_message_id_published_twice_is_delivered_once(bus: Arc<dyn Bus>) {
    publish_accepted(&*bus, "dup").await;
    let mut again = envelope(Topic::OrderAccepted, "dup");
    again.payload = Bytes::from_static(b"second copy");
    bus.publish(again)
        .await
        .expect("a duplicate is still confirmed");
    publish_accepted(&*bus, "other").await;

    let mut deliveries = intake(&*bus).await;

    let first = next(&mut deliveries).await;
    assert_eq!(
        (id(&first), first.payload.as_ref()),
        ("dup", b"payload of dup".as_ref())
    );
    first.ack().await.unwrap();
    // Order is kept, so a stored duplicate would come here.
    expect_ids(&mut deliveries, &["other"]).await;
}

async fn nack_redelivers_with_attempt_2(bus: Arc<dyn Bus>) {
    publish_accepted(&*bus, "retry-me").await;
    let mut deliveries = intake(&*bus).await;

    let first = next(&mut deliveries).await;
    assert_eq!(first.attempt, 1);
    let delay = Duration::from_millis(200);
    first.nack(delay).await.expect("nack sent");
    let nacked_at = Instant::now();

    let again = next(&mut deliveries).await;
    assert_eq!((id(&again), again.attempt), ("retry-me", 2));
    assert!(
        nacked_at.elapsed() >= delay / 2,
        "redelivered after {:?}",
        nacked_at.elapsed()
    );
    again.ack().await.unwrap();
}

async fn two_subscribers_of_one_durable_group_share_the_messages_without_duplicates(
    bus: Arc<dyn Bus>,
) {
    let mut spec = ConsumerSpec::new("workers", [Topic::OrderAccepted]);
    spec.ack_wait = Duration::from_secs(1);
    let first = bus.consume(&spec).await.unwrap();
    let second = bus.consume(&spec).await.unwrap();
    let mut both = futures::stream::select(first, second).boxed();
    let published: Vec<String> = (0..20).map(|i| format!("order-{i}")).collect();
    for id in &published {
        publish_accepted(&*bus, id).await;
    }

    let mut received = Vec::new();
    for _ in 0..published.len() {
        let delivery = next(&mut both).await;
        assert_eq!(delivery.attempt, 1, "{delivery:?} was redelivered");
        delivery.ack().await.unwrap();
        received.push(id(&delivery).to_owned());
    }

    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "duplicates among {received:?}"
    );
    assert_eq!(unique, published.into_iter().collect::<HashSet<_>>());
    // Absence cannot be awaited: watch past the ack wait, when an unsettled message would return.
    if let Ok(Some(extra)) = timeout(spec.ack_wait * 2, both.next()).await {
        panic!("an acknowledged message came back: {extra:?}");
    }
}

async fn each_group_receives_every_earlier_message_of_its_topics(bus: Arc<dyn Bus>) {
    publish_accepted(&*bus, "accepted-1").await;
    bus.publish(envelope(Topic::OrderProcessed, "processed-1"))
        .await
        .unwrap();
    publish_accepted(&*bus, "accepted-2").await;

    let mut intake = intake(&*bus).await;
    let mut notify = bus
        .consume(&ConsumerSpec::new(
            "notify",
            [Topic::OrderAccepted, Topic::OrderProcessed],
        ))
        .await
        .unwrap();

    expect_ids(&mut intake, &["accepted-1", "accepted-2"]).await;
    for (expected, topic) in [
        ("accepted-1", Topic::OrderAccepted),
        ("processed-1", Topic::OrderProcessed),
        ("accepted-2", Topic::OrderAccepted),
    ] {
        let delivery = next(&mut notify).await;
        assert_eq!((id(&delivery), delivery.topic), (expected, topic));
        delivery.ack().await.unwrap();
    }
}

async fn a_group_created_to_start_at_new_messages_skips_earlier_ones(bus: Arc<dyn Bus>) {
    bus.publish(envelope(Topic::OrderProcessed, "old"))
        .await
        .unwrap();
    let mut spec = ConsumerSpec::new("status", [Topic::OrderProcessed]);
    spec.start = StartPolicy::New;
    spec.ack_wait = Duration::from_secs(1);
    let mut deliveries = bus.consume(&spec).await.unwrap();
    bus.publish(envelope(Topic::OrderProcessed, "new"))
        .await
        .unwrap();

    let delivery = next(&mut deliveries).await;
    assert_eq!(id(&delivery), "new");
    delivery.ack().await.unwrap();
    assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;
}

// ---- Dead letters: what every adapter must do. ----

async fn a_dead_lettered_message_is_kept_with_its_metadata_and_never_redelivered(
    bus: Arc<dyn Bus>,
    dead: Arc<dyn DeadLetters>,
) {
    let (spec, mut deliveries) = quick_intake(&*bus).await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let dead_id = dead_letter_one(&*bus, &*dead, &mut deliveries, "clash").await;

    let letter = dead
        .get(dead_id)
        .await
        .unwrap()
        .expect("the dead letter is there");
    assert_eq!(letter.id, dead_id);
    assert_eq!(letter.topic, Some(Topic::OrderAccepted));
    assert!(letter.subject.ends_with("accepted"), "{}", letter.subject);
    assert_eq!(letter.consumer, "intake");
    assert_eq!(letter.deliveries, 2);
    assert_eq!(letter.reason, "order id clash: recorded under another id");
    assert_eq!(letter.message_id.as_deref(), Some("clash"));
    assert_eq!(letter.payload, Bytes::from_static(b"payload of clash"));
    assert!(letter.stream_sequence.is_some());
    assert!(
        letter.dead_at >= started && letter.dead_at <= chrono::Utc::now(),
        "{}",
        letter.dead_at
    );
    assert_eq!(dead.list(100).await.unwrap(), vec![letter]);

    // Terminated: not back after the ack wait, and the group moves on.
    assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;
    publish_accepted(&*bus, "healthy").await;
    expect_ids(&mut deliveries, &["healthy"]).await;
}

async fn replaying_a_dead_letter_twice_redelivers_it_once_and_removes_it(
    bus: Arc<dyn Bus>,
    dead: Arc<dyn DeadLetters>,
) {
    let (spec, mut deliveries) = quick_intake(&*bus).await;
    let dead_id = dead_letter_one(&*bus, &*dead, &mut deliveries, "seal").await;

    assert!(dead.replay(dead_id).await.expect("replay"));
    assert!(
        !dead.replay(dead_id).await.expect("second replay"),
        "a second replay of the same entry found it again"
    );

    let replayed = next(&mut deliveries).await;
    assert_eq!(replayed.payload, Bytes::from_static(b"payload of seal"));
    assert_eq!(replayed.topic, Topic::OrderAccepted);
    assert_eq!(
        replayed.message_id,
        Some(format!("seal:replay:{dead_id}")),
        "a replay id of its own, so the duplicate window does not drop it"
    );
    assert_eq!(replayed.attempt, 1);
    replayed.ack().await.unwrap();
    assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;
    assert_eq!(dead.list(100).await.unwrap(), Vec::new());
    assert_eq!(dead.get(dead_id).await.unwrap(), None);
}

async fn purging_a_dead_letter_removes_it_without_a_delivery(
    bus: Arc<dyn Bus>,
    dead: Arc<dyn DeadLetters>,
) {
    let (spec, mut deliveries) = quick_intake(&*bus).await;
    let purged = dead_letter_one(&*bus, &*dead, &mut deliveries, "purge-me").await;
    let kept = dead_letter_one(&*bus, &*dead, &mut deliveries, "keep-me").await;

    assert!(dead.purge(purged).await.expect("purge"));
    assert!(!dead.purge(purged).await.expect("second purge"));
    assert!(!dead.replay(purged).await.expect("replaying a purged entry"));

    let left: Vec<u64> = dead.list(100).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(left, [kept]);
    assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;
}

async fn a_message_that_runs_out_of_max_deliver_lands_in_the_dead_letters(
    bus: Arc<dyn Bus>,
    dead: Arc<dyn DeadLetters>,
) {
    let mut spec = ConsumerSpec::new("limited", [Topic::OrderAccepted]);
    spec.max_deliver = 2;
    spec.ack_wait = Duration::from_secs(1);
    let mut deliveries = bus.consume(&spec).await.unwrap();
    publish_accepted(&*bus, "exhausted").await;
    for attempt in 1..=2 {
        let delivery = next(&mut deliveries).await;
        assert_eq!((id(&delivery), delivery.attempt), ("exhausted", attempt));
        delivery.nack(Duration::ZERO).await.unwrap();
    }

    eventually(
        "the exhausted message among the dead letters",
        WAIT,
        || async { !dead.list(10).await.unwrap_or_default().is_empty() },
    )
    .await;
    let found = dead.list(10).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let letter = &found[0];
    assert_eq!(
        (
            letter.message_id.as_deref(),
            letter.consumer.as_str(),
            letter.deliveries
        ),
        (Some("exhausted"), "limited", 2)
    );
    assert!(letter.reason.contains("max_deliver"), "{}", letter.reason);
    assert_eq!(letter.payload, Bytes::from_static(b"payload of exhausted"));
}

/// Runs each dead-letter case once per adapter: `memory_dead_letters::<case>` and
/// `nats_dead_letters::<case>`.
macro_rules! dead_letter_contract {
    ($($case:ident),* $(,)?) => {
        mod memory_dead_letters {
            $(
                #[tokio::test]
                async fn $case() {
                    let bus = std::sync::Arc::new(contoso_bus::MemoryBus::new());
                    super::$case(bus.clone(), bus).await;
                }
            )*
        }
        mod nats_dead_letters {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = contoso_testkit::NatsServer::start();
                    let bus = super::nats_adapter(&server).await;
                    super::$case(bus.clone(), bus).await;
                }
            )*
        }
    };
}

dead_letter_contract!(
    a_dead_lettered_message_is_kept_with_its_metadata_and_never_redelivered,
    replaying_a_dead_letter_twice_redelivers_it_once_and_removes_it,
    purging_a_dead_letter_removes_it_without_a_delivery,
    a_message_that_runs_out_of_max_deliver_lands_in_the_dead_letters,
);

/// Runs each contract case once per adapter: `memory::<case>` and `nats::<case>`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let bus = std::sync::Arc::new(contoso_bus::MemoryBus::new());
                    super::$case(bus).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = contoso_testkit::NatsServer::start();
                    super::$case(super::nats_bus(&server).await).await;
                }
            )*
        }
    };
}

contract!(
    publish_is_acknowledged_and_consumed_with_attempt_1,
    same_message_id_published_twice_is_delivered_once,
    nack_redelivers_with_attempt_2,
    two_subscribers_of_one_durable_group_share_the_messages_without_duplicates,
    each_group_receives_every_earlier_message_of_its_topics,
    a_group_created_to_start_at_new_messages_skips_earlier_ones,
);

// ---- JetStream failure modes. ----

#[tokio::test]
async fn connecting_to_a_port_with_no_server_fails_fast_with_unavailable() {
    let url = format!("nats://127.0.0.1:{}", contoso_testkit::free_port());
    let started = Instant::now();

    let outcome = timeout(
        WAIT,
        NatsBus::connect(NatsSettings {
            url: url.clone(),
            ..Default::default()
        }),
    )
    .await
    .expect("connect gives up instead of retrying in the background");

    match outcome {
        Err(BusError::Unavailable { context, .. }) => assert!(context.contains(&url), "{context}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_while_the_server_is_stopped_is_not_confirmed_and_delivery_resumes_after_a_restart()
{
    let mut server = NatsServer::start();
    let publish_timeout = Duration::from_secs(1);
    let bus = NatsBus::connect(NatsSettings {
        url: server.url(),
        publish_timeout,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut deliveries = intake(&bus).await;
    publish_accepted(&bus, "before").await;
    expect_ids(&mut deliveries, &["before"]).await;

    tokio::task::block_in_place(|| server.stop());
    let started = Instant::now();
    let refused = bus.publish(envelope(Topic::OrderAccepted, "during")).await;
    assert!(
        matches!(refused, Err(BusError::PublishNotConfirmed { .. })),
        "{refused:?}"
    );
    assert!(started.elapsed() < publish_timeout + Duration::from_millis(500));
    eventually("the bus reporting not ready", WAIT, || async {
        !bus.is_ready().await
    })
    .await;

    tokio::task::block_in_place(|| server.restart());
    eventually("the bus reconnecting", WAIT, || async {
        bus.is_ready().await
    })
    .await;
    // The caller's retry of the refused message: same id, so it is stored at most once even if
    // the first attempt did reach the server.
    eventually("a confirmed publish after the restart", WAIT, || async {
        bus.publish(envelope(Topic::OrderAccepted, "during"))
            .await
            .is_ok()
    })
    .await;
    bus.publish(envelope(Topic::OrderAccepted, "after"))
        .await
        .expect("publishing works again");

    expect_ids(&mut deliveries, &["during", "after"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consume_stream_recreates_its_consumer_when_an_operator_deletes_it() {
    let server = NatsServer::start();
    let bus = nats_bus(&server).await;
    let mut deliveries = intake(&*bus).await;
    publish_accepted(&*bus, "first").await;
    next(&mut deliveries).await.ack().await.unwrap();

    let operator = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(operator)
        .delete_consumer_from_stream("intake", "ORDERS")
        .await
        .expect("deleting the consumer");
    publish_accepted(&*bus, "second").await;

    // The re-created consumer starts from the beginning again, so "first" comes back: at least
    // once, never lost.
    let mut seen = Vec::new();
    while !seen.iter().any(|id| id == "second") {
        let delivery = next(&mut deliveries).await;
        delivery.ack().await.unwrap();
        seen.push(id(&delivery).to_owned());
    }
    assert_eq!(seen, ["first", "second"]);
}

/// Stops the server for longer than two missed pull heartbeats (2 × 5 s), so pull streams being
/// read fail and the adapter has to re-open them (the outage itself, not a synchronisation), then
/// publishes `id` once the restarted server confirms it.
async fn outage_then_publish(server: &mut NatsServer, bus: &dyn Bus, id: &str) {
    tokio::task::block_in_place(|| {
        server.stop();
        std::thread::sleep(Duration::from_secs(12));
        server.restart();
    });
    eventually("a confirmed publish after the restart", WAIT, || async {
        bus.publish(envelope(Topic::OrderAccepted, id))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consume_stream_survives_an_outage_longer_than_its_heartbeat() {
    // On failure, the adapter's warnings show what the stream went through.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("contoso_bus=debug")
        .try_init();
    let mut server = NatsServer::start();
    let bus = nats_bus(&server).await;
    let mut deliveries = intake(&*bus).await;
    let reader = tokio::spawn(async move {
        let delivery = next(&mut deliveries).await;
        delivery.ack().await.unwrap();
        id(&delivery).to_owned()
    });

    outage_then_publish(&mut server, &*bus, "after").await;

    let received = timeout(WAIT, reader)
        .await
        .expect("delivered after the outage")
        .unwrap();
    assert_eq!(received, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_an_outage_keeps_the_config_of_the_replica_that_started_last() {
    let mut server = NatsServer::start();
    let (older, newer) = (nats_bus(&server).await, nats_bus(&server).await);
    let mut spec = ConsumerSpec::new("intake", [Topic::OrderAccepted]);
    spec.max_ack_pending = 4;
    let mut from_older = older.consume(&spec).await.unwrap();
    // A replica of the next release starts with another setting: it is what the group runs on.
    spec.max_ack_pending = 8;
    let _from_newer = newer.consume(&spec).await.unwrap();

    // The older replica is reading through the outage, so it re-opens the consumer after it.
    let reader = tokio::spawn(async move {
        let delivery = next(&mut from_older).await;
        delivery.ack().await.unwrap();
        id(&delivery).to_owned()
    });
    outage_then_publish(&mut server, &*newer, "after").await;
    let received = timeout(WAIT, reader)
        .await
        .expect("the older replica reads again after the outage")
        .unwrap();
    assert_eq!(received, "after");

    // Re-opening did not bring the older replica's setting back.
    let info = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
        .get_stream("ORDERS")
        .await
        .unwrap()
        .consumer_info("intake")
        .await
        .unwrap();
    assert_eq!(info.config.max_ack_pending, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_group_that_starts_at_the_oldest_message_is_recreated_to_start_at_new_ones() {
    let server = NatsServer::start();
    let bus = nats_bus(&server).await;
    let mut old_spec = ConsumerSpec::new("status", [Topic::OrderProcessed]);
    old_spec.ack_wait = Duration::from_secs(1);
    let mut old = bus.consume(&old_spec).await.unwrap();
    bus.publish(envelope(Topic::OrderProcessed, "seen"))
        .await
        .unwrap();
    expect_ids(&mut old, &["seen"]).await;
    drop(old);
    // Published while the service was down: stale by the time it comes back.
    bus.publish(envelope(Topic::OrderProcessed, "stale"))
        .await
        .unwrap();

    let mut new_spec = old_spec.clone();
    new_spec.start = StartPolicy::New;
    let mut deliveries = bus
        .consume(&new_spec)
        .await
        .expect("the durable is recreated instead of refusing the new start policy");
    bus.publish(envelope(Topic::OrderProcessed, "fresh"))
        .await
        .unwrap();

    expect_ids(&mut deliveries, &["fresh"]).await;
    assert_nothing_within(&mut deliveries, new_spec.ack_wait * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_the_original_headers_and_its_replay_carries_them() {
    use async_nats::{HeaderMap, jetstream::message::PublishMessage};

    let server = NatsServer::start();
    let bus = nats_adapter(&server).await;
    let (_, mut deliveries) = quick_intake(&*bus).await;
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "traced");
    headers.insert("Traceparent", "00-abc-def-01");
    headers.insert("Contoso-Tenant", "t1");
    raw.send_publish(
        "orders.accepted",
        PublishMessage::build()
            .payload(Bytes::from_static(b"traced payload"))
            .headers(headers),
    )
    .await
    .unwrap()
    .await
    .expect("published with headers");

    let delivery = next(&mut deliveries).await;
    assert_eq!(id(&delivery), "traced");
    delivery.dead_letter("poison").await.expect("dead-lettered");
    let letters = bus.list(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.subject, "orders.accepted");
    assert_eq!(letter.deliveries, 1);
    assert_eq!(
        letter.headers,
        [
            ("Contoso-Tenant".to_owned(), "t1".to_owned()),
            ("Traceparent".to_owned(), "00-abc-def-01".to_owned()),
        ]
    );

    // The dead letter lives outside the main stream, under its own prefix.
    let stored = raw
        .get_stream("ORDERS_DLQ")
        .await
        .unwrap()
        .get_raw_message(letter.id)
        .await
        .unwrap();
    assert_eq!(stored.subject.as_str(), "orders_dlq.intake.accepted");

    assert!(bus.replay(letter.id).await.unwrap());
    let mut observer = bus
        .consume(&ConsumerSpec::new("observer", [Topic::OrderAccepted]))
        .await
        .unwrap();
    next(&mut observer).await.ack().await.unwrap(); // the original
    let replayed = next(&mut observer).await;
    assert_eq!(replayed.payload, Bytes::from_static(b"traced payload"));
    let sequence = replayed.sequence;
    let stored = raw
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_raw_message(sequence)
        .await
        .unwrap();
    assert_eq!(
        stored.headers.get("Traceparent").map(|v| v.as_str()),
        Some("00-abc-def-01")
    );
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("traced:replay:{}", letter.id).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifting_a_groups_delivery_limit_updates_the_existing_durable_in_place() {
    let server = NatsServer::start();
    let bus = nats_bus(&server).await;
    let mut limited = ConsumerSpec::new("intake", [Topic::OrderAccepted]);
    limited.max_deliver = 2;
    limited.ack_wait = Duration::from_secs(1);
    let mut deliveries = bus.consume(&limited).await.unwrap();
    publish_accepted(&*bus, "kept").await;
    let first = next(&mut deliveries).await;
    assert_eq!(first.attempt, 1);
    drop(deliveries);

    // The release that lifts the limit joins the same durable, keeping its position and its
    // pending message, which now outlives the old limit of two deliveries.
    let mut unlimited = limited.clone();
    unlimited.max_deliver = -1;
    let mut deliveries = bus
        .consume(&unlimited)
        .await
        .expect("the durable is updated");
    loop {
        let delivery = next(&mut deliveries).await;
        assert_eq!(id(&delivery), "kept");
        if delivery.attempt >= 3 {
            delivery.ack().await.unwrap();
            break;
        }
        delivery.nack(Duration::ZERO).await.unwrap();
    }
    let info = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
        .get_stream("ORDERS")
        .await
        .unwrap()
        .consumer_info("intake")
        .await
        .unwrap();
    assert_eq!(info.config.max_deliver, -1);
}
