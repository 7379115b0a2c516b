//! For tests only (compiled with the `test-support` feature): a [`Bus`] wrapper that records how
//! every delivery it hands out was answered, so a test can wait for an answer, or count them,
//! instead of guessing when the consumer under test got round to it.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::{Acknowledge, Bus, BusError, ConsumerSpec, Deliveries, Delivery, Envelope, Topic};

/// What a consumer said back about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ack,
    Nack(Duration),
    InProgress,
    /// Given up on: dead-lettered and terminated.
    DeadLetter,
}

impl Answer {
    /// True for an ack, a nack or a dead letter, false for an in-progress heartbeat.
    pub fn settles(self) -> bool {
        !matches!(self, Answer::InProgress)
    }
}

/// One answer, with the delivery it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub message_id: Option<String>,
    pub topic: Topic,
    pub attempt: u64,
    pub answer: Answer,
}

impl Answered {
    /// True when this answered a delivery of `message_id`.
    pub fn is_for(&self, message_id: &str) -> bool {
        self.message_id.as_deref() == Some(message_id)
    }
}

/// Forwards everything to the wrapped bus; the deliveries of `consume` come with an acknowledger
/// that forwards each answer and, once the wrapped bus accepted it, appends it to a log. Clones
/// share the log.
#[derive(Debug, Clone)]
pub struct RecordingBus {
    inner: Arc<dyn Bus>,
    log: watch::Sender<Vec<Answered>>,
}

impl RecordingBus {
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        Self {
            inner,
            log: watch::Sender::new(Vec::new()),
        }
    }

    /// Every answer so far, in the order the wrapped bus accepted them.
    pub fn answers(&self) -> Vec<Answered> {
        self.log.borrow().clone()
    }

    /// Waits until `pick` finds something in the answers so far, and returns it. Panics, naming
    /// `what` and showing the answers, when nothing is found within `deadline`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&[Answered]) -> Option<T>,
    ) -> T {
        let mut log = self.log.subscribe();
        let mut found = None;
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = tokio::time::timeout(
            deadline,
            log.wait_for(|answers| {
                found = pick(answers);
                found.is_some()
            }),
        )
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{what}: not answered within {deadline:?}; the answers so far: {:?}",
                self.answers()
            )
        })
    }

    /// The first answer that `matches`, waiting up to `deadline` for it.
    pub async fn first(
        &self,
        what: &str,
        deadline: Duration,
        matches: impl Fn(&Answered) -> bool,
    ) -> Answered {
        self.wait_for(what, deadline, |answers| {
            answers.iter().find(|a| matches(a)).cloned()
        })
        .await
    }
}

#[async_trait]
impl Bus for RecordingBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.inner.publish(envelope).await
    }

    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        let log = self.log.clone();
        let deliveries = self.inner.consume(spec).await?;
        Ok(deliveries
            .map(move |item| {
                item.map(|delivery| {
                    Delivery::new(
                        delivery.topic,
                        delivery.message_id.clone(),
                        delivery.payload.clone(),
                        delivery.attempt,
                        delivery.sequence,
                        Box::new(RecordingAck {
                            delivery,
                            log: log.clone(),
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

/// Answers the wrapped delivery, then logs the answer. An answer the wrapped bus refused is not
/// logged: the broker will deliver the message again.
struct RecordingAck {
    delivery: Delivery,
    log: watch::Sender<Vec<Answered>>,
}

impl RecordingAck {
    fn record(&self, outcome: Result<(), BusError>, answer: Answer) -> Result<(), BusError> {
        if outcome.is_ok() {
            let answered = Answered {
                message_id: self.delivery.message_id.clone(),
                topic: self.delivery.topic,
                attempt: self.delivery.attempt,
                answer,
            };
            self.log.send_modify(|answers| answers.push(answered));
        }
        outcome
    }
}

#[async_trait]
impl Acknowledge for RecordingAck {
    async fn ack(&self) -> Result<(), BusError> {
        self.record(self.delivery.ack().await, Answer::Ack)
    }

    async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.record(self.delivery.nack(delay).await, Answer::Nack(delay))
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.record(self.delivery.in_progress().await, Answer::InProgress)
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        self.record(self.delivery.dead_letter(reason).await, Answer::DeadLetter)
    }
}
