//! Observability end to end: one order placed over grpc-web is one trace through the gateway,
//! accept-svc, process-svc and notify-svc, received by an OTLP receiver in this process; and
//! `/metrics` moves with the orders, on the real binaries and on `contoso dev`.

use std::{net::SocketAddr, time::Duration};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;

use super::{COMPLETED, FLOW, STREAM_OPEN, TWO_LINES, order_request, text};
use crate::support::{
    metrics::{self, Scrape},
    otlp::{OtlpReceiver, ReceivedSpan},
    rpc::{Client, PLACE_ORDER},
    system::{DevSystem, System},
};

/// From the last span of an order being ended to its export (the batch delay is 100 ms here).
const EXPORTED: Duration = Duration::from_secs(20);
/// For counters that move after the stream saw COMPLETED (the relay counts once it is done).
const SETTLED: Duration = Duration::from_secs(20);

const PLACE_ORDER_SPAN: &str = "contoso.orders.v1.OrderService/PlaceOrder";

/// Places one two-line order through `web` while a stream watches it, and returns its
/// correlation id once COMPLETED reached the stream.
fn place_and_complete(web: Client, token: &str) -> String {
    let mut stream = web.watch(token, &[]);
    stream.wait_until_open(STREAM_OPEN);
    let order: Value = web.ok(PLACE_ORDER, Some(token), order_request(&TWO_LINES))["order"].clone();
    let cid = text(&order["correlationId"]).to_owned();
    stream.wait_for(&cid, COMPLETED, FLOW);
    cid
}

fn is(span: &ReceivedSpan, service: &str, kind: SpanKind, name: &str) -> bool {
    (service.is_empty() || span.service == service) && span.kind == kind && span.name == name
}

/// The spans an order must leave, by service (empty: any), kind and name.
fn expected(services: [&'static str; 4]) -> Vec<(&'static str, SpanKind, &'static str)> {
    let [gateway, accept, process, notify] = services;
    vec![
        (gateway, SpanKind::Server, PLACE_ORDER_SPAN),
        (accept, SpanKind::Server, PLACE_ORDER_SPAN),
        (accept, SpanKind::Producer, "publish orders.accepted"),
        (process, SpanKind::Consumer, "process orders.accepted"),
        (process, SpanKind::Producer, "publish orders.processed"),
        (notify, SpanKind::Consumer, "process orders.processed"),
        (notify, SpanKind::Producer, "publish status update"),
    ]
}

/// Checks the trace of order `cid`: every expected span is in it, it is one trace, every span of
/// it carries the correlation id, and every consumer span is the child of a producer span.
fn assert_one_trace(
    otlp: &OtlpReceiver,
    cid: &str,
    expected: &[(&'static str, SpanKind, &'static str)],
) -> Vec<ReceivedSpan> {
    let of_order = |s: &ReceivedSpan| s.attribute("correlation_id") == Some(cid);
    let spans = otlp.wait_for(
        &format!("the spans of order {cid}: {expected:?}"),
        EXPORTED,
        |spans| {
            expected.iter().all(|(service, kind, name)| {
                spans
                    .iter()
                    .any(|s| of_order(s) && is(s, service, *kind, name))
            })
        },
    );
    let root = spans
        .iter()
        .find(|s| {
            of_order(s)
                && is(s, expected[0].0, SpanKind::Server, PLACE_ORDER_SPAN)
                && s.parent_span_id.is_empty()
        })
        .unwrap_or_else(|| panic!("no root server span of PlaceOrder for {cid} in {spans:#?}"));
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    for span in spans.iter().filter(|s| of_order(s)) {
        assert_eq!(
            span.trace_id, root.trace_id,
            "every span of order {cid} is in one trace: {span:#?}"
        );
    }
    for span in &trace {
        assert_eq!(
            span.attribute("correlation_id"),
            Some(cid),
            "every span of the order's trace carries its correlation id: {span:#?}"
        );
    }
    let consumers: Vec<_> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    assert!(!consumers.is_empty());
    for consumer in consumers {
        let parent = trace
            .iter()
            .find(|s| s.span_id == consumer.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {consumer:#?} is not in the trace"));
        assert_eq!(
            parent.kind,
            SpanKind::Producer,
            "{} is a child of the span that published it, not of {parent:#?}",
            consumer.name
        );
    }
    spans
}

#[test]
fn an_order_placed_over_grpc_web_is_one_trace_through_every_service() {
    let otlp = OtlpReceiver::start();
    let system = System::start_with(&otlp.env("grpc"));
    let token = system.token("trace-ada");

    let cid = place_and_complete(system.gateway_web(), &token);

    let spans = assert_one_trace(
        &otlp,
        &cid,
        &expected(["gateway", "accept-svc", "process-svc", "notify-svc"]),
    );
    let services_of = |kind: SpanKind| {
        let mut services: Vec<&str> = spans
            .iter()
            .filter(|s| s.kind == kind && s.attribute("correlation_id") == Some(cid.as_str()))
            .map(|s| s.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    };
    assert_eq!(services_of(SpanKind::Server), ["accept-svc", "gateway"]);
    assert_eq!(
        services_of(SpanKind::Consumer),
        ["notify-svc", "process-svc"]
    );
    // Redis and Postgres calls are client spans of the same trace.
    for system_name in ["redis", "postgresql"] {
        assert!(
            spans.iter().any(|s| s.kind == SpanKind::Client
                && s.attribute("db.system.name") == Some(system_name)
                && s.attribute("correlation_id") == Some(cid.as_str())),
            "a {system_name} client span of order {cid}"
        );
    }
}

/// `name` summed over `labels` on `addr` grows by at least `by` from `before`.
fn grew(before: &Scrape, addr: SocketAddr, name: &str, labels: &[&str], by: f64) {
    let from = before.sum(name, labels);
    metrics::wait_for(
        addr,
        &format!("{name}{labels:?} grows from {from} by at least {by}"),
        SETTLED,
        |now| now.sum(name, labels) >= from + by,
    );
}

#[test]
fn metrics_move_with_orders_on_the_real_binaries() {
    let system = System::start();
    let [(_, gateway), (_, accept), (_, process), (_, notify)] = system.ports();
    let before: Vec<Scrape> = system.ports().iter().map(|(_, a)| Scrape::of(*a)).collect();
    // The order counters exist from the start, so a rate can be taken before the first order.
    for (scrape, counter) in [
        (&before[1], "contoso_orders_accepted_total"),
        (&before[2], "contoso_orders_processed_total"),
        (&before[2], "contoso_orders_failed_total"),
    ] {
        assert!(
            scrape.has(counter),
            "{counter} before any order:\n{}",
            scrape.text()
        );
    }
    let token = system.token("metrics-ada");
    let orders = 3;
    for _ in 0..orders {
        place_and_complete(system.gateway_web(), &token);
    }
    let n = f64::from(orders);
    let place = [
        "service=\"contoso.orders.v1.OrderService\"",
        "method=\"PlaceOrder\"",
    ];
    grew(
        &before[0],
        gateway,
        "rpc_server_requests_total",
        &[place[0], place[1], "code=\"0\""],
        n,
    );
    grew(
        &before[0],
        gateway,
        "rpc_server_duration_seconds_count",
        &place,
        n,
    );
    grew(
        &before[1],
        accept,
        "rpc_server_requests_total",
        &[place[0], place[1], "code=\"0\""],
        n,
    );
    grew(&before[1], accept, "contoso_orders_accepted_total", &[], n);
    grew(
        &before[1],
        accept,
        "contoso_messages_published_total",
        &["topic=\"accepted\""],
        n,
    );
    grew(
        &before[2],
        process,
        "contoso_orders_processed_total",
        &[],
        n,
    );
    grew(
        &before[2],
        process,
        "contoso_orders_completed_total",
        &[],
        n,
    );
    grew(
        &before[2],
        process,
        "contoso_order_completion_seconds_count",
        &[],
        n,
    );
    grew(
        &before[2],
        process,
        "contoso_consumer_ack_latency_seconds_count",
        &["topic=\"accepted\""],
        n,
    );
    grew(
        &before[2],
        process,
        "contoso_db_pool_wait_seconds_count",
        &[],
        n,
    );
    // ACCEPTED, PROCESSING and COMPLETED of each order cross the backplane.
    grew(
        &before[3],
        notify,
        "contoso_backplane_messages_total",
        &["direction=\"out\""],
        3.0 * n,
    );
    grew(
        &before[3],
        notify,
        "contoso_backplane_messages_total",
        &["direction=\"in\""],
        3.0 * n,
    );
    let process_now = Scrape::of(process);
    for gauge in [
        "contoso_outbox_backlog",
        "contoso_outbox_oldest_age_seconds",
        "contoso_db_pool_max_connections",
    ] {
        assert!(
            process_now.has(gauge),
            "process-svc exposes {gauge}:\n{}",
            process_now.text()
        );
    }
    metrics::wait_for(
        process,
        "process-svc's consumer reports its pending counts",
        SETTLED,
        |s| s.has("contoso_consumer_ack_pending_messages"),
    );
}

#[test]
fn contoso_dev_exports_traces_over_http_protobuf_and_its_metrics_move() {
    let otlp = OtlpReceiver::start();
    let dev = DevSystem::start_with(&otlp.env("http/protobuf"));
    let gateway = dev.gateway_addr();
    let before = Scrape::of(gateway);
    let token = dev.dev_token("dev-trace-ada");

    let cid = place_and_complete(dev.gateway_web(), &token);
    let second = place_and_complete(dev.gateway_web(), &token);
    assert_ne!(cid, second);

    // One process, one service name: the spans tell the services apart by kind and name.
    let spans = assert_one_trace(&otlp, &cid, &expected(["contoso-dev"; 4]));
    let servers = spans
        .iter()
        .filter(|s| {
            is(s, "contoso-dev", SpanKind::Server, PLACE_ORDER_SPAN)
                && s.attribute("correlation_id") == Some(cid.as_str())
        })
        .count();
    assert_eq!(
        servers, 2,
        "the gateway's and accept-svc's server spans of PlaceOrder"
    );

    let place = [
        "service=\"contoso.orders.v1.OrderService\"",
        "method=\"PlaceOrder\"",
    ];
    // Gateway and accept-svc both count the call: one registry for the whole process.
    grew(
        &before,
        gateway,
        "rpc_server_requests_total",
        &[place[0], place[1], "code=\"0\""],
        4.0,
    );
    grew(&before, gateway, "contoso_orders_accepted_total", &[], 2.0);
    grew(&before, gateway, "contoso_orders_processed_total", &[], 2.0);
    grew(
        &before,
        gateway,
        "contoso_order_completion_seconds_count",
        &[],
        2.0,
    );
    grew(
        &before,
        gateway,
        "contoso_consumer_ack_latency_seconds_count",
        &["topic=\"accepted\""],
        2.0,
    );
    grew(
        &before,
        gateway,
        "contoso_backplane_messages_total",
        &["direction=\"out\""],
        6.0,
    );
    assert!(Scrape::of(gateway).has("contoso_active_streams"));
}
