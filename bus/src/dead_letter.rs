//! Dead letters: messages a consumer gave up on ([`Delivery::dead_letter`](crate::Delivery)), or
//! the broker gave up on after `max_deliver` deliveries. Each keeps what is needed to understand
//! and replay it: the original subject, headers and payload, the consumer group, how often it was
//! delivered, why it was given up on and when. [`DeadLetters`] lists, shows, replays and purges
//! them; both adapters implement it (`MemoryBus` in a list, `NatsBus` in a stream of its own).

use std::{
    collections::HashMap,
    fmt,
    sync::{Mutex, PoisonError},
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{BusError, Delivery, Topic};

/// Longest reason kept, in characters; a reason is a line for an operator, not a log.
pub const MAX_REASON_CHARS: usize = 1000;

/// One dead-lettered message.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead letters (the dead-letter stream's sequence on NATS).
    pub id: u64,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
    /// The subject it was published on (the topic name on the memory bus).
    pub subject: String,
    /// The topic of that subject, when it maps to one.
    pub topic: Option<Topic>,
    /// The consumer group that gave up on it.
    pub consumer: String,
    /// How often it was delivered to that group.
    pub deliveries: u64,
    /// Why it was given up on.
    pub reason: String,
    /// The publisher's deduplication id, when it set one.
    pub message_id: Option<String>,
    /// Its sequence in the original stream, when known.
    pub stream_sequence: Option<u64>,
    /// The other headers it was published with (name, value), in name order.
    pub headers: Vec<(String, String)>,
    /// The published bytes, unchanged.
    pub payload: Bytes,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("dead_at", &self.dead_at)
            .field("subject", &self.subject)
            .field("consumer", &self.consumer)
            .field("deliveries", &self.deliveries)
            .field("reason", &self.reason)
            .field("message_id", &self.message_id)
            .field("stream_sequence", &self.stream_sequence)
            .field("headers", &self.headers)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl DeadLetter {
    /// The message id a replay of this entry is published with: unique to the entry, so the
    /// broker's deduplication window cannot drop it as a copy of the original (or of an earlier
    /// replay of the same message that was dead-lettered again), yet two replays of this one
    /// entry racing each other are stored once.
    pub fn replay_message_id(&self) -> String {
        match &self.message_id {
            Some(original) => format!("{original}:replay:{}", self.id),
            None => format!("replay:{}", self.id),
        }
    }
}

/// Operating the dead letters (the `contoso dlq` command). Replay is at least once: the message
/// is published again and then removed, and every consumer is idempotent; replaying an entry
/// that is gone (already replayed or purged) does nothing.
#[async_trait]
pub trait DeadLetters: Send + Sync + fmt::Debug {
    /// The oldest `limit` dead letters, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// One dead letter, if it is still there.
    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, BusError>;

    /// Publishes the message again on its original subject with its original payload and
    /// headers (message id: [`DeadLetter::replay_message_id`]), then removes the entry. False
    /// when there is no such entry.
    async fn replay(&self, id: u64) -> Result<bool, BusError>;

    /// Removes the entry without replaying it. False when there is no such entry.
    async fn purge(&self, id: u64) -> Result<bool, BusError>;
}

/// A reason as one line of at most [`MAX_REASON_CHARS`]: control characters (a header value
/// cannot hold a line break) become spaces.
pub fn one_line(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let line = line.trim();
    if line.is_empty() {
        "no reason given".to_owned()
    } else {
        line.to_owned()
    }
}

/// Messages tracked at most by [`Strikes`]; past this, the counts start over (which only means
/// more retries).
const MAX_TRACKED: usize = 10_000;

/// Counts, per message, the failures that should count towards giving up on it. The broker counts
/// every delivery, including those that failed only because a dependency was down; a consumer
/// that must ride out an outage of any length runs without a broker limit, strikes only the
/// failures of unknown cause, and dead-letters a message once they reach its budget. The counts
/// live in this replica's memory: a restart forgets them, which costs retries, never messages.
#[derive(Debug, Default)]
pub struct Strikes {
    counts: Mutex<HashMap<u64, u64>>,
}

impl Strikes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more failure of `delivery`'s message and returns how many it has had.
    pub fn strike(&self, delivery: &Delivery) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_TRACKED && !counts.contains_key(&delivery.sequence) {
            counts.clear();
        }
        let count = counts.entry(delivery.sequence).or_default();
        *count += 1;
        *count
    }

    /// Forgets `delivery`'s message (it was settled for good).
    pub fn forget(&self, delivery: &Delivery) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&delivery.sequence);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Acknowledge;

    struct Nothing;

    #[async_trait]
    impl Acknowledge for Nothing {
        async fn ack(&self) -> Result<(), BusError> {
            Ok(())
        }
        async fn nack(&self, _: Duration) -> Result<(), BusError> {
            Ok(())
        }
        async fn in_progress(&self) -> Result<(), BusError> {
            Ok(())
        }
        async fn dead_letter(&self, _: &str) -> Result<(), BusError> {
            Ok(())
        }
    }

    fn delivery(sequence: u64, attempt: u64) -> Delivery {
        Delivery::new(
            Topic::OrderAccepted,
            None,
            Bytes::new(),
            attempt,
            sequence,
            Box::new(Nothing),
        )
    }

    #[test]
    fn strikes_count_per_message_across_deliveries_until_forgotten() {
        let strikes = Strikes::new();
        assert_eq!(strikes.strike(&delivery(7, 1)), 1);
        assert_eq!(strikes.strike(&delivery(8, 1)), 1);
        assert_eq!(strikes.strike(&delivery(7, 5)), 2);
        strikes.forget(&delivery(7, 6));
        assert_eq!(strikes.strike(&delivery(7, 7)), 1);
    }

    #[test]
    fn a_reason_becomes_one_bounded_line() {
        assert_eq!(one_line("bad\r\nthing\t"), "bad  thing");
        assert_eq!(one_line(" \n "), "no reason given");
        assert_eq!(one_line(&"x".repeat(5000)).len(), MAX_REASON_CHARS);
    }

    #[test]
    fn replay_ids_are_unique_per_entry() {
        let mut letter = DeadLetter {
            id: 3,
            dead_at: Utc::now(),
            subject: "orders.accepted".into(),
            topic: Some(Topic::OrderAccepted),
            consumer: "process-svc".into(),
            deliveries: 1,
            reason: "r".into(),
            message_id: Some("cid".into()),
            stream_sequence: Some(9),
            headers: Vec::new(),
            payload: Bytes::new(),
        };
        assert_eq!(letter.replay_message_id(), "cid:replay:3");
        letter.message_id = None;
        assert_eq!(letter.replay_message_id(), "replay:3");
    }
}
