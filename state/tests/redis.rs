//! The `WorkflowState` contract, run against both adapters: `MemoryState` (on tokio's paused
//! clock) and `RedisState` (on the real Redis, one key prefix per test). Passing both proves the
//! in-memory adapter that `contoso dev` and unit tests use behaves like the real one.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use contoso_domain::{CorrelationId, OrderId, OrderStatus, UserId};
use contoso_state::{
    IdempotencyClaim, InflightOrder, IntakeState, MemoryState, RedisState, StateError,
    StatusReader, StatusWriter, WorkflowState,
};
use redis::{AsyncCommands, aio::MultiplexedConnection};

const TTL: Duration = Duration::from_secs(60);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn order(n: i64) -> OrderId {
    OrderId::new(n).unwrap()
}

/// One adapter under test, with the few hooks the contract needs to observe expiry.
#[async_trait]
trait Subject: Send + Sync {
    fn state(&self) -> Arc<dyn WorkflowState>;

    /// Lets `by` of the lifetime of `cid`'s map and status pass.
    async fn age(&self, cid: CorrelationId, by: Duration);

    /// The remaining TTLs of `cid`'s map and status (`None` for a missing key), where the
    /// adapter can show them.
    async fn ttls(&self, cid: CorrelationId) -> Option<[Option<Duration>; 2]>;

    /// Lets `by` of the lifetime of `user`'s in-flight entries (and their set) pass.
    async fn age_inflight(&self, user: &UserId, by: Duration);

    /// The remaining TTL of `user`'s in-flight set, where the adapter can show it.
    async fn inflight_ttl(&self, user: &UserId) -> Option<Option<Duration>>;
}

struct Memory(Arc<MemoryState>);

#[async_trait]
impl Subject for Memory {
    fn state(&self) -> Arc<dyn WorkflowState> {
        self.0.clone()
    }

    async fn age(&self, _cid: CorrelationId, by: Duration) {
        tokio::time::advance(by).await;
    }

    async fn ttls(&self, _cid: CorrelationId) -> Option<[Option<Duration>; 2]> {
        None
    }

    async fn age_inflight(&self, _user: &UserId, by: Duration) {
        tokio::time::advance(by).await;
    }

    async fn inflight_ttl(&self, _user: &UserId) -> Option<Option<Duration>> {
        None
    }
}

struct Redis {
    state: Arc<RedisState>,
    probe: MultiplexedConnection,
}

impl Redis {
    async fn connect() -> Self {
        let prefix = format!("{}:", contoso_testkit::unique_name("state"));
        let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
            .await
            .expect("connecting RedisState to the test Redis");
        Self {
            state: Arc::new(state),
            probe: probe().await,
        }
    }

    fn keys(&self, cid: CorrelationId) -> [String; 2] {
        [self.state.map_key(cid), self.state.status_key(cid)]
    }
}

async fn probe() -> MultiplexedConnection {
    redis::Client::open(contoso_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connecting a probe to the test Redis")
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> Option<Duration> {
    let ms: i64 = conn.pttl(key).await.unwrap();
    match ms {
        -2 => None,
        -1 => panic!("{key} has no TTL"),
        ms => Some(Duration::from_millis(ms as u64)),
    }
}

#[async_trait]
impl Subject for Redis {
    fn state(&self) -> Arc<dyn WorkflowState> {
        self.state.clone()
    }

    async fn age(&self, cid: CorrelationId, by: Duration) {
        let mut conn = self.probe.clone();
        for key in self.keys(cid) {
            let Some(left) = pttl(&mut conn, &key).await else {
                continue;
            };
            match left.checked_sub(by).filter(|d| !d.is_zero()) {
                Some(left) => {
                    let _: bool = conn.pexpire(&key, left.as_millis() as i64).await.unwrap();
                }
                None => {
                    let _: usize = conn.del(&key).await.unwrap();
                }
            }
        }
    }

    async fn ttls(&self, cid: CorrelationId) -> Option<[Option<Duration>; 2]> {
        let mut conn = self.probe.clone();
        let [map, status] = self.keys(cid);
        Some([pttl(&mut conn, &map).await, pttl(&mut conn, &status).await])
    }

    /// Moves each entry's recorded write time back by `by` (the layout is documented in
    /// `contoso_state::redis`) and shortens the set's TTL by as much.
    async fn age_inflight(&self, user: &UserId, by: Duration) {
        let mut conn = self.probe.clone();
        let key = self.state.inflight_key(user);
        let entries: std::collections::HashMap<String, Vec<u8>> = conn.hgetall(&key).await.unwrap();
        for (field, value) in entries {
            let (written_at, snapshot) = value.split_first_chunk::<8>().unwrap();
            let aged = i64::from_be_bytes(*written_at) - by.as_millis() as i64;
            let mut value = aged.to_be_bytes().to_vec();
            value.extend_from_slice(snapshot);
            let _: () = conn.hset(&key, field, value).await.unwrap();
        }
        let Some(left) = pttl(&mut conn, &key).await else {
            return;
        };
        match left.checked_sub(by).filter(|d| !d.is_zero()) {
            Some(left) => {
                let _: bool = conn.pexpire(&key, left.as_millis() as i64).await.unwrap();
            }
            None => {
                let _: usize = conn.del(&key).await.unwrap();
            }
        }
    }

    async fn inflight_ttl(&self, user: &UserId) -> Option<Option<Duration>> {
        let mut conn = self.probe.clone();
        Some(pttl(&mut conn, &self.state.inflight_key(user)).await)
    }
}

/// Asserts that the status (and the map, when `map_expected`) carry a TTL within the configured one.
async fn assert_ttls(subject: &dyn Subject, cid: CorrelationId, map_expected: bool) {
    let Some([map, status]) = subject.ttls(cid).await else {
        return;
    };
    let fresh = |ttl: Option<Duration>| ttl.is_some_and(|t| !t.is_zero() && t <= TTL);
    assert!(fresh(status), "status TTL {status:?} not in (0, {TTL:?}]");
    if map_expected {
        assert!(fresh(map), "map TTL {map:?} not in (0, {TTL:?}]");
    } else {
        assert_eq!(map, None, "the map must not be recreated");
    }
}

async fn record_accepted_sets_owner_and_status_until_the_ttl_passes(subject: &dyn Subject) {
    let state = subject.state();
    let cid = CorrelationId::new();
    let before = Utc::now();
    state
        .record_accepted(cid, &user("alice"), order(7), b"snapshot")
        .await
        .unwrap();

    assert_eq!(state.owner(cid).await.unwrap(), Some(user("alice")));
    let record = state
        .status(cid)
        .await
        .unwrap()
        .expect("a status after record_accepted");
    assert_eq!(record.status, OrderStatus::Accepted);
    assert_eq!(record.order_id, Some(order(7)));
    assert!(record.updated_at >= before - chrono::Duration::seconds(1));
    assert_ttls(subject, cid, true).await;

    subject.age(cid, TTL + Duration::from_secs(1)).await;
    assert_eq!(state.owner(cid).await.unwrap(), None);
    assert_eq!(state.status(cid).await.unwrap(), None);
}

fn inflight(n: i64, snapshot: &[u8]) -> InflightOrder {
    InflightOrder {
        order_id: order(n),
        snapshot: snapshot.to_vec(),
    }
}

/// Asserts that `user`'s in-flight set carries a TTL within the configured one.
async fn assert_inflight_ttl(subject: &dyn Subject, user: &UserId) {
    if let Some(ttl) = subject.inflight_ttl(user).await {
        assert!(
            ttl.is_some_and(|t| !t.is_zero() && t <= TTL),
            "in-flight TTL {ttl:?} not in (0, {TTL:?}]"
        );
    }
}

async fn record_accepted_keeps_the_snapshot_in_the_owners_inflight_set(subject: &dyn Subject) {
    let state = subject.state();
    let (alice, bob) = (user("alice"), user("bob"));
    let held = state
        .record_accepted(CorrelationId::new(), &alice, order(21), b"\x00one\xff")
        .await
        .unwrap();
    assert_eq!(held, 1);
    let held = state
        .record_accepted(CorrelationId::new(), &alice, order(22), b"")
        .await
        .unwrap();
    assert_eq!(held, 2);
    let held = state
        .record_accepted(CorrelationId::new(), &bob, order(23), b"three")
        .await
        .unwrap();
    assert_eq!(held, 1, "sets are per user");

    assert_eq!(
        state.inflight_orders(&alice).await.unwrap(),
        [inflight(21, b"\x00one\xff"), inflight(22, b"")]
    );
    assert_eq!(
        state.inflight_orders(&bob).await.unwrap(),
        [inflight(23, b"three")]
    );
    assert_eq!(state.inflight_orders(&user("nobody")).await.unwrap(), []);
    assert_eq!(
        state.inflight_order(&alice, order(21)).await.unwrap(),
        Some(b"\x00one\xff".to_vec())
    );
    assert_eq!(
        state.inflight_order(&alice, order(22)).await.unwrap(),
        Some(Vec::new())
    );
    assert_eq!(
        state.inflight_order(&bob, order(21)).await.unwrap(),
        None,
        "another user's order is not in bob's set"
    );
    assert_eq!(state.inflight_order(&alice, order(23)).await.unwrap(), None);
    assert_inflight_ttl(subject, &alice).await;

    // A retry recording the same order again keeps the entry already there.
    let held = state
        .record_accepted(CorrelationId::new(), &alice, order(21), b"again")
        .await
        .unwrap();
    assert_eq!(held, 2);
    assert_eq!(
        state.inflight_order(&alice, order(21)).await.unwrap(),
        Some(b"\x00one\xff".to_vec())
    );
}

/// A keyed retry replays the intake of an order that may be far along: the replay restores what
/// is missing and never moves a status back.
async fn replaying_record_accepted_never_moves_a_status_back_and_restores_only_what_is_missing(
    subject: &dyn Subject,
) {
    use OrderStatus::*;
    let state = subject.state();
    let alice = user("alice");
    for far_along in [vec![Processing], vec![Processing, Completed], vec![Failed]] {
        let cid = CorrelationId::new();
        state
            .record_accepted(cid, &alice, order(51), b"first")
            .await
            .unwrap();
        for status in &far_along {
            assert!(state.advance(cid, *status, None).await.unwrap());
        }
        let before = state.status(cid).await.unwrap().unwrap();

        let held = state
            .record_accepted(cid, &alice, order(51), b"replayed")
            .await
            .unwrap();
        assert_eq!(held, 1, "the replay added no entry");
        assert_eq!(
            state.status(cid).await.unwrap().unwrap(),
            before,
            "after {far_along:?}: status, order id and update time unchanged"
        );
        assert_eq!(state.owner(cid).await.unwrap(), Some(alice.clone()));
        assert_eq!(
            state.inflight_order(&alice, order(51)).await.unwrap(),
            Some(b"first".to_vec()),
            "the replay keeps the entry already there"
        );
        assert_ttls(subject, cid, true).await;
        state.drop_inflight(&alice, &[order(51)]).await.unwrap();
    }

    // A status recreated by a late advance (no map, no order id): the replay restores the map and
    // the order id and keeps the later status.
    let recreated = CorrelationId::new();
    assert!(state.advance(recreated, Processing, None).await.unwrap());
    state
        .record_accepted(recreated, &alice, order(52), b"o")
        .await
        .unwrap();
    let record = state.status(recreated).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.order_id),
        (Processing, Some(order(52)))
    );
    assert_eq!(state.owner(recreated).await.unwrap(), Some(alice.clone()));
    assert_ttls(subject, recreated, true).await;

    // Everything expired: the replay writes it all again.
    let expired = CorrelationId::new();
    state
        .record_accepted(expired, &alice, order(53), b"first")
        .await
        .unwrap();
    assert!(state.advance(expired, Completed, None).await.unwrap());
    subject.age(expired, TTL + Duration::from_secs(1)).await;
    subject
        .age_inflight(&alice, TTL + Duration::from_secs(1))
        .await;
    assert_eq!(state.status(expired).await.unwrap(), None);
    state
        .record_accepted(expired, &alice, order(53), b"again")
        .await
        .unwrap();
    let record = state.status(expired).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.order_id),
        (Accepted, Some(order(53)))
    );
    assert_eq!(state.owner(expired).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        state.inflight_order(&alice, order(53)).await.unwrap(),
        Some(b"again".to_vec())
    );
    assert_ttls(subject, expired, true).await;
}

async fn drop_inflight_removes_only_the_named_orders(subject: &dyn Subject) {
    let state = subject.state();
    let alice = user("alice");
    for n in 1..=3 {
        state
            .record_accepted(CorrelationId::new(), &alice, order(n), b"o")
            .await
            .unwrap();
    }
    state
        .drop_inflight(&alice, &[order(1), order(3), order(99)])
        .await
        .unwrap();
    assert_eq!(
        state.inflight_orders(&alice).await.unwrap(),
        [inflight(2, b"o")]
    );
    assert_eq!(state.inflight_order(&alice, order(1)).await.unwrap(), None);

    state.drop_inflight(&alice, &[]).await.unwrap();
    state
        .drop_inflight(&user("nobody"), &[order(2)])
        .await
        .unwrap();
    assert_eq!(
        state.inflight_orders(&alice).await.unwrap(),
        [inflight(2, b"o")]
    );
    state.drop_inflight(&alice, &[order(2)]).await.unwrap();
    assert_eq!(state.inflight_orders(&alice).await.unwrap(), []);
}

async fn inflight_entries_expire_a_ttl_after_they_were_written(subject: &dyn Subject) {
    let state = subject.state();
    let alice = user("alice");
    state
        .record_accepted(CorrelationId::new(), &alice, order(41), b"old")
        .await
        .unwrap();
    subject.age_inflight(&alice, TTL * 3 / 4).await;
    state
        .record_accepted(CorrelationId::new(), &alice, order(42), b"new")
        .await
        .unwrap();
    assert_inflight_ttl(subject, &alice).await;
    subject.age_inflight(&alice, TTL / 2).await;

    // The set lives on (refreshed by the second write), but the first entry is older than the TTL.
    assert_eq!(state.inflight_order(&alice, order(41)).await.unwrap(), None);
    assert_eq!(
        state.inflight_order(&alice, order(42)).await.unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(
        state.inflight_orders(&alice).await.unwrap(),
        [inflight(42, b"new")]
    );
    let held = state
        .record_accepted(CorrelationId::new(), &alice, order(43), b"newer")
        .await
        .unwrap();
    assert_eq!(held, 2, "listing removed the expired entry");

    subject.age_inflight(&alice, TTL).await;
    assert_eq!(state.inflight_orders(&alice).await.unwrap(), []);
}

async fn advance_only_moves_forward(subject: &dyn Subject) {
    use OrderStatus::*;
    let state = subject.state();
    let cid = CorrelationId::new();
    state
        .record_accepted(cid, &user("alice"), order(3), b"snapshot")
        .await
        .unwrap();

    assert!(
        !state.advance(cid, Accepted, None).await.unwrap(),
        "duplicate"
    );
    assert!(
        state.advance(cid, Processing, None).await.unwrap(),
        "forward"
    );
    assert!(
        !state.advance(cid, Processing, None).await.unwrap(),
        "duplicate"
    );
    assert!(
        !state.advance(cid, Accepted, None).await.unwrap(),
        "backward"
    );
    assert!(
        state.advance(cid, Completed, Some(order(3))).await.unwrap(),
        "forward"
    );
    assert!(
        !state.advance(cid, Failed, None).await.unwrap(),
        "a final status never changes"
    );
    assert!(
        !state.advance(cid, Processing, None).await.unwrap(),
        "backward"
    );

    let record = state.status(cid).await.unwrap().unwrap();
    assert_eq!(record.status, Completed);
    assert_eq!(record.order_id, Some(order(3)));

    let failed = CorrelationId::new();
    state
        .record_accepted(failed, &user("alice"), order(4), b"snapshot")
        .await
        .unwrap();
    assert!(
        state.advance(failed, Failed, None).await.unwrap(),
        "accepted may fail at once"
    );
    assert!(
        !state.advance(failed, Completed, None).await.unwrap(),
        "failed is final"
    );
    assert_eq!(state.status(failed).await.unwrap().unwrap().status, Failed);
}

async fn advance_keeps_the_known_order_id_when_given_none(subject: &dyn Subject) {
    let state = subject.state();
    let cid = CorrelationId::new();
    state
        .record_accepted(cid, &user("alice"), order(11), b"snapshot")
        .await
        .unwrap();
    assert!(
        state
            .advance(cid, OrderStatus::Processing, None)
            .await
            .unwrap()
    );
    assert_eq!(
        state.status(cid).await.unwrap().unwrap().order_id,
        Some(order(11))
    );
}

async fn advance_recreates_a_missing_status_but_not_the_map(subject: &dyn Subject) {
    let state = subject.state();
    let cid = CorrelationId::new();
    assert!(
        state
            .advance(cid, OrderStatus::Processing, Some(order(9)))
            .await
            .unwrap()
    );

    let record = state.status(cid).await.unwrap().unwrap();
    assert_eq!(record.status, OrderStatus::Processing);
    assert_eq!(record.order_id, Some(order(9)));
    assert_eq!(state.owner(cid).await.unwrap(), None);
    assert_ttls(subject, cid, false).await;
}

async fn restore_owner_writes_a_lost_map_with_the_ttl_and_never_replaces_one(
    subject: &dyn Subject,
) {
    let state = subject.state();
    // Lost (Redis flushed or restarted): written again, for the workflow TTL.
    let lost = CorrelationId::new();
    state.restore_owner(lost, &user("alice")).await.unwrap();
    assert_eq!(state.owner(lost).await.unwrap(), Some(user("alice")));
    if let Some([map, _]) = subject.ttls(lost).await {
        let map = map.expect("the restored map has a TTL");
        assert!(map > TTL - Duration::from_secs(5) && map <= TTL, "{map:?}");
    }
    subject.age(lost, TTL + Duration::from_secs(1)).await;
    assert_eq!(state.owner(lost).await.unwrap(), None);

    // There: kept as it is, owner and TTL.
    let kept = CorrelationId::new();
    state
        .record_accepted(kept, &user("alice"), order(3), b"")
        .await
        .unwrap();
    subject.age(kept, Duration::from_secs(20)).await;
    state.restore_owner(kept, &user("mallory")).await.unwrap();
    assert_eq!(state.owner(kept).await.unwrap(), Some(user("alice")));
    if let Some([map, _]) = subject.ttls(kept).await {
        let map = map.expect("the map has a TTL");
        assert!(map <= TTL - Duration::from_secs(20), "{map:?}");
    }
}

async fn advance_refreshes_the_ttl_of_map_and_status_and_a_refused_one_does_not(
    subject: &dyn Subject,
) {
    let state = subject.state();
    let cid = CorrelationId::new();
    state
        .record_accepted(cid, &user("alice"), order(5), b"snapshot")
        .await
        .unwrap();

    subject.age(cid, TTL * 3 / 4).await;
    assert!(
        state
            .advance(cid, OrderStatus::Processing, None)
            .await
            .unwrap()
    );
    assert_ttls(subject, cid, true).await;
    subject.age(cid, TTL * 3 / 4).await;
    assert_eq!(
        state.owner(cid).await.unwrap(),
        Some(user("alice")),
        "map refreshed"
    );
    assert!(
        state.status(cid).await.unwrap().is_some(),
        "status refreshed"
    );

    assert!(
        !state
            .advance(cid, OrderStatus::Accepted, None)
            .await
            .unwrap()
    );
    subject.age(cid, TTL / 2).await;
    assert_eq!(
        state.owner(cid).await.unwrap(),
        None,
        "a refused advance changes nothing"
    );
    assert_eq!(state.status(cid).await.unwrap(), None);
}

async fn concurrent_advances_end_at_the_highest_status(subject: &dyn Subject) {
    use OrderStatus::*;
    let state = subject.state();
    let cid = CorrelationId::new();
    state
        .record_accepted(cid, &user("alice"), order(8), b"snapshot")
        .await
        .unwrap();

    let targets = [Processing, Accepted, Completed, Processing];
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let state = state.clone();
            let target = targets[i % targets.len()];
            tokio::spawn(async move { (target, state.advance(cid, target, None).await.unwrap()) })
        })
        .collect();
    let mut moved = Vec::new();
    for task in tasks {
        let (target, advanced) = task.await.unwrap();
        if advanced {
            moved.push(target);
        }
    }

    assert_eq!(
        moved.iter().filter(|s| **s == Completed).count(),
        1,
        "{moved:?}"
    );
    assert!(
        moved.iter().filter(|s| **s == Processing).count() <= 1,
        "{moved:?}"
    );
    assert!(!moved.contains(&Accepted), "{moved:?}");
    assert_eq!(state.status(cid).await.unwrap().unwrap().status, Completed);
}

async fn idempotency_keys_are_claimed_once_completed_for_good_or_released(subject: &dyn Subject) {
    let state = subject.state();
    let (alice, bob) = (user("alice"), user("bob"));

    assert_eq!(
        state.claim_idempotency_key(&alice, "k1").await.unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        state.claim_idempotency_key(&alice, "k1").await.unwrap(),
        IdempotencyClaim::InFlight
    );
    assert_eq!(
        state.claim_idempotency_key(&bob, "k1").await.unwrap(),
        IdempotencyClaim::Claimed,
        "keys are per user"
    );

    state.release_idempotency_key(&alice, "k1").await.unwrap();
    assert_eq!(
        state.claim_idempotency_key(&alice, "k1").await.unwrap(),
        IdempotencyClaim::Claimed
    );

    state
        .complete_idempotency_key(&alice, "k1", b"\x00order 42\xff")
        .await
        .unwrap();
    let done = IdempotencyClaim::Completed(b"\x00order 42\xff".to_vec());
    assert_eq!(
        state.claim_idempotency_key(&alice, "k1").await.unwrap(),
        done
    );
    state.release_idempotency_key(&alice, "k1").await.unwrap();
    assert_eq!(
        state.claim_idempotency_key(&alice, "k1").await.unwrap(),
        done,
        "release never drops a completed result"
    );

    state.claim_idempotency_key(&alice, "empty").await.unwrap();
    state
        .complete_idempotency_key(&alice, "empty", b"")
        .await
        .unwrap();
    assert_eq!(
        state.claim_idempotency_key(&alice, "empty").await.unwrap(),
        IdempotencyClaim::Completed(Vec::new())
    );
    state
        .release_idempotency_key(&alice, "never-claimed")
        .await
        .unwrap();
}

/// Intake stores its event under the key before publishing and the confirmed order after it:
/// the first result stored wins over a late request whose claim lapsed, and only a replace
/// changes it.
async fn the_first_stored_idempotency_result_wins_and_only_a_replace_changes_it(
    subject: &dyn Subject,
) {
    let state = subject.state();
    let alice = user("alice");

    state.claim_idempotency_key(&alice, "k").await.unwrap();
    assert_eq!(
        state
            .complete_idempotency_key(&alice, "k", b"event 1")
            .await
            .unwrap(),
        None,
        "stored over the claim"
    );
    assert_eq!(
        state
            .complete_idempotency_key(&alice, "k", b"event 2")
            .await
            .unwrap(),
        Some(b"event 1".to_vec()),
        "a second result loses and learns the first"
    );
    state
        .replace_idempotency_result(&alice, "k", b"order 1")
        .await
        .unwrap();
    assert_eq!(
        state.claim_idempotency_key(&alice, "k").await.unwrap(),
        IdempotencyClaim::Completed(b"order 1".to_vec())
    );

    // A claim that lapsed (or was never taken) does not stop a result from being stored.
    assert_eq!(
        state
            .complete_idempotency_key(&alice, "unclaimed", b"event")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        state
            .claim_idempotency_key(&alice, "unclaimed")
            .await
            .unwrap(),
        IdempotencyClaim::Completed(b"event".to_vec())
    );

    // A replace never turns a claim or a free key into a result.
    state
        .claim_idempotency_key(&alice, "pending")
        .await
        .unwrap();
    state
        .replace_idempotency_result(&alice, "pending", b"x")
        .await
        .unwrap();
    assert_eq!(
        state
            .claim_idempotency_key(&alice, "pending")
            .await
            .unwrap(),
        IdempotencyClaim::InFlight
    );
    state
        .replace_idempotency_result(&alice, "free", b"x")
        .await
        .unwrap();
    assert_eq!(
        state.claim_idempotency_key(&alice, "free").await.unwrap(),
        IdempotencyClaim::Claimed
    );
}

async fn is_ready_while_reachable(subject: &dyn Subject) {
    assert!(subject.state().is_ready().await);
}

/// Each contract test runs twice: `in_memory::name` and `on_redis::name`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let subject = super::Memory(std::sync::Arc::new(
                        contoso_state::MemoryState::new(super::TTL),
                    ));
                    super::$name(&subject).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Redis::connect().await).await;
                }
            )*
        }
    };
}

contract!(
    record_accepted_sets_owner_and_status_until_the_ttl_passes,
    record_accepted_keeps_the_snapshot_in_the_owners_inflight_set,
    drop_inflight_removes_only_the_named_orders,
    replaying_record_accepted_never_moves_a_status_back_and_restores_only_what_is_missing,
    inflight_entries_expire_a_ttl_after_they_were_written,
    advance_only_moves_forward,
    advance_keeps_the_known_order_id_when_given_none,
    advance_recreates_a_missing_status_but_not_the_map,
    restore_owner_writes_a_lost_map_with_the_ttl_and_never_replaces_one,
    advance_refreshes_the_ttl_of_map_and_status_and_a_refused_one_does_not,
    concurrent_advances_end_at_the_highest_status,
    idempotency_keys_are_claimed_once_completed_for_good_or_released,
    the_first_stored_idempotency_result_wins_and_only_a_replace_changes_it,
    is_ready_while_reachable,
);

// What only the Redis adapter has: its key layout, TTLs of idempotency keys, and its errors.

#[tokio::test]
async fn redis_keys_follow_the_documented_layout() {
    let prefix = format!("{}:", contoso_testkit::unique_name("layout"));
    let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap();
    let mut conn = probe().await;
    let cid = CorrelationId::new();
    state
        .record_accepted(cid, &user("alice"), order(42), b"snapshot")
        .await
        .unwrap();
    state
        .claim_idempotency_key(&user("alice"), "k")
        .await
        .unwrap();

    let owner: String = conn.get(format!("{prefix}order:map:{cid}")).await.unwrap();
    assert_eq!(owner, "alice");
    let status: std::collections::HashMap<String, String> = conn
        .hgetall(format!("{prefix}order:status:{cid}"))
        .await
        .unwrap();
    assert_eq!(status.get("status").map(String::as_str), Some("ACCEPTED"));
    assert_eq!(status.get("order_id").map(String::as_str), Some("42"));
    assert!(status.contains_key("updated_at"));
    let exists: bool = conn.exists(format!("{prefix}idem:alice:k")).await.unwrap();
    assert!(exists);
    let entry: Vec<u8> = conn
        .hget(format!("{prefix}order:inflight:alice"), "42")
        .await
        .unwrap();
    let (written_at, snapshot) = entry.split_first_chunk::<8>().unwrap();
    let age = Utc::now().timestamp_millis() - i64::from_be_bytes(*written_at);
    assert!((0..60_000).contains(&age), "written {age} ms ago");
    assert_eq!(snapshot, b"snapshot");
}

#[tokio::test]
async fn redis_claims_expire_soon_but_completed_results_live_for_the_full_ttl() {
    let prefix = format!("{}:", contoso_testkit::unique_name("claim"));
    let claim_ttl = Duration::from_secs(10);
    let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap()
        .with_idempotency_ttl(TTL)
        .with_claim_ttl(claim_ttl);
    let mut conn = probe().await;
    let key = state.idempotency_key(&user("alice"), "k");

    state
        .claim_idempotency_key(&user("alice"), "k")
        .await
        .unwrap();
    let pending = pttl(&mut conn, &key).await.unwrap();
    assert!(pending <= claim_ttl, "claim TTL {pending:?}");

    state
        .complete_idempotency_key(&user("alice"), "k", b"r")
        .await
        .unwrap();
    let done = pttl(&mut conn, &key).await.unwrap();
    assert!(done > claim_ttl && done <= TTL, "result TTL {done:?}");

    let _: bool = conn.pexpire(&key, 1_000).await.unwrap();
    state
        .replace_idempotency_result(&user("alice"), "k", b"r2")
        .await
        .unwrap();
    let replaced = pttl(&mut conn, &key).await.unwrap();
    assert!(
        replaced > claim_ttl && replaced <= TTL,
        "a replaced result gets a fresh TTL: {replaced:?}"
    );
}

#[tokio::test]
async fn redis_completed_idempotency_keys_live_for_the_idempotency_ttl_not_the_workflow_ttl() {
    let prefix = format!("{}:", contoso_testkit::unique_name("idem-ttl"));
    let idempotency_ttl = TTL * 100;
    let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap()
        .with_idempotency_ttl(idempotency_ttl);
    let mut conn = probe().await;
    let key = state.idempotency_key(&user("alice"), "k");

    state
        .claim_idempotency_key(&user("alice"), "k")
        .await
        .unwrap();
    let pending = pttl(&mut conn, &key).await.unwrap();
    assert!(
        pending <= contoso_state::redis::DEFAULT_CLAIM_TTL,
        "claim TTL {pending:?}"
    );
    state
        .complete_idempotency_key(&user("alice"), "k", b"r")
        .await
        .unwrap();
    let done = pttl(&mut conn, &key).await.unwrap();
    assert!(done > TTL && done <= idempotency_ttl, "result TTL {done:?}");

    let default = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap();
    default
        .claim_idempotency_key(&user("bob"), "k")
        .await
        .unwrap();
    default
        .complete_idempotency_key(&user("bob"), "k", b"r")
        .await
        .unwrap();
    let done = pttl(&mut conn, &default.idempotency_key(&user("bob"), "k"))
        .await
        .unwrap();
    assert!(
        done > contoso_state::DEFAULT_IDEMPOTENCY_TTL - Duration::from_secs(60)
            && done <= contoso_state::DEFAULT_IDEMPOTENCY_TTL,
        "default result TTL {done:?}"
    );
}

#[tokio::test]
async fn redis_reports_a_malformed_inflight_entry_as_corrupt() {
    let prefix = format!("{}:", contoso_testkit::unique_name("inflight-corrupt"));
    let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap();
    let mut conn = probe().await;
    let alice = user("alice");
    let _: () = conn
        .hset(state.inflight_key(&alice), "7", b"short".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        state.inflight_orders(&alice).await,
        Err(StateError::Corrupt { .. })
    ));
    assert!(matches!(
        state.inflight_order(&alice, order(7)).await,
        Err(StateError::Corrupt { .. })
    ));
    let bob = user("bob");
    let _: () = conn
        .hset(state.inflight_key(&bob), "not-an-id", vec![0u8; 9])
        .await
        .unwrap();
    let _: bool = conn.expire(state.inflight_key(&bob), 60).await.unwrap();
    let _: bool = conn.expire(state.inflight_key(&alice), 60).await.unwrap();
    let err = state.inflight_orders(&bob).await.unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn redis_reports_unreadable_values_as_corrupt() {
    let prefix = format!("{}:", contoso_testkit::unique_name("corrupt"));
    let state = RedisState::connect(&contoso_testkit::redis_url(), &prefix, TTL)
        .await
        .unwrap();
    let mut conn = probe().await;

    let wrong_type = CorrelationId::new();
    let _: () = conn
        .set_ex(state.status_key(wrong_type), "ACCEPTED", 60)
        .await
        .unwrap();
    assert!(matches!(
        state.status(wrong_type).await,
        Err(StateError::Corrupt { .. })
    ));
    assert!(matches!(
        state
            .advance(wrong_type, OrderStatus::Processing, None)
            .await,
        Err(StateError::Corrupt { .. })
    ));

    let unknown = CorrelationId::new();
    let _: () = conn
        .hset_multiple(
            state.status_key(unknown),
            &[("status", "SHIPPED"), ("updated_at", "x")],
        )
        .await
        .unwrap();
    let _: bool = conn.expire(state.status_key(unknown), 60).await.unwrap();
    assert!(matches!(
        state.advance(unknown, OrderStatus::Processing, None).await,
        Err(StateError::Corrupt { .. })
    ));
    assert!(matches!(
        state.status(unknown).await,
        Err(StateError::Corrupt { .. })
    ));

    let bad_owner = CorrelationId::new();
    let _: () = conn
        .set_ex(state.map_key(bad_owner), "   ", 60)
        .await
        .unwrap();
    assert!(matches!(
        state.owner(bad_owner).await,
        Err(StateError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn redis_connect_fails_with_unavailable_when_nothing_listens() {
    let url = format!("redis://127.0.0.1:{}", contoso_testkit::free_port());
    let err = RedisState::connect(&url, "x:", TTL).await.unwrap_err();
    assert!(matches!(err, StateError::Unavailable { .. }), "{err:?}");
}
