//! The `Backplane` contract, run against both adapters: `MemoryBackplane` and `RedisBackplane`
//! (real Redis, one channel prefix per test, two instances standing for two replicas). Fault
//! tests kill connections of, stop and restart a private `redis-server` so the shared one is
//! left alone: a lost pub/sub connection must end the open streams (their clients then resubscribe
//! and take a snapshot) and must not make later subscriptions hang.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use contoso_backplane::{Backplane, BackplaneError, MemoryBackplane, RedisBackplane, UpdateStream};
use contoso_domain::{CorrelationId, OrderId, OrderStatus, StatusUpdate, UserId};
use contoso_testkit::{RedisServer, eventually};
use futures::StreamExt;
use redis::{AsyncCommands, aio::MultiplexedConnection};
use tokio::time::{Instant, timeout};

/// Generous: only a failing test waits this long.
const DEADLINE: Duration = Duration::from_secs(10);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn update(status: OrderStatus) -> StatusUpdate {
    StatusUpdate {
        correlation_id: CorrelationId::new(),
        status,
        order_id: OrderId::new(17),
        occurred_at: Utc::now(),
        reason: String::new(),
    }
}

async fn next_update(stream: &mut UpdateStream) -> StatusUpdate {
    timeout(DEADLINE, stream.next())
        .await
        .expect("no update arrived within the deadline")
        .expect("the update stream ended")
}

/// One adapter under test: replicas that share a backplane, and a way to see whether a user is
/// subscribed anywhere.
#[async_trait]
trait Subject: Send + Sync {
    fn replicas(&self) -> [Arc<dyn Backplane>; 2];
    async fn subscribed(&self, user: &UserId) -> bool;
}

struct Memory(MemoryBackplane);

#[async_trait]
impl Subject for Memory {
    fn replicas(&self) -> [Arc<dyn Backplane>; 2] {
        // One process: both "replicas" are handles on the same channels.
        [Arc::new(self.0.clone()), Arc::new(self.0.clone())]
    }

    async fn subscribed(&self, user: &UserId) -> bool {
        self.0.is_watched(user)
    }
}

struct Redis {
    replicas: [Arc<RedisBackplane>; 2],
    probe: MultiplexedConnection,
}

impl Redis {
    async fn connect(url: &str) -> Self {
        let prefix = format!("{}:", contoso_testkit::unique_name("bp"));
        Self {
            replicas: [replica(url, &prefix).await, replica(url, &prefix).await],
            probe: probe(url).await,
        }
    }
}

async fn replica(url: &str, prefix: &str) -> Arc<RedisBackplane> {
    Arc::new(
        RedisBackplane::connect(url, prefix)
            .await
            .expect("connecting a backplane"),
    )
}

async fn probe(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connecting a probe to Redis")
}

async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> u64 {
    let (_, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .unwrap();
    count
}

#[async_trait]
impl Subject for Redis {
    fn replicas(&self) -> [Arc<dyn Backplane>; 2] {
        self.replicas.clone().map(|r| r as Arc<dyn Backplane>)
    }

    async fn subscribed(&self, user: &UserId) -> bool {
        numsub(&mut self.probe.clone(), &self.replicas[0].channel(user)).await > 0
    }
}

async fn every_replica_with_a_stream_of_the_user_receives_the_update(subject: &dyn Subject) {
    let [one, two] = subject.replicas();
    let (alice, bob) = (user("alice"), user("bob"));
    let mut alice_on_one = one.subscribe(&alice).await.unwrap();
    let mut alice_on_two = two.subscribe(&alice).await.unwrap();
    let mut bob_on_two = two.subscribe(&bob).await.unwrap();

    // Published right after subscribe returned: the subscriptions must already be in place.
    let for_alice = update(OrderStatus::Processing);
    one.publish(&alice, &for_alice).await.unwrap();
    let bobs_marker = update(OrderStatus::Accepted);
    one.publish(&bob, &bobs_marker).await.unwrap();

    assert_eq!(next_update(&mut alice_on_one).await, for_alice);
    assert_eq!(next_update(&mut alice_on_two).await, for_alice);
    assert_eq!(
        next_update(&mut bob_on_two).await,
        bobs_marker,
        "bob must not see alice's update"
    );
}

async fn every_stream_of_a_user_in_one_replica_receives_each_update(subject: &dyn Subject) {
    let [one, two] = subject.replicas();
    let alice = user("alice");
    let mut first = one.subscribe(&alice).await.unwrap();
    let mut second = one.subscribe(&alice).await.unwrap();

    let updates = [
        update(OrderStatus::Accepted),
        update(OrderStatus::Processing),
    ];
    for u in &updates {
        two.publish(&alice, u).await.unwrap();
    }
    for stream in [&mut first, &mut second] {
        for u in &updates {
            assert_eq!(&next_update(stream).await, u, "in publish order");
        }
    }
}

async fn dropping_the_last_stream_of_a_user_unsubscribes(subject: &dyn Subject) {
    let [one, _] = subject.replicas();
    let alice = user("alice");
    let first = one.subscribe(&alice).await.unwrap();
    let mut second = one.subscribe(&alice).await.unwrap();
    assert!(subject.subscribed(&alice).await);

    drop(first);
    let still = update(OrderStatus::Processing);
    one.publish(&alice, &still).await.unwrap();
    assert_eq!(
        next_update(&mut second).await,
        still,
        "the other stream keeps receiving"
    );
    assert!(subject.subscribed(&alice).await);

    drop(second);
    eventually("alice is no longer subscribed", DEADLINE, || async {
        !subject.subscribed(&alice).await
    })
    .await;

    let mut again = one.subscribe(&alice).await.unwrap();
    let later = update(OrderStatus::Completed);
    one.publish(&alice, &later).await.unwrap();
    assert_eq!(
        next_update(&mut again).await,
        later,
        "a user can be watched again"
    );
}

async fn publishing_for_a_user_nobody_watches_succeeds(subject: &dyn Subject) {
    let [one, _] = subject.replicas();
    one.publish(&user("nobody"), &update(OrderStatus::Accepted))
        .await
        .unwrap();
    assert!(!subject.subscribed(&user("nobody")).await);
}

async fn is_ready_while_reachable(subject: &dyn Subject) {
    for replica in subject.replicas() {
        assert!(replica.is_ready().await);
    }
}

/// Each contract test runs twice: `in_memory::name` and `on_redis::name`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let subject = super::Memory(contoso_backplane::MemoryBackplane::new());
                    super::$name(&subject).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = super::Redis::connect(&contoso_testkit::redis_url()).await;
                    super::$name(&subject).await;
                }
            )*
        }
    };
}

contract!(
    every_replica_with_a_stream_of_the_user_receives_the_update,
    every_stream_of_a_user_in_one_replica_receives_each_update,
    dropping_the_last_stream_of_a_user_unsubscribes,
    publishing_for_a_user_nobody_watches_succeeds,
    is_ready_while_reachable,
);

// What only the Redis adapter has: a wire format others can write garbage into, and a
// connection that can die.

#[tokio::test]
async fn redis_skips_malformed_payloads() {
    let url = contoso_testkit::redis_url();
    let subject = Redis::connect(&url).await;
    let [replica, _] = &subject.replicas;
    let alice = user("alice");
    let mut stream = replica.subscribe(&alice).await.unwrap();

    let mut conn = subject.probe.clone();
    let channel = replica.channel(&alice);
    let _: i64 = conn.publish(&channel, "not json").await.unwrap();
    let _: i64 = conn
        .publish(&channel, r#"{"status":"SHIPPED"}"#)
        .await
        .unwrap();
    let good = update(OrderStatus::Completed);
    replica.publish(&alice, &good).await.unwrap();

    assert_eq!(next_update(&mut stream).await, good);
}

#[tokio::test]
async fn redis_connect_fails_with_unavailable_when_nothing_listens() {
    let url = format!("redis://127.0.0.1:{}", contoso_testkit::free_port());
    assert!(RedisBackplane::connect(&url, "x:").await.is_err());
}

/// The adapter waits up to its 5 s command timeout for a reconnect before giving up; "fast"
/// means that, plus slack for a busy machine, rather than hanging.
const FAIL_FAST: Duration = Duration::from_secs(8);

/// Waits for `stream` to end; an update or a timeout instead fails the test.
async fn expect_end(stream: &mut UpdateStream, what: &str) {
    match timeout(DEADLINE, stream.next()).await {
        Ok(None) => {}
        Ok(Some(update)) => panic!("{what}: got {update:?} instead of the end"),
        Err(_) => panic!("{what}: still open after {DEADLINE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pubsub_connection_ends_the_local_streams() {
    let server = RedisServer::start();
    let subject = Redis::connect(&server.url()).await;
    let [replica, _] = &subject.replicas;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut alice_first = replica.subscribe(&alice).await.unwrap();
    let mut alice_second = replica.subscribe(&alice).await.unwrap();
    let mut bob_stream = replica.subscribe(&bob).await.unwrap();

    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut subject.probe.clone())
        .await
        .unwrap();
    // Only a connection with subscriptions counts as a pub/sub client.
    assert_eq!(
        killed, 1,
        "the subscribed replica's pub/sub connection was killed"
    );

    expect_end(&mut alice_first, "alice's first stream").await;
    expect_end(&mut alice_second, "alice's second stream").await;
    expect_end(&mut bob_stream, "bob's stream").await;
    eventually("the replica reports ready again", DEADLINE, || {
        replica.is_ready()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_new_subscriptions_receive_updates() {
    let mut server = RedisServer::start();
    let subject = Redis::connect(&server.url()).await;
    let [replica, _] = &subject.replicas;
    let alice = user("alice");
    let mut before = replica.subscribe(&alice).await.unwrap();

    server.stop();
    expect_end(&mut before, "the stream opened before the outage").await;
    eventually("the replica notices the outage", DEADLINE, || async {
        !replica.is_ready().await
    })
    .await;
    server.restart();

    // The reconnect lands after some backoff; until then subscribing fails with Unavailable.
    let until = Instant::now() + DEADLINE * 2;
    let mut after = loop {
        if let Ok(stream) = replica.subscribe(&alice).await {
            break stream;
        }
        assert!(
            Instant::now() < until,
            "no subscription succeeded after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sent = update(OrderStatus::Completed);
    // The publishing connection may still be reconnecting; that is not what is tested here.
    while replica.publish(&alice, &sent).await.is_err() {
        assert!(Instant::now() < until, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(next_update(&mut after).await, sent);
    eventually("the replica reports ready again", DEADLINE, || {
        replica.is_ready()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_redis_is_down_fails_fast_with_unavailable() {
    let mut server = RedisServer::start();
    let subject = Redis::connect(&server.url()).await;
    let [replica, _] = &subject.replicas;

    server.stop();
    eventually("the replica notices the outage", DEADLINE, || async {
        !replica.is_ready().await
    })
    .await;
    match timeout(FAIL_FAST, replica.subscribe(&user("carol"))).await {
        Ok(Err(BackplaneError::Unavailable { .. })) => {}
        Ok(Ok(_)) => panic!("subscribed while Redis was down"),
        Err(_) => panic!("subscribe still waiting after {FAIL_FAST:?}"),
    }
}
