//! The in-process [`Bus`] behind `contoso dev` and unit tests. It mimics the JetStream adapter:
//! a retained, bounded log; durable consumer groups that start from the oldest retained message,
//! share each message among their subscribers and fan out across groups (or, with
//! [`StartPolicy::New`], start at the next message); deduplication by message id inside a window;
//! redelivery after a nack delay or the ack wait; dead letters, for messages a consumer gave up on
//! and messages that ran out of `max_deliver`, listed and replayed through [`DeadLetters`].

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tokio::{sync::Notify, time::Instant};

use crate::{
    Acknowledge, Bus, BusError, ConsumerSpec, DeadLetter, DeadLetters, Deliveries, Delivery,
    DeliveryTrace, Envelope, StartPolicy, Topic, dead_letter::one_line, telemetry,
};

/// `messaging.system` of this adapter.
const SYSTEM: &str = "memory";

/// The destination a topic is named by in spans: its subject under the default prefix, as on
/// NATS.
fn destination(topic: Topic) -> String {
    format!("orders.{topic}")
}

/// Messages retained before the oldest is dropped.
pub const DEFAULT_MAX_MESSAGES: usize = 100_000;
/// How long a message id is remembered to drop a second publish of it (JetStream's default).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// JetStream uses 30 s when a consumer asks for no ack wait; so do we, so a zero never turns into
/// an immediate redelivery loop.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Caps caller-supplied delays so deadline arithmetic cannot overflow.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// An in-memory bus with JetStream-like semantics. Clones share the same log and groups.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    max_messages: usize,
    duplicate_window: Duration,
}

#[derive(Default)]
struct State {
    /// Contiguous sequence numbers: `log[i].seq == next_seq - log.len() + i`.
    log: VecDeque<Stored>,
    next_seq: u64,
    /// Message id → when it may be published again.
    seen: HashMap<String, Instant>,
    /// The same ids in publish order, so expiry is a pop from the front.
    seen_order: VecDeque<(Instant, String)>,
    groups: HashMap<String, Group>,
    /// Dead letters by id, oldest first.
    dead: BTreeMap<u64, DeadLetter>,
    /// The last dead-letter id handed out (ids start at 1, as stream sequences do).
    last_dead_id: u64,
}

struct Stored {
    seq: u64,
    topic: Topic,
    message_id: String,
    payload: Bytes,
    /// The publisher's trace context.
    headers: Vec<(String, String)>,
}

struct Group {
    topics: Vec<Topic>,
    max_deliver: i64,
    ack_wait: Duration,
    max_ack_pending: i64,
    /// Next sequence this group has not looked at yet.
    cursor: u64,
    /// Delivered and not acknowledged, by sequence. Includes nacked messages waiting out their
    /// delay, as JetStream counts them against `max_ack_pending` too.
    pending: BTreeMap<u64, Pending>,
    notify: Arc<Notify>,
}

struct Pending {
    delivered: u64,
    /// When the message becomes deliverable again (ack wait or nack delay).
    due: Instant,
}

/// What a subscriber takes out of the state under the lock.
struct Taken {
    seq: u64,
    delivered: u64,
    topic: Topic,
    message_id: String,
    payload: Bytes,
    headers: Vec<(String, String)>,
}

impl MemoryBus {
    /// A bus retaining [`DEFAULT_MAX_MESSAGES`] with a [`DEFAULT_DUPLICATE_WINDOW`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_MESSAGES, DEFAULT_DUPLICATE_WINDOW)
    }

    /// A bus retaining at most `max_messages` (at least one) and remembering message ids for
    /// `duplicate_window`.
    pub fn with_limits(max_messages: usize, duplicate_window: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                max_messages: max_messages.max(1),
                duplicate_window: duplicate_window.min(MAX_DELAY),
            }),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: the log can hold a hundred thousand payloads.
        let state = self.shared.lock();
        f.debug_struct("MemoryBus")
            .field("retained", &state.log.len())
            .field("groups", &state.groups.len())
            .field("max_messages", &self.shared.max_messages)
            .finish()
    }
}

impl Shared {
    /// Every critical section is short and panic-free, so a poisoned lock still holds a
    /// consistent state and is safe to keep using.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_group<R>(&self, group: &str, f: impl FnOnce(&mut Group) -> R) -> Option<R> {
        let mut state = self.lock();
        let group = state.groups.get_mut(group)?;
        let result = f(group);
        group.notify.notify_waiters();
        Some(result)
    }
}

impl State {
    fn first_seq(&self) -> u64 {
        self.next_seq - self.log.len() as u64
    }

    /// Stores a dead letter unless this group already dead-lettered this message.
    fn capture(
        dead: &mut BTreeMap<u64, DeadLetter>,
        last_dead_id: &mut u64,
        group: &str,
        message: Captured,
        reason: &str,
    ) {
        let duplicate = dead
            .values()
            .any(|d| d.stream_sequence == Some(message.seq) && d.consumer == group);
        if duplicate {
            return;
        }
        *last_dead_id += 1;
        let id = *last_dead_id;
        tracing::warn!(
            dead_letter = id,
            group,
            seq = message.seq,
            reason,
            "message dead-lettered"
        );
        dead.insert(
            id,
            DeadLetter {
                id,
                dead_at: Utc::now(),
                subject: message.topic.to_string(),
                topic: Some(message.topic),
                consumer: group.to_owned(),
                deliveries: message.delivered,
                reason: one_line(reason),
                message_id: Some(message.message_id).filter(|id| !id.is_empty()),
                stream_sequence: Some(message.seq),
                headers: message.headers,
                payload: message.payload,
            },
        );
    }

    fn forget_expired_ids(&mut self, now: Instant) {
        while let Some((expiry, _)) = self.seen_order.front() {
            if *expiry > now {
                break;
            }
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }

    /// Appends unless the id was seen inside the window; returns whether it was stored.
    fn append(
        &mut self,
        envelope: Envelope,
        headers: Vec<(String, String)>,
        now: Instant,
        shared: &Shared,
    ) -> bool {
        self.forget_expired_ids(now);
        // An empty id means "no id": there is nothing to deduplicate on.
        if !envelope.message_id.is_empty() {
            if self.seen.contains_key(&envelope.message_id) {
                return false;
            }
            let expiry = now + shared.duplicate_window;
            self.seen.insert(envelope.message_id.clone(), expiry);
            self.seen_order
                .push_back((expiry, envelope.message_id.clone()));
            if self.seen_order.len() > shared.max_messages
                && let Some((_, id)) = self.seen_order.pop_front()
            {
                self.seen.remove(&id);
            }
        }
        self.log.push_back(Stored {
            seq: self.next_seq,
            topic: envelope.topic,
            message_id: envelope.message_id,
            payload: envelope.payload,
            headers,
        });
        self.next_seq += 1;
        while self.log.len() > shared.max_messages {
            if let Some(dropped) = self.log.pop_front() {
                tracing::warn!(
                    message_id = %dropped.message_id,
                    seq = dropped.seq,
                    max_messages = shared.max_messages,
                    "memory bus is full; dropping its oldest message"
                );
            }
        }
        true
    }

    /// The next delivery for `group`, or when to look again (`None`: only a publish or an
    /// ack can change the answer).
    fn take(&mut self, group_name: &str, now: Instant) -> Result<Taken, Option<Instant>> {
        let first_seq = self.first_seq();
        let next_seq = self.next_seq;
        let State {
            log,
            groups,
            dead,
            last_dead_id,
            ..
        } = self;
        let Some(group) = groups.get_mut(group_name) else {
            return Err(None);
        };
        let stored = |seq: u64| -> Option<&Stored> {
            let index = usize::try_from(seq.checked_sub(first_seq)?).ok()?;
            log.get(index)
        };

        // Redeliveries first, oldest first, as JetStream does.
        while let Some(seq) = group
            .pending
            .iter()
            .find(|(_, p)| p.due <= now)
            .map(|(s, _)| *s)
        {
            let Some(message) = stored(seq) else {
                group.pending.remove(&seq);
                tracing::warn!(
                    group = group_name,
                    seq,
                    "message left the memory bus before it was acknowledged"
                );
                continue;
            };
            let Some(pending) = group.pending.get_mut(&seq) else {
                continue;
            };
            if group.max_deliver > 0 && pending.delivered >= group.max_deliver.unsigned_abs() {
                // What the NATS adapter does with the broker's MAX_DELIVERIES advisory.
                let delivered = pending.delivered;
                group.pending.remove(&seq);
                let reason = format!(
                    "the broker gave up after {delivered} deliveries (max_deliver {})",
                    group.max_deliver
                );
                State::capture(
                    dead,
                    last_dead_id,
                    group_name,
                    Captured::of(message, delivered),
                    &reason,
                );
                continue;
            }
            pending.delivered += 1;
            pending.due = now + group.ack_wait;
            return Ok(Taken::new(message, pending.delivered));
        }

        let limit = usize::try_from(group.max_ack_pending).unwrap_or(0);
        if limit == 0 || group.pending.len() < limit {
            group.cursor = group.cursor.max(first_seq);
            while group.cursor < next_seq {
                let seq = group.cursor;
                group.cursor += 1;
                if let Some(message) = stored(seq).filter(|m| group.topics.contains(&m.topic)) {
                    group.pending.insert(
                        seq,
                        Pending {
                            delivered: 1,
                            due: now + group.ack_wait,
                        },
                    );
                    return Ok(Taken::new(message, 1));
                }
            }
        }
        Err(group.pending.values().map(|p| p.due).min())
    }
}

/// A message as it is dead-lettered.
struct Captured {
    seq: u64,
    delivered: u64,
    topic: Topic,
    message_id: String,
    payload: Bytes,
    headers: Vec<(String, String)>,
}

impl Captured {
    fn of(message: &Stored, delivered: u64) -> Self {
        Self {
            seq: message.seq,
            delivered,
            topic: message.topic,
            message_id: message.message_id.clone(),
            payload: message.payload.clone(),
            headers: message.headers.clone(),
        }
    }
}

impl Taken {
    fn new(message: &Stored, delivered: u64) -> Self {
        Self {
            seq: message.seq,
            delivered,
            topic: message.topic,
            message_id: message.message_id.clone(),
            payload: message.payload.clone(),
            headers: message.headers.clone(),
        }
    }
}

/// One subscriber of a group: the stream's state.
struct Subscriber {
    shared: Arc<Shared>,
    group: String,
    notify: Arc<Notify>,
}

impl Subscriber {
    async fn next(&self) -> Delivery {
        loop {
            // Registered before looking, so a publish between the look and the wait still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let wake = match self.shared.lock().take(&self.group, Instant::now()) {
                Ok(taken) => return self.delivery(taken),
                Err(wake) => wake,
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn delivery(&self, taken: Taken) -> Delivery {
        let acker = MemoryAck {
            shared: Arc::clone(&self.shared),
            group: self.group.clone(),
            seq: taken.seq,
            delivered: taken.delivered,
            topic: taken.topic,
            message_id: taken.message_id.clone(),
            payload: taken.payload.clone(),
            headers: taken.headers.clone(),
        };
        let message_id = Some(taken.message_id).filter(|id| !id.is_empty());
        Delivery::new(
            taken.topic,
            message_id,
            taken.payload,
            taken.delivered,
            taken.seq,
            Box::new(acker),
        )
        .traced(DeliveryTrace {
            system: SYSTEM,
            group: self.group.clone(),
            destination: destination(taken.topic),
            headers: taken.headers,
        })
    }
}

/// Acknowledges one delivery. Nack and progress from a delivery that was since redelivered are
/// ignored, as the broker ignores them; an ack always settles the message.
struct MemoryAck {
    shared: Arc<Shared>,
    group: String,
    seq: u64,
    delivered: u64,
    /// The message itself, so it can be dead-lettered even after it left the log.
    topic: Topic,
    message_id: String,
    payload: Bytes,
    headers: Vec<(String, String)>,
}

impl MemoryAck {
    fn captured(&self) -> Captured {
        Captured {
            seq: self.seq,
            delivered: self.delivered,
            topic: self.topic,
            message_id: self.message_id.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
        }
    }

    fn set_due(&self, after: Duration) {
        self.shared.with_group(&self.group, |group| {
            if let Some(pending) = group.pending.get_mut(&self.seq)
                && pending.delivered == self.delivered
            {
                pending.due = Instant::now() + after.min(MAX_DELAY);
            }
        });
    }
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn ack(&self) -> Result<(), BusError> {
        self.shared
            .with_group(&self.group, |group| group.pending.remove(&self.seq));
        Ok(())
    }

    async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        let State {
            groups,
            dead,
            last_dead_id,
            ..
        } = &mut *state;
        let Some(group) = groups.get_mut(&self.group) else {
            return Ok(());
        };
        let exhausted = group.max_deliver > 0 && self.delivered >= group.max_deliver.unsigned_abs();
        match group.pending.get_mut(&self.seq) {
            Some(pending) if pending.delivered == self.delivered && exhausted => {
                // The last delivery was refused: give up now rather than at the next look, as
                // the broker does.
                group.pending.remove(&self.seq);
                let reason = format!(
                    "the broker gave up after {} deliveries (max_deliver {})",
                    self.delivered, group.max_deliver
                );
                State::capture(dead, last_dead_id, &self.group, self.captured(), &reason);
            }
            Some(pending) if pending.delivered == self.delivered => {
                pending.due = Instant::now() + delay.min(MAX_DELAY);
            }
            _ => {}
        }
        group.notify.notify_waiters();
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        let ack_wait = self.shared.with_group(&self.group, |group| group.ack_wait);
        if let Some(ack_wait) = ack_wait {
            self.set_due(ack_wait);
        }
        Ok(())
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        let State {
            groups,
            dead,
            last_dead_id,
            ..
        } = &mut *state;
        State::capture(dead, last_dead_id, &self.group, self.captured(), reason);
        if let Some(group) = groups.get_mut(&self.group) {
            group.pending.remove(&self.seq);
            group.notify.notify_waiters();
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        let topic = envelope.topic;
        let span = telemetry::publish_span(SYSTEM, &destination(topic), &envelope);
        let _entered = span.enter();
        let headers = contoso_telemetry::headers_of(&span);
        let message_id = envelope.message_id.clone();
        let mut state = self.shared.lock();
        telemetry::METRICS
            .published
            .get_or_create(&telemetry::topic_labels(topic))
            .inc();
        if !state.append(envelope, headers, Instant::now(), &self.shared) {
            tracing::debug!(%message_id, "duplicate publish dropped");
            return Ok(());
        }
        for group in state.groups.values().filter(|g| g.topics.contains(&topic)) {
            group.notify.notify_waiters();
        }
        Ok(())
    }

    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        if spec.group.is_empty() {
            return Err(BusError::consumer(
                "configuring a consumer",
                "the consumer group has no name",
            ));
        }
        if spec.topics.is_empty() {
            return Err(BusError::consumer(
                format!("configuring consumer group {}", spec.group),
                "it names no topics",
            ));
        }
        let ack_wait = if spec.ack_wait.is_zero() {
            DEFAULT_ACK_WAIT
        } else {
            spec.ack_wait.min(MAX_DELAY)
        };
        let mut state = self.shared.lock();
        let cursor = match spec.start {
            StartPolicy::All => state.first_seq(),
            StartPolicy::New => state.next_seq,
        };
        // Opening an existing group updates its settings and keeps its position, like JetStream's
        // create-or-update of a durable consumer.
        let group = state
            .groups
            .entry(spec.group.clone())
            .or_insert_with(|| Group {
                topics: Vec::new(),
                max_deliver: 0,
                ack_wait,
                max_ack_pending: 0,
                cursor,
                pending: BTreeMap::new(),
                notify: Arc::new(Notify::new()),
            });
        group.topics.clone_from(&spec.topics);
        group.max_deliver = spec.max_deliver;
        group.ack_wait = ack_wait;
        group.max_ack_pending = spec.max_ack_pending;
        let subscriber = Subscriber {
            shared: Arc::clone(&self.shared),
            group: spec.group.clone(),
            notify: Arc::clone(&group.notify),
        };
        drop(state);

        let deliveries = futures::stream::unfold(subscriber, |subscriber| async move {
            let delivery = subscriber.next().await;
            Some((Ok(delivery), subscriber))
        });
        Ok(deliveries.boxed())
    }

    async fn is_ready(&self) -> bool {
        true
    }
}

#[async_trait]
impl DeadLetters for MemoryBus {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let state = self.shared.lock();
        Ok(state.dead.values().take(limit).cloned().collect())
    }

    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        Ok(self.shared.lock().dead.get(&id).cloned())
    }

    async fn replay(&self, id: u64) -> Result<bool, BusError> {
        let mut state = self.shared.lock();
        let Some(letter) = state.dead.remove(&id) else {
            return Ok(false);
        };
        let Some(topic) = letter.topic else {
            // Never on this bus: everything on it has a topic.
            state.dead.insert(id, letter);
            return Err(BusError::dead_letters(
                format!("replaying dead letter {id}"),
                "its subject maps to no topic",
            ));
        };
        let envelope = Envelope {
            topic,
            message_id: letter.replay_message_id(),
            payload: letter.payload,
        };
        // Removed and republished under one lock: a second replay of the same id finds nothing.
        if state.append(envelope, letter.headers, Instant::now(), &self.shared) {
            for group in state.groups.values().filter(|g| g.topics.contains(&topic)) {
                group.notify.notify_waiters();
            }
        }
        Ok(true)
    }

    async fn purge(&self, id: u64) -> Result<bool, BusError> {
        Ok(self.shared.lock().dead.remove(&id).is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn envelope(topic: Topic, id: &str) -> Envelope {
        Envelope {
            topic,
            message_id: id.to_owned(),
            payload: Bytes::from(format!("payload of {id}")),
        }
    }

    async fn publish(bus: &MemoryBus, topic: Topic, ids: &[&str]) {
        for id in ids {
            bus.publish(envelope(topic, id)).await.expect("publish");
        }
    }

    async fn next(deliveries: &mut Deliveries) -> Delivery {
        timeout(WAIT, deliveries.next())
            .await
            .expect("a delivery in time")
            .expect("the stream stays open")
            .expect("a delivery, not an error")
    }

    async fn assert_nothing_within(deliveries: &mut Deliveries, window: Duration) {
        if let Ok(Some(extra)) = timeout(window, deliveries.next()).await {
            panic!("expected no delivery, got {extra:?}");
        }
    }

    fn id(delivery: &Delivery) -> &str {
        delivery.message_id.as_deref().unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_opened_after_publishing_receives_earlier_messages_from_the_beginning() {
        let bus = MemoryBus::new();
        publish(&bus, Topic::OrderAccepted, &["a", "b", "c"]).await;

        let mut late = bus
            .consume(&ConsumerSpec::new("late", [Topic::OrderAccepted]))
            .await
            .unwrap();

        for expected in ["a", "b", "c"] {
            let delivery = next(&mut late).await;
            assert_eq!(id(&delivery), expected);
            assert_eq!(delivery.attempt, 1);
            assert_eq!(
                delivery.payload,
                Bytes::from(format!("payload of {expected}"))
            );
            delivery.ack().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn two_subscribers_of_one_group_get_each_message_once_between_them() {
        let bus = MemoryBus::new();
        let spec = ConsumerSpec::new("workers", [Topic::OrderAccepted]);
        let first = bus.consume(&spec).await.unwrap();
        let second = bus.consume(&spec).await.unwrap();
        let mut both = futures::stream::select(first, second).boxed();
        let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        for id in &ids {
            bus.publish(envelope(Topic::OrderAccepted, id))
                .await
                .unwrap();
        }

        let mut received = Vec::new();
        for _ in 0..ids.len() {
            let delivery = next(&mut both).await;
            delivery.ack().await.unwrap();
            received.push(id(&delivery).to_owned());
        }

        let unique: HashSet<_> = received.iter().cloned().collect();
        assert_eq!(unique.len(), received.len(), "duplicates in {received:?}");
        assert_eq!(unique, ids.into_iter().collect());
        assert_nothing_within(&mut both, spec.ack_wait * 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn every_group_receives_every_message_of_its_topics() {
        let bus = MemoryBus::new();
        let mut intake = bus
            .consume(&ConsumerSpec::new("intake", [Topic::OrderAccepted]))
            .await
            .unwrap();
        let mut notify = bus
            .consume(&ConsumerSpec::new(
                "notify",
                [Topic::OrderAccepted, Topic::OrderProcessed],
            ))
            .await
            .unwrap();
        publish(&bus, Topic::OrderAccepted, &["accepted-1"]).await;
        publish(&bus, Topic::OrderProcessed, &["processed-1"]).await;
        publish(&bus, Topic::OrderAccepted, &["accepted-2"]).await;

        assert_eq!(id(&next(&mut intake).await), "accepted-1");
        assert_eq!(id(&next(&mut intake).await), "accepted-2");
        assert_eq!(id(&next(&mut notify).await), "accepted-1");
        let processed = next(&mut notify).await;
        assert_eq!(
            (id(&processed), processed.topic),
            ("processed-1", Topic::OrderProcessed)
        );
        assert_eq!(id(&next(&mut notify).await), "accepted-2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_message_id_is_stored_once_inside_the_duplicate_window() {
        let window = Duration::from_secs(120);
        let bus = MemoryBus::with_limits(DEFAULT_MAX_MESSAGES, window);
        let mut deliveries = bus
            .consume(&ConsumerSpec::new("g", [Topic::OrderAccepted]))
            .await
            .unwrap();
        bus.publish(envelope(Topic::OrderAccepted, "dup"))
            .await
            .unwrap();
        let mut second = envelope(Topic::OrderAccepted, "dup");
        second.payload = Bytes::from_static(b"second");
        bus.publish(second.clone()).await.unwrap();
        publish(&bus, Topic::OrderAccepted, &["other"]).await;

        let first = next(&mut deliveries).await;
        assert_eq!(
            (id(&first), first.payload.as_ref()),
            ("dup", b"payload of dup".as_ref())
        );
        first.ack().await.unwrap();
        let other = next(&mut deliveries).await;
        assert_eq!(id(&other), "other");
        other.ack().await.unwrap();

        tokio::time::advance(window).await;
        bus.publish(second).await.unwrap();
        let after_window = next(&mut deliveries).await;
        assert_eq!(
            (id(&after_window), after_window.payload.as_ref()),
            ("dup", b"second".as_ref())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_redelivers_after_its_delay_with_attempt_2() {
        let bus = MemoryBus::new();
        let mut deliveries = bus
            .consume(&ConsumerSpec::new("g", [Topic::OrderAccepted]))
            .await
            .unwrap();
        publish(&bus, Topic::OrderAccepted, &["m"]).await;
        let delay = Duration::from_secs(3);

        next(&mut deliveries).await.nack(delay).await.unwrap();
        let nacked_at = Instant::now();
        let again = next(&mut deliveries).await;

        assert_eq!((id(&again), again.attempt), ("m", 2));
        assert!(
            nacked_at.elapsed() >= delay,
            "redelivered after {:?}",
            nacked_at.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unacknowledged_delivery_is_redelivered_after_ack_wait() {
        let bus = MemoryBus::new();
        let mut spec = ConsumerSpec::new("g", [Topic::OrderAccepted]);
        spec.ack_wait = Duration::from_secs(2);
        let mut deliveries = bus.consume(&spec).await.unwrap();
        publish(&bus, Topic::OrderAccepted, &["m"]).await;

        let first = next(&mut deliveries).await;
        let delivered_at = Instant::now();
        let again = next(&mut deliveries).await;

        assert_eq!((id(&again), again.attempt), ("m", 2));
        assert!(delivered_at.elapsed() >= spec.ack_wait);
        // The stale delivery's ack still settles the message.
        first.ack().await.unwrap();
        assert_nothing_within(&mut deliveries, spec.ack_wait * 3).await;
    }

    #[tokio::test(start_paused = true)]
    async fn in_progress_postpones_the_ack_wait_redelivery() {
        let bus = MemoryBus::new();
        let mut spec = ConsumerSpec::new("g", [Topic::OrderAccepted]);
        spec.ack_wait = Duration::from_secs(2);
        let mut deliveries = bus.consume(&spec).await.unwrap();
        publish(&bus, Topic::OrderAccepted, &["m"]).await;
        let delivery = next(&mut deliveries).await;

        tokio::time::advance(Duration::from_millis(1500)).await;
        delivery.in_progress().await.unwrap();
        assert_nothing_within(&mut deliveries, Duration::from_millis(1900)).await;

        assert_eq!(next(&mut deliveries).await.attempt, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_dead_lettered_after_max_deliver_deliveries() {
        let bus = MemoryBus::new();
        let mut spec = ConsumerSpec::new("g", [Topic::OrderAccepted]);
        spec.max_deliver = 3;
        let mut deliveries = bus.consume(&spec).await.unwrap();
        publish(&bus, Topic::OrderAccepted, &["poison"]).await;

        for attempt in 1..=3 {
            let delivery = next(&mut deliveries).await;
            assert_eq!((id(&delivery), delivery.attempt), ("poison", attempt));
            delivery.nack(Duration::ZERO).await.unwrap();
        }
        assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;

        publish(&bus, Topic::OrderAccepted, &["healthy"]).await;
        assert_eq!(id(&next(&mut deliveries).await), "healthy");
        // Not dropped: kept in the dead letters, as the NATS adapter keeps it.
        let dead = bus.list(10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(
            (
                dead[0].message_id.as_deref(),
                dead[0].consumer.as_str(),
                dead[0].deliveries
            ),
            (Some("poison"), "g", 3)
        );
        assert!(dead[0].reason.contains("max_deliver"), "{}", dead[0].reason);
        assert_eq!(dead[0].payload, Bytes::from_static(b"payload of poison"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_created_with_start_new_skips_earlier_messages_and_keeps_its_position() {
        let bus = MemoryBus::new();
        publish(&bus, Topic::OrderProcessed, &["old"]).await;
        let mut spec = ConsumerSpec::new("status", [Topic::OrderProcessed]);
        spec.start = StartPolicy::New;
        let mut deliveries = bus.consume(&spec).await.unwrap();
        publish(&bus, Topic::OrderProcessed, &["new"]).await;

        let delivery = next(&mut deliveries).await;
        assert_eq!(id(&delivery), "new");
        delivery.ack().await.unwrap();
        assert_nothing_within(&mut deliveries, spec.ack_wait * 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_ack_pending_holds_back_new_messages_until_an_ack() {
        let bus = MemoryBus::new();
        let mut spec = ConsumerSpec::new("g", [Topic::OrderAccepted]);
        spec.max_ack_pending = 1;
        let mut deliveries = bus.consume(&spec).await.unwrap();
        publish(&bus, Topic::OrderAccepted, &["a", "b"]).await;

        let first = next(&mut deliveries).await;
        assert_nothing_within(&mut deliveries, spec.ack_wait / 2).await;
        first.ack().await.unwrap();

        assert_eq!(id(&next(&mut deliveries).await), "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_log_drops_its_oldest_messages() {
        let bus = MemoryBus::with_limits(2, DEFAULT_DUPLICATE_WINDOW);
        publish(&bus, Topic::OrderAccepted, &["a", "b", "c"]).await;

        let mut deliveries = bus
            .consume(&ConsumerSpec::new("g", [Topic::OrderAccepted]))
            .await
            .unwrap();

        assert_eq!(id(&next(&mut deliveries).await), "b");
        assert_eq!(id(&next(&mut deliveries).await), "c");
    }

    #[tokio::test]
    async fn a_consumer_without_topics_is_refused() {
        let bus = MemoryBus::new();
        let refused = bus.consume(&ConsumerSpec::new("g", Vec::new())).await;
        assert!(matches!(refused, Err(BusError::Consumer { .. })));
    }
}
