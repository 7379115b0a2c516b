//! The REST contract, through the real gateway over the real services, driven with curl: every
//! endpoint and every status code the original system's clients rely on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    rest::RestClient,
    rpc::{GET_PRODUCT, LIST_PRODUCTS, PLACE_ORDER},
    system::{DevSystem, System},
};
use crate::{FLOW, STREAM_OPEN, TWO_LINES, int64, order_request, text};

/// The body of a REST order for `lines`.
fn rest_order(lines: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(id, quantity)| json!({ "productId": id, "quantity": quantity }))
        .collect();
    json!({ "items": items })
}

/// Places `lines` for `token` and checks the 201: `Location`, the whole accepted order.
fn place(rest: &RestClient, token: &str, lines: &[(&str, i64)], key: Option<&str>) -> Value {
    let body = rest_order(lines).to_string();
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let reply = rest.send(
        "POST",
        "/api/orders",
        Some(token),
        &headers,
        Some(body.as_bytes()),
    );
    let order = reply.ok(201);
    let id = order["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id: {order}"));
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/orders/{id}").as_str())
    );
    assert_eq!(order["status"], "Accepted", "{order}");
    assert!(order["correlationId"].is_string(), "{order}");
    assert!(order["createdAt"].is_string(), "{order}");
    let items = order["items"].as_array().expect("items");
    assert_eq!(items.len(), lines.len(), "{order}");
    for (item, (id, quantity)) in items.iter().zip(lines) {
        assert_eq!(item["productId"], *id, "{item}");
        assert_eq!(item["quantity"], *quantity, "{item}");
        assert!(item["productName"].is_string(), "{item}");
        assert!(
            item["unitPrice"].as_f64().is_some_and(|p| p > 0.0),
            "{item}"
        );
        assert!(
            text(&item["imageUrl"]).starts_with("/images/products/"),
            "{item}"
        );
    }
    order
}

/// Polls `GET /api/orders/status/{cid}` until `status` (a condition with a deadline, not a sleep
/// as synchronisation: each poll is a real request).
fn wait_for_status(rest: &RestClient, token: &str, cid: &str, status: &str) -> Value {
    let until = std::time::Instant::now() + FLOW;
    loop {
        let answer = rest
            .get(&format!("/api/orders/status/{cid}"), Some(token))
            .ok(200);
        if answer["status"] == status {
            return answer;
        }
        assert!(
            std::time::Instant::now() < until,
            "{cid} did not reach {status}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_catalog_contract_over_rest() {
    let system = System::start();
    let rest = system.rest();

    let page = rest.get("/api/products", None).ok(200);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["size"], 12, "the original default page size");
    let grpc_page = system
        .accept()
        .ok(LIST_PRODUCTS, None, json!({ "size": 1 }));
    assert_eq!(page["total"], grpc_page["total"], "every active product");
    assert!(page["total"].as_i64().unwrap() > 100, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(12));
    let first = &page["items"][0];
    for field in [
        "externalProductId",
        "name",
        "category",
        "vendor",
        "imageUrl",
        "discount",
        "billingPeriod",
        "isSubscription",
        "price",
    ] {
        assert!(!first[field].is_null(), "{field} missing from {first}");
    }

    // `price` is what the customer pays: the discounted price, as a decimal.
    let az104 = rest.get("/api/products/AZ-104", None).ok(200);
    let grpc = &system
        .accept()
        .ok(GET_PRODUCT, None, json!({ "id": "AZ-104" }))["product"];
    let cents = int64(&grpc["effectivePriceCents"]);
    assert!((az104["price"].as_f64().unwrap() * 100.0 - cents as f64).abs() < 0.001);
    assert_eq!(az104["discount"], grpc["discountPercent"]);
    assert_eq!(az104["billingPeriod"], "Annual");

    // Filters and paging.
    let filtered = rest
        .get("/api/products?q=az-10&vendor=microsoft&size=5", None)
        .ok(200);
    let items = filtered["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|p| p["vendor"] == "Microsoft"
                && text(&p["externalProductId"]).starts_with("AZ-10"))
    );
    let second = rest.get("/api/products?offset=12&size=12", None).ok(200);
    assert_ne!(second["items"][0], page["items"][0]);
    let by_category = rest
        .get("/api/products?category=Bundle&size=100", None)
        .ok(200);
    assert!(
        by_category["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["category"] == "Bundle")
    );

    // Out of range or not a number: 400 naming the parameter, never a default instead.
    for (query, field) in [
        ("size=0", "size"),
        ("size=101", "size"),
        ("offset=-1", "offset"),
        ("size=twelve", "size"),
        ("offset=1.5", "offset"),
    ] {
        rest.get(&format!("/api/products?{query}"), None)
            .problem(400, Some(field));
    }
    let missing = rest.get("/api/products/NOPE-404", None).problem(404, None);
    assert_eq!(missing["instance"], "/api/products/NOPE-404");

    // A token is accepted, a forged one refused.
    let token = system.token("alice");
    rest.get("/api/products", Some(&token)).ok(200);
    let forged = rest.get("/api/products", Some(&system.forged_token("alice")));
    forged.problem(401, None);
    assert_eq!(forged.header("www-authenticate"), Some("Bearer"));

    // Images come from the gateway itself.
    let image = rest.get(text(&az104["imageUrl"]), None);
    assert_eq!(image.status, 200);
    assert_eq!(image.header("content-type"), Some("image/svg+xml"));
    assert!(image.body.contains("AZ-104"), "{}", image.body);
    rest.get("/images/products/nope-404.svg", None)
        .problem(404, None);

    // The document and its docs page, served with no internet.
    let doc = rest.get("/openapi.json", None).ok(200);
    assert!(text(&doc["openapi"]).starts_with("3.1"), "{doc}");
    assert!(doc["paths"]["/api/orders"]["post"].is_object());
    let docs = rest.get("/docs/", None);
    assert_eq!(docs.status, 200);
    assert!(docs.body.contains("swagger"), "{}", docs.body);
    let initializer = rest.get("/docs/swagger-initializer.js", None);
    assert_eq!(initializer.status, 200);
    assert!(
        initializer.body.contains("/openapi.json"),
        "{}",
        initializer.body
    );
}

#[test]
fn the_order_contract_over_rest() {
    let system = System::start();
    let rest = system.rest();
    let alice = system.token("alice");
    let bob = system.token("bob");

    // 401 without a token, with a forged one and with an expired one.
    let body = rest_order(&TWO_LINES);
    for token in [
        None,
        Some(system.forged_token("alice")),
        Some(system.expired_token("alice")),
    ] {
        let reply = rest.post_json("/api/orders", token.as_deref(), &body);
        reply.problem(401, None);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    rest.get("/api/orders", None).problem(401, None);

    // Bad input: 400 naming the field, 413, 415; nothing is placed.
    for (body, field) in [
        (json!({}), "items"),
        (json!({ "items": [] }), "items"),
        (
            json!({ "items": [{ "productId": "AZ-104", "quantity": 0 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": "AZ-104", "quantity": "two" }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": "AZ-104", "quantity": 1 }, { "productId": "NOPE-404", "quantity": 1 }] }),
            "items[1].productId",
        ),
    ] {
        rest.post_json("/api/orders", Some(&alice), &body)
            .problem(400, Some(field));
    }
    rest.send(
        "POST",
        "/api/orders",
        Some(&alice),
        &[("content-type", "application/json")],
        Some(b"{not json"),
    )
    .problem(400, None);
    rest.send(
        "POST",
        "/api/orders",
        Some(&alice),
        &[("content-type", "text/plain")],
        Some(body.to_string().as_bytes()),
    )
    .problem(415, None);
    let huge = vec![b' '; 2 * 1024 * 1024];
    rest.send(
        "POST",
        "/api/orders",
        Some(&alice),
        &[("content-type", "application/json")],
        Some(&huge),
    )
    .problem(413, None);
    assert_eq!(rest.get("/api/orders", Some(&alice)).ok(200)["total"], 0);

    // Read your own writes: right after the 201, the order is there by id and in the list.
    let order = place(&rest, &alice, &TWO_LINES, Some("rest-key-1"));
    let id = order["id"].as_i64().unwrap();
    let read = rest.get(&format!("/api/orders/{id}"), Some(&alice)).ok(200);
    assert_eq!(read["correlationId"], order["correlationId"]);
    assert_eq!(read["items"], order["items"]);
    let list = rest.get("/api/orders", Some(&alice)).ok(200);
    assert_eq!(list["size"], 10, "the original default page size");
    assert_eq!(list["items"][0]["id"], id, "{list}");

    // The same key with the same body is the same order; with another body, 409.
    let again = place(&rest, &alice, &TWO_LINES, Some("rest-key-1"));
    assert_eq!(again["id"], id);
    assert_eq!(again["correlationId"], order["correlationId"]);
    let other = rest.send(
        "POST",
        "/api/orders",
        Some(&alice),
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "rest-key-1"),
        ],
        Some(rest_order(&[("AZ-900", 1)]).to_string().as_bytes()),
    );
    other.problem(409, None);

    // Another user's order is not there for them; ids must be positive numbers.
    rest.get(&format!("/api/orders/{id}"), Some(&bob))
        .problem(404, None);
    rest.delete(&format!("/api/orders/{id}"), Some(&bob))
        .problem(404, None);
    rest.get("/api/orders/abc", Some(&alice))
        .problem(400, Some("id"));
    rest.get("/api/orders/0", Some(&alice))
        .problem(400, Some("id"));
    rest.get("/api/orders?size=101", Some(&alice))
        .problem(400, Some("size"));
    rest.get("/api/orders/999999999", Some(&alice))
        .problem(404, None);

    // Status by correlation id, then the delete once the order has landed.
    let cid = text(&order["correlationId"]);
    rest.get(&format!("/api/orders/status/{cid}"), Some(&bob))
        .problem(404, None);
    rest.get("/api/orders/status/not-a-uuid", Some(&alice))
        .problem(400, Some("correlationId"));
    let completed = wait_for_status(&rest, &alice, cid, "Completed");
    assert_eq!(completed["orderId"], id);
    assert!(completed["updatedAt"].is_string(), "{completed}");
    assert_eq!(rest.get("/api/orders", Some(&alice)).ok(200)["total"], 1);

    let deleted = rest.delete(&format!("/api/orders/{id}"), Some(&alice));
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    rest.get(&format!("/api/orders/{id}"), Some(&alice))
        .problem(404, None);
    rest.delete(&format!("/api/orders/{id}"), Some(&alice))
        .problem(404, None);
    assert_eq!(rest.get("/api/orders", Some(&alice)).ok(200)["total"], 0);
}

#[test]
fn deleting_an_order_in_flight_is_applied_or_refused_with_409_never_lost() {
    let mut system = System::start();
    let rest = system.rest();
    let alice = system.token("alice");
    // Stopping the broker right after intake keeps the order in flight, unless process-svc
    // was quicker: both outcomes are allowed, neither may lose it.
    let order = place(&rest, &alice, &[("AZ-900", 1)], None);
    let id = order["id"].as_i64().unwrap();
    system.stop_broker();
    let reply = rest.delete(&format!("/api/orders/{id}"), Some(&alice));
    match reply.status {
        // It had already landed: deleted.
        204 => {
            rest.get(&format!("/api/orders/{id}"), Some(&alice))
                .problem(404, None);
        }
        _ => {
            let problem = reply.problem(409, None);
            assert!(
                text(&problem["detail"]).contains("still being processed"),
                "{problem}"
            );
            // Still there, not lost.
            rest.get(&format!("/api/orders/{id}"), Some(&alice)).ok(200);
        }
    }
    // A dependency down is 503 with Retry-After, never a 500.
    let unavailable = rest.post_json("/api/orders", Some(&alice), &rest_order(&[("AZ-900", 1)]));
    unavailable.problem(503, None);
    assert!(unavailable.header("retry-after").is_some());
}

#[test]
fn a_rest_order_and_a_grpc_order_reach_their_users_event_stream_and_nobody_elses() {
    let system = System::start();
    let rest = system.rest();
    let alice = system.token("alice");
    let bob = system.token("bob");

    let mut alices = rest.events("/api/orders/events", &alice, &[]);
    alices.wait_until_open(STREAM_OPEN);
    let mut bobs = rest.events("/api/orders/events", &bob, &[]);
    bobs.wait_until_open(STREAM_OPEN);

    let by_rest = place(&rest, &alice, &TWO_LINES, Some("mixed-1"));
    let by_grpc = system
        .accept()
        .ok(PLACE_ORDER, Some(&alice), order_request(&[("AZ-900", 1)]))["order"]
        .clone();
    let rest_cid = text(&by_rest["correlationId"]);
    let grpc_cid = text(&by_grpc["correlationId"]);

    for cid in [rest_cid, grpc_cid] {
        let done = alices.wait_for(cid, "Completed", FLOW);
        assert!(done["orderId"].as_i64().is_some_and(|id| id > 0), "{done}");
        assert_eq!(
            alices.statuses_of(cid),
            ["Accepted", "Processing", "Completed"],
            "{cid}"
        );
    }
    assert!(
        alices
            .ids()
            .iter()
            .any(|id| id == &format!("{rest_cid}/Completed")),
        "event ids are <correlationId>/<Status>: {:?}",
        alices.ids()
    );

    let listed = rest.get("/api/orders", Some(&alice)).ok(200);
    let ids: Vec<i64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["id"].as_i64())
        .collect();
    assert!(ids.contains(&by_rest["id"].as_i64().unwrap()), "{listed}");
    assert!(ids.contains(&int64(&by_grpc["orderId"])), "{listed}");

    // Bob's stream stayed open (heartbeats) and saw none of it.
    bobs.wait_for_comments(2, STREAM_OPEN);
    assert!(
        bobs.status_events().is_empty(),
        "{:?}",
        bobs.status_events()
    );
    assert_eq!(rest.get("/api/orders", Some(&bob)).ok(200)["total"], 0);

    // A reconnecting client names its last event and gets that order's status in the snapshot.
    let last = format!("{rest_cid}/Processing");
    let mut again = rest.events("/api/orders/events", &alice, &[("last-event-id", &last)]);
    again.wait_until_open(STREAM_OPEN);
    again.wait_for(rest_cid, "Completed", FLOW);
    let mut named = rest.events(
        &format!("/api/orders/events?correlationId={grpc_cid}"),
        &alice,
        &[],
    );
    named.wait_for(grpc_cid, "Completed", FLOW);

    // Bad ids are 400; too many streams for one user, 429.
    let mut bad = rest.events("/api/orders/events?correlationId=nope", &alice, &[]);
    assert_eq!(bad.head(STREAM_OPEN).0, 400);
    let mut held = Vec::new();
    loop {
        let mut stream = rest.events("/api/orders/events", &bob, &[]);
        let (status, _) = stream.head(STREAM_OPEN);
        if status == 429 {
            break;
        }
        assert_eq!(status, 200);
        held.push(stream);
        assert!(held.len() <= 64, "no per-user stream limit was enforced");
    }
}

#[test]
fn contoso_dev_serves_the_rest_api() {
    let dev = DevSystem::start();
    let rest = dev.rest();
    let token = rest
        .post_json("/dev/token", None, &json!({ "userId": "dana" }))
        .ok(200);
    assert_eq!(token["userId"], "dana");
    assert!(token["expiresAtUtc"].is_string(), "{token}");
    let token = text(&token["accessToken"]).to_owned();

    let mut events = rest.events("/api/orders/events", &token, &[]);
    events.wait_until_open(STREAM_OPEN);
    let order = place(&rest, &token, &TWO_LINES, Some("dev-1"));
    let id = order["id"].as_i64().unwrap();
    rest.get(&format!("/api/orders/{id}"), Some(&token)).ok(200);
    events.wait_for(text(&order["correlationId"]), "Completed", FLOW);
    let doc = rest.get("/openapi.json", None).ok(200);
    assert!(
        doc["paths"]["/dev/token"]["post"].is_object(),
        "dev mode documents its login"
    );
}
