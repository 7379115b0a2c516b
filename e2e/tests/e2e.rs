//! End-to-end tests: the real binaries (`cargo build --workspace --bins` first) on real Postgres,
//! Redis and a private nats-server, or `contoso dev` on its embedded defaults, driven by the real
//! clients a user would reach for: grpcurl for gRPC, buf curl for grpc-web and curl for REST.

mod bench;
mod entitlements;
mod faults;
mod observability;
mod rest_api;
mod scale_out;
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    process::binary,
    rpc::{
        Client, Code, DELETE_ORDER, GET_ORDER, GET_ORDER_STATUS, GET_PRODUCT, LIST_ORDERS,
        LIST_PRODUCTS, PLACE_ORDER,
    },
    system::{DevSystem, System},
};

const ACCEPTED: &str = "ORDER_STATUS_ACCEPTED";
const PROCESSING: &str = "ORDER_STATUS_PROCESSING";
const COMPLETED: &str = "ORDER_STATUS_COMPLETED";

/// Until a new stream has sent its first message. Covers one 15 s heartbeat of `contoso dev`, where
/// a stream that names no order has nothing else to send.
const STREAM_OPEN: Duration = Duration::from_secs(20);
/// From a placed order to its COMPLETED update.
const FLOW: Duration = Duration::from_secs(30);
/// An unconfirmed publish must fail well within this (the broker's publish timeout is 5 s).
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(15);
/// For every service to reconnect after the broker comes back.
const RECOVERY: Duration = Duration::from_secs(60);

/// The two-line order the flows place: products that exist and carry different discounts.
const TWO_LINES: [(&str, i64); 2] = [("AZ-700", 2), ("SAA-C03", 1)];

fn order_request(lines: &[(&str, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(id, quantity)| json!({ "productId": id, "quantity": quantity }))
        .collect();
    json!({ "lines": lines })
}

/// proto3 JSON prints int64 as a string; a missing field is the default 0.
fn int64(value: &Value) -> i64 {
    match value {
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("not an int64: {s:?}: {e}")),
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an int64: {n}")),
        Value::Null => 0,
        other => panic!("not an int64: {other}"),
    }
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// Checks an accepted order against what was asked and against the catalog's own prices.
fn assert_priced_as_in_catalog(catalog: Client, token: &str, order: &Value, asked: &[(&str, i64)]) {
    let lines = order["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {order}"));
    assert_eq!(lines.len(), asked.len(), "lines of {order}");
    let mut total = 0;
    for (line, (id, quantity)) in lines.iter().zip(asked) {
        let product = &catalog.ok(GET_PRODUCT, Some(token), json!({ "id": id }))["product"];
        assert_eq!(line["productId"], *id, "{line}");
        assert_eq!(
            line["productName"], product["name"],
            "the name snapshot of {id}"
        );
        assert_eq!(int64(&line["quantity"]), *quantity, "{line}");
        let unit = int64(&line["unitPriceCents"]);
        assert!(unit > 0, "{id} has no price: {line}");
        assert_eq!(
            unit,
            int64(&product["effectivePriceCents"]),
            "{id} is charged its discounted price"
        );
        assert_eq!(int64(&line["lineTotalCents"]), unit * quantity, "{line}");
        total += unit * quantity;
    }
    assert_eq!(
        int64(&order["totalCents"]),
        total,
        "the total is the sum of the lines: {order}"
    );
}

/// Opens a status stream with `watcher`, places the two-line order with `orders`, and follows
/// it through ACCEPTED, PROCESSING and COMPLETED. Returns the accepted order.
fn place_and_follow(orders: Client, watcher: Client, token: &str) -> Value {
    let mut stream = watcher.watch(token, &[]);
    stream.wait_until_open(STREAM_OPEN);

    let order = orders.ok(PLACE_ORDER, Some(token), order_request(&TWO_LINES))["order"].clone();
    assert_eq!(order["status"], ACCEPTED, "{order}");
    assert!(
        int64(&order["orderId"]) > 0,
        "the order id is reserved at intake: {order}"
    );
    assert!(order["createdAt"].is_string(), "{order}");
    assert_priced_as_in_catalog(orders, token, &order, &TWO_LINES);

    let cid = text(&order["correlationId"]);
    let completed = stream.wait_for(cid, COMPLETED, FLOW);
    assert_eq!(
        stream.statuses_of(cid),
        [ACCEPTED, PROCESSING, COMPLETED],
        "statuses of {cid}, in order"
    );
    assert_eq!(
        int64(&completed["orderId"]),
        int64(&order["orderId"]),
        "COMPLETED names the order id"
    );
    order
}

/// GetOrder answers the lines and total that PlaceOrder answered.
fn assert_recorded_as_accepted(orders: Client, token: &str, accepted: &Value) {
    let recorded = &orders.ok(
        GET_ORDER,
        Some(token),
        json!({ "orderId": accepted["orderId"] }),
    )["order"];
    assert_eq!(
        recorded["correlationId"], accepted["correlationId"],
        "{recorded}"
    );
    assert_eq!(recorded["lines"], accepted["lines"], "recorded lines");
    assert_eq!(
        recorded["totalCents"], accepted["totalCents"],
        "recorded total"
    );
}

#[test]
fn order_flows_end_to_end_over_grpc_on_real_infrastructure() {
    let system = System::start();
    let (alice, bob) = (system.token("alice"), system.token("bob"));
    let orders = system.accept();

    let order = place_and_follow(orders, system.notify(), &alice);
    let cid = text(&order["correlationId"]);
    let order_id = json!({ "orderId": order["orderId"] });
    assert_recorded_as_accepted(orders, &alice, &order);

    let by_cid = "SELECT count(*) AS n FROM orders WHERE correlation_id = $1::uuid";
    assert_eq!(system.count(by_cid, &[cid]), 1, "one row in orders");
    let items = "SELECT count(*) AS n FROM order_items i JOIN orders o ON o.id = i.order_id \
                 WHERE o.correlation_id = $1::uuid";
    assert_eq!(
        system.count(items, &[cid]),
        2,
        "one row in order_items per line"
    );

    let status = orders.ok(
        GET_ORDER_STATUS,
        Some(&alice),
        json!({ "correlationId": cid }),
    );
    assert_eq!(status["status"], COMPLETED, "{status}");
    assert_eq!(status["orderId"], order["orderId"], "{status}");

    let listed = orders.ok(LIST_ORDERS, Some(&alice), json!({}));
    let listed_ids: Vec<&Value> = listed["orders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| &o["orderId"])
        .collect();
    assert_eq!(listed_ids, [&order["orderId"]], "alice's orders: {listed}");

    let denied = orders.err(GET_ORDER, Some(&bob), order_id.clone());
    assert_eq!(
        denied.code,
        Code::NotFound,
        "bob reads alice's order: {}",
        denied.output
    );

    orders.ok(DELETE_ORDER, Some(&alice), order_id.clone());
    let gone = orders.err(GET_ORDER, Some(&alice), order_id);
    assert_eq!(
        gone.code,
        Code::NotFound,
        "a deleted order: {}",
        gone.output
    );
    let listed = orders.ok(LIST_ORDERS, Some(&alice), json!({}));
    assert!(
        listed["orders"].as_array().is_none_or(Vec::is_empty),
        "deleted orders are not listed: {listed}"
    );
}

#[test]
fn order_flows_end_to_end_over_grpc_web_through_the_gateway() {
    let system = System::start();
    let web = system.gateway_web();

    let page = web.ok(LIST_PRODUCTS, None, json!({ "size": 5 }));
    let products = page["products"]
        .as_array()
        .unwrap_or_else(|| panic!("no products in {page}"));
    assert_eq!(products.len(), 5, "a page of the requested size: {page}");
    assert!(
        products
            .iter()
            .all(|p| p["id"].is_string() && p["name"].is_string()),
        "{page}"
    );
    assert!(
        page["total"].as_i64().unwrap_or_default() >= 5,
        "the total counts every match: {page}"
    );

    // The catalog is public; orders are not, and the gateway keeps it that way.
    let refused = web.err(PLACE_ORDER, None, order_request(&TWO_LINES));
    assert_eq!(refused.code, Code::Unauthenticated, "{}", refused.output);

    let alice = system.token("alice");
    let order = place_and_follow(web, web, &alice);
    assert_recorded_as_accepted(web, &alice, &order);
}

#[test]
fn contoso_dev_runs_the_whole_flow_on_embedded_defaults() {
    let dev = DevSystem::start();
    let carol = dev.dev_token("carol");
    let web = dev.gateway_web();

    let first = web.ok(PLACE_ORDER, Some(&carol), order_request(&TWO_LINES))["order"].clone();
    let first_cid = text(&first["correlationId"]);
    // Naming the first order makes its current status the stream's first message.
    let mut stream = web.watch(&carol, &[first_cid]);
    stream.wait_until_open(STREAM_OPEN);
    assert!(
        !stream.statuses_of(first_cid).is_empty(),
        "the stream starts with the named order's current status"
    );

    let second = dev
        .accept()
        .ok(PLACE_ORDER, Some(&carol), order_request(&[("AZ-900", 1)]))["order"]
        .clone();
    let second_cid = text(&second["correlationId"]);

    for (order, cid) in [(&first, first_cid), (&second, second_cid)] {
        let completed = stream.wait_for(cid, COMPLETED, FLOW);
        assert_eq!(
            completed["orderId"], order["orderId"],
            "COMPLETED names the order id of {cid}"
        );
    }
    let statuses = stream.statuses_of(first_cid);
    assert!(
        statuses.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
        "statuses of an order only move forward: {statuses:?}"
    );
    assert_eq!(
        stream.statuses_of(second_cid),
        [ACCEPTED, PROCESSING, COMPLETED],
        "the watched order's statuses"
    );
}

fn rank(status: &str) -> usize {
    [ACCEPTED, PROCESSING, COMPLETED]
        .iter()
        .position(|s| *s == status)
        .unwrap_or(usize::MAX)
}

#[test]
fn bad_input_gets_a_clear_status_and_leaves_nothing_behind() {
    let system = System::start();
    let alice = system.token("alice");
    let orders = system.accept();

    let catalog = orders.ok(LIST_PRODUCTS, Some(&alice), json!({ "size": 51 }));
    let ids: Vec<&str> = catalog["products"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| text(&p["id"]))
        .collect();
    assert_eq!(
        ids.len(),
        51,
        "51 distinct products to overfill an order with"
    );
    let too_many: Vec<(&str, i64)> = ids.iter().map(|id| (*id, 1)).collect();

    let valid = order_request(&TWO_LINES);
    let cases = [
        (
            "quantity 0",
            Some(alice.clone()),
            order_request(&[("AZ-700", 0)]),
            Code::InvalidArgument,
            "lines[0].quantity",
        ),
        (
            "51 lines",
            Some(alice.clone()),
            order_request(&too_many),
            Code::InvalidArgument,
            "lines:",
        ),
        (
            "an unknown product",
            Some(alice.clone()),
            order_request(&[("NO-SUCH-EXAM", 1)]),
            Code::NotFound,
            "NO-SUCH-EXAM",
        ),
        (
            "no token",
            None,
            valid.clone(),
            Code::Unauthenticated,
            "token",
        ),
        (
            "a forged token",
            Some(system.forged_token("alice")),
            valid.clone(),
            Code::Unauthenticated,
            "token",
        ),
        (
            "an expired token",
            Some(system.expired_token("alice")),
            valid,
            Code::Unauthenticated,
            "expired",
        ),
    ];
    for (case, token, request, code, named) in cases {
        let err = orders.err(PLACE_ORDER, token.as_deref(), request);
        assert_eq!(err.code, code, "{case}: {}", err.output);
        assert!(
            err.message.contains(named),
            "{case}: the message names {named:?}: {}",
            err.message
        );
    }
    // Intake writes Redis before it answers, so refused calls would have left keys by now.
    assert_eq!(
        system.redis_keys("*"),
        Vec::<String>::new(),
        "keys left by refused calls"
    );

    // A good order behind them: once it is COMPLETED, anything the refused calls had published
    // would have been processed too, so the orders table holding only this one means something.
    let order = place_and_follow(orders, system.notify(), &alice);
    let cid = text(&order["correlationId"]);
    assert_eq!(
        system.count("SELECT count(*) AS n FROM orders", &[]),
        1,
        "orders besides the good one"
    );
    assert_eq!(
        system.count(
            "SELECT count(*) AS n FROM orders WHERE correlation_id = $1::uuid",
            &[cid]
        ),
        1
    );
    let keys = system.redis_keys("*");
    assert!(
        keys.iter()
            .all(|k| k.ends_with(cid) || k.ends_with("order:inflight:alice")),
        "only the good order has workflow keys: {keys:?}"
    );
    assert_eq!(
        system.redis_hash_fields("order:inflight:alice"),
        [int64(&order["orderId"]).to_string()],
        "alice's in-flight orders hold only the good one"
    );
}

/// Issue 8 changed this: an unconfirmed publish used to remove the order's Redis keys. The order
/// may be in the stream all the same, so its keys now stay (with their TTL), and a retry with the
/// same idempotency key gets that same order, recorded once.
#[test]
fn an_unconfirmed_publish_returns_unavailable_keeps_its_keys_and_a_keyed_retry_gets_the_same_order()
{
    let mut system = System::start();
    let alice = system.token("alice");
    let orders = system.accept();
    let request = || {
        let mut request = order_request(&TWO_LINES);
        request["idempotencyKey"] = json!("e2e-unconfirmed");
        request
    };

    system.stop_broker();
    let started = Instant::now();
    let err = orders.err(PLACE_ORDER, Some(&alice), request());
    assert_eq!(err.code, Code::Unavailable, "{}", err.output);
    assert!(
        started.elapsed() < UNAVAILABLE_WITHIN,
        "UNAVAILABLE took {:?}",
        started.elapsed()
    );
    let maps = system.redis_keys("order:map:*");
    assert_eq!(
        maps.len(),
        1,
        "the owner key of an unconfirmed order: {maps:?}"
    );
    assert_eq!(
        system.redis_keys("order:status:*").len(),
        1,
        "the status key of an unconfirmed order"
    );
    let kept_cid = maps[0]
        .rsplit(':')
        .next()
        .expect("a correlation id in the key")
        .to_owned();

    system.restart_broker();
    system.wait_accept_ready();
    let mut stream = system.notify().watch(&alice, &[]);
    stream.wait_until_open(STREAM_OPEN);
    let until = Instant::now() + RECOVERY;
    let order = loop {
        match orders.call(PLACE_ORDER, Some(&alice), request()) {
            Ok(placed) => break placed["order"].clone(),
            Err(e) if e.code == Code::Unavailable && Instant::now() < until => {
                std::thread::park_timeout(Duration::from_millis(200));
            }
            Err(e) => panic!(
                "PlaceOrder after the broker came back: {:?} {}\n{}",
                e.code, e.message, e.output
            ),
        }
    };
    let cid = text(&order["correlationId"]);
    assert_eq!(cid, kept_cid, "the retry answers the unconfirmed order");
    stream.wait_for(cid, COMPLETED, RECOVERY);
    assert_eq!(
        system.count("SELECT count(*) AS n FROM orders", &[]),
        1,
        "orders recorded"
    );
    assert_eq!(
        system.redis_keys("order:map:*"),
        maps,
        "no second order was accepted"
    );
}

#[test]
fn each_service_starts_with_its_secrets_and_refuses_to_start_without_one_naming_it() {
    // Started with their secrets, all four are ready: System::start waits for each `/readyz`.
    let system = System::start();
    for (service, secret) in [
        ("accept-svc", "JWT_SECRET"),
        ("accept-svc", "SEAL_KEYS"),
        ("process-svc", "SEAL_KEYS"),
        ("notify-svc", "JWT_SECRET"),
        ("notify-svc", "SEAL_KEYS"),
        ("gateway", "JWT_SECRET"),
    ] {
        // The same environment less one secret, on a port of its own.
        let env = system
            .service_env(service)
            .iter()
            .filter(|(name, _)| *name != secret && *name != "LISTEN_ADDR");
        let output = std::process::Command::new(binary(service))
            .env_clear()
            .env("RUST_LOG", "off")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {service}: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{service} started without {secret}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{service} without {secret}: {stderr}");
        assert!(
            lines[0].contains(&format!("{secret} is not set")),
            "{service} without {secret}: {stderr}"
        );
    }
}
