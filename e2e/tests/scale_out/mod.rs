//! Scale-out with real processes: a 3-node NATS JetStream cluster (R3 stream), two of each service,
//! the gateway. During a burst of orders one NATS node, one process-svc and one notify-svc are
//! killed. Every accepted order must be recorded exactly once and reach its user's streams; both
//! workers must have shared the work; a user watching through both notify-svc instances must see
//! every order complete on both watches. Prints its figures.

use std::{
    collections::{HashMap, HashSet},
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

use crate::support::system::ScaledOut;

const ORDERS: usize = 300;
const CLIENTS: usize = 8;
/// The orders placed before the faults are injected.
const BEFORE_FAULTS: usize = ORDERS / 3;
/// Attempts of one order (same idempotency key) before the client gives up on it.
const ATTEMPTS: usize = 20;
/// Whose orders are watched through both notify-svc instances.
const WATCHED: &str = "ada";
const USERS: [&str; 3] = [WATCHED, "bo", "cy"];
const DEADLINE: Duration = Duration::from_secs(90);

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a header value");
    request.metadata_mut().insert("authorization", value);
    request
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// An order a client got a success answer for.
#[derive(Debug, Clone)]
struct Accepted {
    correlation_id: String,
    user: &'static str,
}

/// Places order `n` (a fixed idempotency key, so retries never double it), trying the accept
/// endpoints in turn until one answers or the attempts run out.
async fn place(n: usize, endpoints: &[Channel], token: &str) -> Option<String> {
    let request = PlaceOrderRequest {
        lines: vec![OrderLineRequest {
            product_id: "AZ-900".into(),
            quantity: 1,
        }],
        idempotency_key: format!("burst-{n}"),
    };
    for attempt in 0..ATTEMPTS {
        let mut client =
            OrderServiceClient::new(endpoints[(n + attempt) % endpoints.len()].clone());
        match client.place_order(with_token(token, request.clone())).await {
            Ok(answer) => return answer.into_inner().order.map(|o| o.correlation_id),
            Err(status) => {
                tracing_backoff(attempt, &status).await;
            }
        }
    }
    None
}

/// A short wait before the next attempt: the client-side retry a real client would do.
async fn tracing_backoff(attempt: usize, status: &tonic::Status) {
    if attempt + 1 == ATTEMPTS {
        eprintln!(
            "giving up on an order: {:?} {}",
            status.code(),
            status.message()
        );
    }
    let wait = Duration::from_millis(50 * (1 << attempt.min(4)));
    tokio::time::sleep(wait).await;
}

/// Statuses each watch has seen, by correlation id.
type Seen = Arc<Mutex<HashMap<String, HashSet<i32>>>>;

/// Watches `token`'s orders on `endpoints[0]`, reconnecting (to the next endpoint, with a snapshot
/// of `snapshot_of()`) whenever the stream ends, until the task is aborted.
fn watch(
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
            let ids = snapshot_of.lock().expect("ids").clone();
            let request = WatchOrderStatusRequest {
                correlation_ids: ids,
            };
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
                            .insert(update.status);
                    }
                }
            }
            next += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[test]
fn orders_survive_losing_a_broker_node_a_worker_and_a_notifier_mid_burst() {
    let mut world = ScaledOut::start();
    let tokens: HashMap<&str, String> = USERS.iter().map(|u| (*u, world.token(u))).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Channels spawn their connection tasks on the runtime they are made in.
    let _in_runtime = runtime.enter();
    let accept: Vec<Channel> = world
        .accept
        .iter()
        .map(|(_, addr)| channel(*addr))
        .chain([channel(world.gateway_addr)])
        .collect();
    let notify: Vec<Channel> = world.notify.iter().map(|(_, a)| channel(*a)).collect();

    let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let watched_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: [Seen; 2] = Default::default();
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    // One watch of WATCHED on each notify-svc instance; each fails over to the other.
    let watches: Vec<_> = (0..2)
        .map(|i| {
            let endpoints = vec![notify[i].clone(), notify[1 - i].clone()];
            watch(
                endpoints,
                tokens[WATCHED].clone(),
                seen[i].clone(),
                opened.clone(),
                watched_ids.clone(),
            )
        })
        .collect();
    runtime.block_on(async {
        let until = Instant::now() + DEADLINE;
        while opened.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < until, "the two watches did not open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // The burst, from concurrent clients, spread over both accept-svc and the gateway.
    let next = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, accept, tokens) = (next.clone(), accept.clone(), tokens.clone());
            let (accepted, watched_ids) = (accepted.clone(), watched_ids.clone());
            runtime.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= ORDERS {
                        return;
                    }
                    let user = USERS[n % USERS.len()];
                    if let Some(cid) = place(n, &accept, &tokens[user]).await {
                        if user == WATCHED {
                            watched_ids.lock().expect("ids").push(cid.clone());
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

    // The faults, mid-burst.
    runtime.block_on(async {
        let until = Instant::now() + DEADLINE;
        while accepted.lock().expect("accepted").len() < BEFORE_FAULTS {
            assert!(
                Instant::now() < until,
                "the burst stalled before the faults"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let faults_at = started.elapsed();
    world.nats.stop(1);
    world.process[1].kill();
    world.notify[1].0.kill();

    runtime.block_on(async {
        for client in burst {
            client.await.expect("a burst client");
        }
    });
    let accepted = accepted.lock().expect("accepted").clone();
    let burst_done = started.elapsed();

    // Every accepted order recorded once and COMPLETED.
    let distinct: HashSet<&str> = accepted.iter().map(|a| a.correlation_id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "a success answer named an order twice"
    );
    let until = Instant::now() + DEADLINE;
    loop {
        let completed = world.count("SELECT count(*) AS n FROM orders WHERE status = 'COMPLETED'");
        if completed as usize >= accepted.len() {
            break;
        }
        assert!(
            Instant::now() < until,
            "{completed} of {} accepted orders completed",
            accepted.len()
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let recovered = started.elapsed();
    let rows = world.count("SELECT count(*) AS n FROM orders");
    let duplicates =
        world.count("SELECT count(*) - count(DISTINCT correlation_id) AS n FROM orders");
    assert_eq!(duplicates, 0, "an order was recorded twice");
    assert_eq!(
        rows as usize,
        accepted.len(),
        "orders recorded besides the accepted ones"
    );

    // Both watches of WATCHED saw every one of its orders complete, through the failover.
    let watched: Vec<&Accepted> = accepted.iter().filter(|a| a.user == WATCHED).collect();
    runtime.block_on(async {
        let until = Instant::now() + DEADLINE;
        loop {
            let missing: Vec<usize> = seen
                .iter()
                .map(|s| {
                    let s = s.lock().expect("seen");
                    watched
                        .iter()
                        .filter(|a| {
                            !s.get(&a.correlation_id)
                                .is_some_and(|st| st.contains(&(OrderStatus::Completed as i32)))
                        })
                        .count()
                })
                .collect();
            if missing.iter().all(|m| *m == 0) {
                break;
            }
            assert!(
                Instant::now() < until,
                "COMPLETED not seen on the watches for {missing:?} of {} orders",
                watched.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for watch in watches {
        watch.abort();
    }

    // The work was shared by both workers.
    let split: Vec<usize> = world
        .process
        .iter()
        .map(|p| p.log_text().matches("order recorded").count())
        .collect();
    assert!(
        split.iter().all(|n| *n > 0),
        "one worker did nothing: {split:?}"
    );

    println!(
        "scale-out: {ORDERS} orders sent by {CLIENTS} clients, {} accepted, {rows} recorded, \
         {duplicates} duplicates, 0 lost; recorded per process-svc {split:?} (the second killed \
         at {faults_at:.1?} with a NATS node and a notify-svc); burst done at {burst_done:.1?}, \
         all COMPLETED at {recovered:.1?}; {} orders of {WATCHED} seen COMPLETED on both watches",
        accepted.len(),
        watched.len(),
    );
}
