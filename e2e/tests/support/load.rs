//! Load for the scale-out and fault tests, over gRPC with tonic: orders placed with an idempotency
//! key and retried the way a careful client would, and status watches that fail over and
//! resubscribe with a snapshot the way the SPA does.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use contoso_proto::{
    notify::v1::{
        WatchOrderStatusRequest, order_status_service_client::OrderStatusServiceClient,
        watch_order_status_response::Event,
    },
    orders::v1::{
        OrderLineRequest, OrderStatus, PlaceOrderRequest, order_service_client::OrderServiceClient,
    },
};
use tonic::{Request, transport::Channel};

pub(crate) fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// A lazily connected channel; make it inside a Tokio runtime.
pub(crate) fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// An order a client got a success answer for.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) correlation_id: String,
    pub(crate) user: &'static str,
}

/// Places order `n` (key `burst-{n}`, so retries never double it), trying the endpoints in turn
/// with a growing pause until one answers or `attempts` run out.
pub(crate) async fn place(
    n: usize,
    endpoints: &[Channel],
    token: &str,
    attempts: usize,
) -> Option<String> {
    let request = PlaceOrderRequest {
        lines: vec![OrderLineRequest {
            product_id: "AZ-900".into(),
            quantity: 1,
        }],
        idempotency_key: format!("burst-{n}"),
    };
    for attempt in 0..attempts {
        let mut client =
            OrderServiceClient::new(endpoints[(n + attempt) % endpoints.len()].clone());
        match client.place_order(with_token(token, request.clone())).await {
            Ok(answer) => return answer.into_inner().order.map(|o| o.correlation_id),
            Err(status) if attempt + 1 == attempts => {
                eprintln!(
                    "giving up on order {n}: {:?} {}",
                    status.code(),
                    status.message()
                );
            }
            // The client's own retry policy, not synchronisation.
            Err(_) => tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await,
        }
    }
    None
}

/// The statuses one watch received, by correlation id, in arrival order.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Vec<i32>>>>;

/// Watches `token`'s orders on `endpoints[0]`; whenever the stream ends it subscribes again (to
/// the next endpoint), naming the orders of `snapshot_of` so the snapshot brings it up to date.
/// Counts each opened stream in `opened`. Runs until aborted.
pub(crate) fn watch(
    endpoints: Vec<Channel>,
    token: String,
    seen: Seen,
    opened: Arc<AtomicUsize>,
    snapshot_of: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let mut client =
                OrderStatusServiceClient::new(endpoints[next % endpoints.len()].clone());
            let correlation_ids = snapshot_of.lock().expect("ids").clone();
            let request = WatchOrderStatusRequest { correlation_ids };
            if let Ok(stream) = client.watch_order_status(with_token(&token, request)).await {
                let mut stream = stream.into_inner();
                let mut counted = false;
                while let Ok(Some(message)) = stream.message().await {
                    if !counted {
                        opened.fetch_add(1, Ordering::SeqCst);
                        counted = true;
                    }
                    if let Some(Event::Update(update)) = message.event {
                        seen.lock()
                            .expect("seen")
                            .entry(update.correlation_id)
                            .or_default()
                            .push(update.status);
                    }
                }
            }
            next += 1;
            // Reconnect backoff, as a client would.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// True when `seen` holds COMPLETED for `cid`.
pub(crate) fn completed(seen: &Seen, cid: &str) -> bool {
    seen.lock()
        .expect("seen")
        .get(cid)
        .is_some_and(|s| s.contains(&(OrderStatus::Completed as i32)))
}

/// Correlation ids whose statuses, as one stream delivered them, ever moved backwards.
pub(crate) fn moved_backwards(seen: &Seen) -> Vec<String> {
    let rank = |s: i32| match OrderStatus::try_from(s) {
        Ok(OrderStatus::Accepted) => 0,
        Ok(OrderStatus::Processing) => 1,
        _ => 2,
    };
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(_, statuses)| statuses.windows(2).any(|w| rank(w[1]) < rank(w[0])))
        .map(|(cid, _)| cid.clone())
        .collect()
}

/// Orders `0..orders` placed by concurrent clients, spread over `users` in turn, each with its
/// key (`burst-{n}`) and up to `attempts` tries over the endpoints.
#[derive(Debug)]
pub(crate) struct Burst {
    accepted: Arc<Mutex<Vec<Accepted>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Burst {
    /// Starts `clients` clients on `runtime`. Each success is recorded, and its correlation id
    /// added to its user's list in `ids` when that user has one (what a watch resubscribes with).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        runtime: &tokio::runtime::Runtime,
        orders: usize,
        clients: usize,
        users: &'static [&'static str],
        endpoints: Vec<Channel>,
        tokens: HashMap<&'static str, String>,
        attempts: usize,
        ids: HashMap<&'static str, Arc<Mutex<Vec<String>>>>,
    ) -> Self {
        let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (next, endpoints, tokens) = (next.clone(), endpoints.clone(), tokens.clone());
                let (accepted, ids) = (accepted.clone(), ids.clone());
                runtime.spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= orders {
                            return;
                        }
                        let user = users[n % users.len()];
                        if let Some(cid) = place(n, &endpoints, &tokens[user], attempts).await {
                            if let Some(ids) = ids.get(user) {
                                ids.lock().expect("ids").push(cid.clone());
                            }
                            accepted.lock().expect("accepted").push(Accepted {
                                correlation_id: cid,
                                user,
                            });
                        }
                    }
                })
            })
            .collect();
        Self { accepted, clients }
    }

    /// Waits until at least `n` orders are accepted, or panics after `deadline`.
    pub(crate) fn wait_accepted(
        &self,
        runtime: &tokio::runtime::Runtime,
        n: usize,
        deadline: Duration,
    ) {
        runtime.block_on(async {
            let until = Instant::now() + deadline;
            while self.accepted.lock().expect("accepted").len() < n {
                assert!(Instant::now() < until, "the burst stalled at {n} orders");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    /// Waits for every client to finish; the orders that got a success answer.
    pub(crate) fn finish(self, runtime: &tokio::runtime::Runtime) -> Vec<Accepted> {
        runtime.block_on(async {
            for client in self.clients {
                client.await.expect("a burst client");
            }
        });
        self.accepted.lock().expect("accepted").clone()
    }
}

/// Waits until `opened` has counted `n` streams, or panics after `deadline`.
pub(crate) fn wait_opened(
    runtime: &tokio::runtime::Runtime,
    opened: &AtomicUsize,
    n: usize,
    deadline: Duration,
) {
    runtime.block_on(async {
        let until = Instant::now() + deadline;
        while opened.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "{n} watches did not open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Polls `count` (a query selecting `n` on the test's database) until `expected` orders are
/// COMPLETED, or panics naming `what` after `deadline`.
pub(crate) fn wait_all_completed(
    count: impl Fn(&str) -> i64,
    expected: usize,
    deadline: Duration,
    what: &str,
) {
    let until = Instant::now() + deadline;
    loop {
        let done = count("SELECT count(*) AS n FROM orders WHERE status = 'COMPLETED'");
        if done as usize >= expected {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: {done} of {expected} accepted orders COMPLETED"
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
