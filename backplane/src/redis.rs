//! Redis pub/sub [`Backplane`]: a status update for a user is published on
//! `{prefix}notify:user:{user_id}` (JSON of [`StatusUpdate`]), and every replica with a local
//! stream of that user is subscribed to that channel.
//!
//! Publishing goes over the multiplexed [`ConnectionManager`]. Receiving uses one dedicated
//! RESP2 pub/sub connection per process, owned by a single task (the *subscriber*) that keeps a
//! registry `channel → broadcast::Sender`: the first local stream of a user makes it SUBSCRIBE,
//! the last one dropped makes it UNSUBSCRIBE, and every local stream of the user shares the one
//! Redis subscription.
//!
//! Losing the pub/sub connection ENDS every local stream (their senders are dropped, so each
//! [`UpdateStream`] returns `None`), with a warning saying how many. Redis pub/sub keeps nothing,
//! so whatever was published during the outage is gone for good: re-subscribing the open streams
//! silently after a reconnect would leave a watcher showing a stale status (say PROCESSING)
//! forever. Ending the stream instead makes notify-svc end the client's call with UNAVAILABLE;
//! the client calls again and starts from a fresh snapshot of its orders, so an outage costs a
//! reconnect, never a wrong status.
//!
//! Meanwhile the subscriber keeps reconnecting in the background with capped, jittered backoff,
//! and notices a half-open socket with periodic PINGs. While it is disconnected `is_ready` is
//! false, and `subscribe` waits at most the command timeout for the connection to come back
//! before failing with `Unavailable`, so callers neither hang nor get a subscription that is not
//! in place.
//!
//! Why not RESP3 push messages on the `ConnectionManager`: that needs RESP3 (Redis 6+, not every
//! managed offering), its reconnect gives up after a fixed number of retries with nothing to
//! restart it on an otherwise idle connection, and it replays subscriptions silently, which is
//! exactly the stale-status trap above.

use std::{collections::HashMap, fmt, time::Duration};

use async_trait::async_trait;
use futures::StreamExt;
use redis::{
    AsyncCommands, Client, Msg, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream},
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior, interval, sleep_until, timeout},
};
use tracing::{debug, info, warn};

use crate::{Backplane, BackplaneError, USER_CHANNEL_CAPACITY, UpdateStream, update_stream};
use contoso_domain::{StatusUpdate, UserId};

/// Bound on connecting and on each command, so a dead server fails calls instead of hanging them.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriber PINGs its connection and sweeps channels nobody watches any more.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// Status updates fanned out through Redis pub/sub. Cheap to clone: clones share the publishing
/// connection and the subscriber task.
#[derive(Clone)]
pub struct RedisBackplane {
    publisher: ConnectionManager,
    prefix: String,
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the subscriber's pub/sub connection is up; `subscribe` waits on it.
    subscriber_connected: watch::Receiver<bool>,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.prefix)
            .field("subscriber_connected", &*self.subscriber_connected.borrow())
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`) for publishing and for the pub/sub
    /// connection, and starts the subscriber task. Channel names start with `channel_prefix`.
    /// Fails when Redis cannot be reached now; later outages are retried in the background.
    pub async fn connect(url: &str, channel_prefix: &str) -> Result<Self, BackplaneError> {
        let client = Client::open(url)
            .map_err(|e| BackplaneError::unavailable("parsing the Redis URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let publisher = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| BackplaneError::unavailable("connecting to Redis for publishing", e))?;
        let (sink, stream) = open_pubsub(&client)
            .await
            .map_err(|e| BackplaneError::unavailable("opening the Redis pub/sub connection", e))?;

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (connected, subscriber_connected) = watch::channel(true);
        let subscriber = Subscriber {
            client,
            commands: command_rx,
            channels: HashMap::new(),
            conn: Some(PubSubConn { sink, stream }),
            connected,
            failed_attempts: 0,
            retry_at: Instant::now(),
            connected_at: Instant::now(),
        };
        tokio::spawn(subscriber.run());
        Ok(Self {
            publisher,
            prefix: channel_prefix.to_owned(),
            commands,
            subscriber_connected,
        })
    }

    /// The Redis channel of `user`: `{prefix}notify:user:{user_id}`.
    pub fn channel(&self, user: &UserId) -> String {
        format!("{}notify:user:{user}", self.prefix)
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn publish(&self, user: &UserId, update: &StatusUpdate) -> Result<(), BackplaneError> {
        let channel = self.channel(user);
        let payload = serde_json::to_vec(update)
            .map_err(|e| BackplaneError::unavailable("encoding a status update as JSON", e))?;
        self.publisher
            .clone()
            .publish::<_, _, i64>(&channel, payload)
            .await
            .map(drop)
            .map_err(|e| BackplaneError::unavailable("publishing a status update", e))
    }

    async fn subscribe(&self, user: &UserId) -> Result<UpdateStream, BackplaneError> {
        let stopped = || {
            BackplaneError::unavailable("subscribing", "the backplane subscriber task has stopped")
        };
        // A reconnect in progress is worth a short wait (a client whose stream just ended calls
        // again right away); a longer outage fails the call rather than hanging it.
        match timeout(
            COMMAND_TIMEOUT,
            self.subscriber_connected.clone().wait_for(|up| *up),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => {
                return Err(BackplaneError::unavailable(
                    "subscribing",
                    format!(
                        "the Redis pub/sub connection did not come back within \
                         {COMMAND_TIMEOUT:?}; reconnecting in the background"
                    ),
                ));
            }
        }
        let channel = self.channel(user);
        // Made before asking, so that however this call ends (error, cancellation, the stream
        // dropped later) the subscriber hears about it and can UNSUBSCRIBE.
        let release = Release {
            commands: self.commands.clone(),
            channel: channel.clone(),
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe { channel, reply })
            .map_err(|_| stopped())?;
        let rx = answer.await.map_err(|_| stopped())??;
        Ok(update_stream(rx, release))
    }

    async fn is_ready(&self) -> bool {
        *self.subscriber_connected.borrow()
            && redis::cmd("PING")
                .query_async::<String>(&mut self.publisher.clone())
                .await
                .is_ok()
    }
}

/// Requests to the subscriber task. Unbounded because a guard's `Drop` cannot wait for room;
/// there is at most one message per subscribe call and one per dropped stream.
enum Command {
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<StatusUpdate>, BackplaneError>>,
    },
    Release {
        channel: String,
    },
}

/// Part of every stream: tells the subscriber that one of the channel's streams is gone.
struct Release {
    commands: mpsc::UnboundedSender<Command>,
    channel: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        // Fails only when the subscriber has stopped, and then there is nothing to release.
        let _ = self.commands.send(Command::Release {
            channel: std::mem::take(&mut self.channel),
        });
    }
}

struct PubSubConn {
    sink: PubSubSink,
    stream: PubSubStream,
}

async fn open_pubsub(client: &Client) -> Result<(PubSubSink, PubSubStream), RedisError> {
    match timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await {
        Ok(pubsub) => Ok(pubsub?.split()),
        Err(_) => Err(timed_out("connecting")),
    }
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} took longer than {COMMAND_TIMEOUT:?}"),
    ))
}

/// Runs `call` on the pub/sub connection within [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    timeout(COMMAND_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(timed_out(what)))
}

enum Event {
    Command(Option<Command>),
    Message(Option<Msg>),
    Health,
    Reconnect,
}

/// The task that owns the pub/sub connection and the channel registry. Everything that touches
/// either runs here, one event at a time, so subscribe, unsubscribe, delivery and reconnect
/// never race each other.
struct Subscriber {
    client: Client,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The one sender of each watched channel: dropping it ends that channel's local streams.
    /// Empty while disconnected.
    channels: HashMap<String, broadcast::Sender<StatusUpdate>>,
    conn: Option<PubSubConn>,
    connected: watch::Sender<bool>,
    failed_attempts: u32,
    retry_at: Instant,
    connected_at: Instant,
}

impl Subscriber {
    async fn run(mut self) {
        let mut health = interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health.reset();
        loop {
            let event = match self.conn.as_mut() {
                Some(conn) => tokio::select! {
                    command = self.commands.recv() => Event::Command(command),
                    msg = conn.stream.next() => Event::Message(msg),
                    _ = health.tick() => Event::Health,
                },
                None => tokio::select! {
                    command = self.commands.recv() => Event::Command(command),
                    _ = sleep_until(self.retry_at) => Event::Reconnect,
                    _ = health.tick() => Event::Health,
                },
            };
            match event {
                // Every backplane handle and every stream is gone: nobody can use this task.
                Event::Command(None) => break,
                Event::Command(Some(Command::Subscribe { channel, reply })) => {
                    let outcome = self.subscribe(channel).await;
                    // A caller that gave up drops the receiver here; its `Release` cleans up.
                    let _ = reply.send(outcome);
                }
                Event::Command(Some(Command::Release { channel })) => {
                    self.release(channel).await;
                }
                Event::Message(Some(msg)) => self.deliver(&msg),
                Event::Message(None) => self.lost("the connection closed"),
                Event::Health => self.check_health().await,
                Event::Reconnect => self.reconnect().await,
            }
        }
        debug!("backplane subscriber stopped");
    }

    async fn subscribe(
        &mut self,
        channel: String,
    ) -> Result<broadcast::Receiver<StatusUpdate>, BackplaneError> {
        // Lost after the caller saw it up; failing now beats a second wait for the reconnect.
        let Some(conn) = self.conn.as_mut() else {
            return Err(BackplaneError::unavailable(
                "subscribing",
                "the Redis pub/sub connection is down; reconnecting",
            ));
        };
        if let Some(tx) = self.channels.get(&channel) {
            return Ok(tx.subscribe());
        }
        // Returns once Redis confirmed the subscription: anything published after that is
        // delivered, because the sender is registered before the next message is read.
        match bounded("SUBSCRIBE", conn.sink.subscribe(&channel)).await {
            Ok(()) => {
                let (tx, rx) = broadcast::channel(USER_CHANNEL_CAPACITY);
                self.channels.insert(channel, tx);
                Ok(rx)
            }
            Err(e) => {
                self.lost_on(&e);
                Err(BackplaneError::unavailable(
                    "subscribing to a user's channel",
                    e,
                ))
            }
        }
    }

    async fn release(&mut self, channel: String) {
        // A stream opened since the release was sent keeps the channel.
        let unwatched = self
            .channels
            .get(&channel)
            .is_some_and(|tx| tx.receiver_count() == 0);
        if unwatched {
            self.channels.remove(&channel);
            self.unsubscribe(&[channel]).await;
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) {
        let Some(conn) = self.conn.as_mut() else {
            // Not subscribed anywhere now, and a new connection starts with no subscriptions.
            return;
        };
        if let Err(e) = bounded("UNSUBSCRIBE", conn.sink.unsubscribe(channels)).await {
            // Stray messages for an unknown channel are ignored; a reconnect drops them for good.
            warn!(error = %e, "unsubscribing from backplane channels failed");
            self.lost_on(&e);
        }
    }

    fn deliver(&self, msg: &Msg) {
        let channel = msg.get_channel_name();
        let Some(tx) = self.channels.get(channel) else {
            debug!(
                channel,
                "dropping a message for a channel nobody here watches"
            );
            return;
        };
        match serde_json::from_slice::<StatusUpdate>(msg.get_payload_bytes()) {
            // Fails only when the last stream just went; its release is on its way.
            Ok(update) => drop(tx.send(update)),
            Err(e) => warn!(channel, error = %e, "skipping a malformed status update"),
        }
    }

    async fn check_health(&mut self) {
        let unwatched: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, tx)| tx.receiver_count() == 0)
            .map(|(channel, _)| channel.clone())
            .collect();
        if !unwatched.is_empty() {
            for channel in &unwatched {
                self.channels.remove(channel);
            }
            self.unsubscribe(&unwatched).await;
        }
        // A half-open socket never ends the stream; only a missing reply reveals it.
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = bounded("PING", conn.sink.ping::<redis::Value>()).await
        {
            warn!(error = %e, "backplane pub/sub connection failed its health check");
            self.lost("the health check failed");
        }
    }

    async fn reconnect(&mut self) {
        let (sink, stream) = match open_pubsub(&self.client).await {
            Ok(parts) => parts,
            Err(e) => {
                warn!(error = %e, attempt = self.failed_attempts + 1, "reconnecting the backplane pub/sub connection failed");
                self.schedule_retry();
                return;
            }
        };
        // Nothing to re-subscribe: the streams of the old connection were ended when it was lost.
        info!("backplane pub/sub connection restored; accepting subscriptions again");
        self.conn = Some(PubSubConn { sink, stream });
        self.connected_at = Instant::now();
        self.connected.send_replace(true);
    }

    /// Drops the connection when `err` means it can no longer be trusted.
    fn lost_on(&mut self, err: &RedisError) {
        if err.is_unrecoverable_error() || err.is_io_error() || err.is_connection_dropped() {
            self.lost("a command failed");
        }
    }

    /// Drops the connection and ends every local stream; see the module docs for why.
    fn lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.connected.send_replace(false);
            let channels = self.channels.len();
            let streams: usize = self.channels.values().map(|tx| tx.receiver_count()).sum();
            // Each stream's receiver sees its sender gone and ends; their releases find nothing
            // left to unsubscribe.
            self.channels.clear();
            warn!(
                why,
                streams,
                channels,
                "backplane pub/sub connection lost: ended every local status stream so clients \
                 resubscribe and get a fresh snapshot instead of silently missing updates; \
                 reconnecting"
            );
            // A connection that lived a while earns an immediate retry; one that keeps dying
            // right after it was made keeps backing off instead of spinning.
            if self.connected_at.elapsed() > RECONNECT_MAX_DELAY {
                self.failed_attempts = 0;
                self.retry_at = Instant::now();
            } else {
                self.schedule_retry();
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let exponential = RECONNECT_MIN_DELAY.saturating_mul(1 << self.failed_attempts.min(16));
        let ceiling = exponential.min(RECONNECT_MAX_DELAY);
        // Jitter spreads the replicas out so they do not all reconnect in the same instant.
        let delay = ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0);
        self.retry_at = Instant::now() + delay;
    }
}
