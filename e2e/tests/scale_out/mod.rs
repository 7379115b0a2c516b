//! Scale-out with real processes: a 3-node NATS JetStream cluster (R3 stream), two of each service,
//! the gateway. During a burst of orders one NATS node, one process-svc and one notify-svc are
//! killed. Every accepted order must be recorded exactly once and reach its user's streams; both
//! workers must have shared the work; a user watching through both notify-svc instances must see
//! every order complete on both watches. Prints its figures.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use crate::support::{
    load::{Accepted, Burst, Seen, channel, completed, wait_all_completed, wait_opened, watch},
    system::ScaledOut,
};

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

#[test]
fn orders_survive_losing_a_broker_node_a_worker_and_a_notifier_mid_burst() {
    let mut world = ScaledOut::start();
    let tokens: HashMap<&'static str, String> =
        USERS.iter().map(|u| (*u, world.token(u))).collect();
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
    wait_opened(&runtime, &opened, 2, DEADLINE);

    // The burst, from concurrent clients, spread over both accept-svc and the gateway.
    let burst = Burst::start(
        &runtime,
        ORDERS,
        CLIENTS,
        &USERS,
        accept,
        tokens.clone(),
        ATTEMPTS,
        HashMap::from([(WATCHED, watched_ids.clone())]),
    );

    // The faults, mid-burst.
    burst.wait_accepted(&runtime, BEFORE_FAULTS, DEADLINE);
    let faults_at = started.elapsed();
    world.nats.stop(1);
    world.process[1].kill();
    world.notify[1].0.kill();

    let accepted = burst.finish(&runtime);
    let burst_done = started.elapsed();

    // Every accepted order recorded once and COMPLETED.
    let distinct: HashSet<&str> = accepted.iter().map(|a| a.correlation_id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "a success answer named an order twice"
    );
    wait_all_completed(
        |sql| world.count(sql),
        accepted.len(),
        DEADLINE,
        "scale-out",
    );
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
                    watched
                        .iter()
                        .filter(|a| !completed(s, &a.correlation_id))
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
