//! Entitlements end to end, on the real binaries over real Postgres, Redis and NATS: an order of 3
//! seats completes, and what it granted is listed over gRPC (grpcurl to accept-svc), grpc-web
//! (buf curl through the gateway) and REST (curl), with the right end date; the buyer hands a seat
//! to another learner, who then sees it, and takes it back; nobody else sees anything of it.

use chrono::{DateTime, Months, Utc};
use serde_json::{Value, json};

use crate::support::{
    rpc::{Client, Code, PLACE_ORDER, RpcError},
    system::System,
};
use crate::{COMPLETED, FLOW, STREAM_OPEN, int64, order_request, text};

const LIST_ENTITLEMENTS: &str = "contoso.entitlements.v1.EntitlementService/ListEntitlements";
const ASSIGN_SEAT: &str = "contoso.entitlements.v1.EntitlementService/AssignSeat";
const REVOKE_SEAT: &str = "contoso.entitlements.v1.EntitlementService/RevokeSeat";

/// AZ-104 is billed yearly: what it grants ends twelve calendar months after it starts.
const ANNUAL_PRODUCT: &str = "AZ-104";

fn instant(value: &Value) -> DateTime<Utc> {
    text(value)
        .parse()
        .unwrap_or_else(|e| panic!("not a timestamp: {value}: {e}"))
}

/// The entitlements `token`'s user sees through `client`.
fn listed(client: Client, token: &str) -> Vec<Value> {
    client.ok(LIST_ENTITLEMENTS, Some(token), json!({}))["entitlements"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn seat_request(id: i64, user: &str) -> Value {
    json!({ "entitlementId": id.to_string(), "userId": user })
}

fn assert_code(err: &RpcError, code: &str) {
    let name = match &err.code {
        Code::InvalidArgument => "invalidargument".to_owned(),
        Code::NotFound => "notfound".to_owned(),
        Code::PermissionDenied => "permissiondenied".to_owned(),
        Code::Unauthenticated => "unauthenticated".to_owned(),
        Code::Unavailable => "unavailable".to_owned(),
        Code::Other(other) => other.replace('_', "").to_ascii_lowercase(),
    };
    assert_eq!(name, code, "{}", err.output);
}

#[test]
fn an_order_of_three_seats_grants_an_entitlement_whose_seats_the_buyer_hands_out() {
    let system = System::start();
    let (alice, bob, carol) = (
        system.token("alice"),
        system.token("bob"),
        system.token("carol"),
    );
    let (grpc, web, rest) = (system.accept(), system.gateway_web(), system.rest());

    let mut stream = system.notify().watch(&alice, &[]);
    stream.wait_until_open(STREAM_OPEN);
    let before = Utc::now();
    let order = grpc.ok(
        PLACE_ORDER,
        Some(&alice),
        order_request(&[(ANNUAL_PRODUCT, 3)]),
    )["order"]
        .clone();
    stream.wait_for(text(&order["correlationId"]), COMPLETED, FLOW);

    // Over gRPC: one entitlement of 3 seats for one year, the buyer's, from the order's line.
    let mine = listed(grpc, &alice);
    assert_eq!(mine.len(), 1, "{mine:?}");
    let granted = &mine[0];
    assert_eq!(granted["productId"], ANNUAL_PRODUCT, "{granted}");
    assert_eq!(granted["role"], "ENTITLEMENT_ROLE_BUYER", "{granted}");
    assert_eq!(
        (granted["seats"].clone(), granted["seatsUsed"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(granted["holdsSeat"], true, "{granted}");
    assert_eq!(granted["active"], true, "{granted}");
    assert_eq!(
        int64(&granted["orderId"]),
        int64(&order["orderId"]),
        "{granted}"
    );
    assert_eq!(granted["lineNo"], 1, "{granted}");
    let from = instant(&granted["validFrom"]);
    let until = instant(&granted["validUntil"]);
    assert!(
        before <= from && from <= Utc::now(),
        "valid from the moment it was recorded: {from} (placed at {before})"
    );
    assert_eq!(
        Some(until),
        from.checked_add_months(Months::new(12)),
        "one year of AZ-104"
    );
    let days = granted["daysLeft"].as_i64().unwrap_or_default();
    assert!((365..=366).contains(&days), "{granted}");
    let id = int64(&granted["entitlementId"]);

    // The same over grpc-web through the gateway, and over REST.
    assert_eq!(listed(web, &alice), mine, "grpc-web lists what gRPC lists");
    let page = rest.get("/api/entitlements", Some(&alice)).ok(200);
    let item = &page["items"][0];
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(int64(&item["id"]), id);
    assert_eq!(
        (item["seats"].clone(), item["seatsUsed"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(item["role"], "Buyer");
    assert_eq!(instant(&item["validUntil"]), until, "{item}");
    assert_eq!(item["daysLeft"], granted["daysLeft"], "{item}");
    assert_eq!(int64(&item["orderId"]), int64(&order["orderId"]));

    // Nobody else sees anything of it.
    assert!(listed(grpc, &bob).is_empty(), "bob holds nothing yet");
    assert!(listed(grpc, &carol).is_empty());
    let carols = rest.get("/api/entitlements", Some(&carol)).ok(200);
    assert_eq!(carols["items"], json!([]), "{carols}");
    assert_code(
        &grpc.err(ASSIGN_SEAT, Some(&carol), seat_request(id, "carol")),
        "notfound",
    );

    // A seat for bob, over REST: he sees it as his, over gRPC and REST.
    let assigned = rest
        .post_json(
            &format!("/api/entitlements/{id}/seats"),
            Some(&alice),
            &json!({ "userId": "bob" }),
        )
        .ok(200);
    assert_eq!(assigned["seatsUsed"], 2, "{assigned}");
    assert_eq!(assigned["assignments"][0]["userId"], "bob", "{assigned}");
    let bobs = listed(grpc, &bob);
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(int64(&bobs[0]["entitlementId"]), id);
    assert_eq!(bobs[0]["role"], "ENTITLEMENT_ROLE_ASSIGNEE");
    assert_eq!(bobs[0]["holdsSeat"], true);
    assert_eq!(bobs[0]["buyer"], "alice");
    assert!(
        bobs[0].get("assignments").is_none(),
        "a learner does not see the others: {}",
        bobs[0]
    );
    let bobs_page = rest.get("/api/entitlements", Some(&bob)).ok(200);
    assert_eq!(bobs_page["items"][0]["role"], "Assignee", "{bobs_page}");
    assert!(listed(grpc, &carol).is_empty(), "carol still sees nothing");

    // Only the buyer manages the seats, within the rules.
    assert_code(
        &grpc.err(ASSIGN_SEAT, Some(&bob), seat_request(id, "carol")),
        "permissiondenied",
    );
    rest.post_json(
        &format!("/api/entitlements/{id}/seats"),
        Some(&bob),
        &json!({ "userId": "carol" }),
    )
    .problem(403, None);
    assert_code(
        &grpc.err(ASSIGN_SEAT, Some(&alice), seat_request(id, "bob")),
        "invalidargument",
    );
    rest.post_json(
        &format!("/api/entitlements/{id}/seats"),
        Some(&alice),
        &json!({ "userId": "alice" }),
    )
    .problem(400, Some("userId"));
    web.ok(ASSIGN_SEAT, Some(&alice), seat_request(id, "carol"));
    let full = grpc.ok(ASSIGN_SEAT, Some(&alice), seat_request(id, "dave"))["entitlement"].clone();
    assert_eq!(full["seatsUsed"], 3, "{full}");
    // proto3 JSON leaves out a false field.
    assert!(
        !full["holdsSeat"].as_bool().unwrap_or(false),
        "alice gave her own seat away: {full}"
    );
    assert_code(
        &grpc.err(ASSIGN_SEAT, Some(&alice), seat_request(id, "erin")),
        "failedprecondition",
    );
    let no_seat = rest
        .post_json(
            &format!("/api/entitlements/{id}/seats"),
            Some(&alice),
            &json!({ "userId": "erin" }),
        )
        .problem(409, None);
    assert!(
        text(&no_seat["detail"]).contains("no seat is free"),
        "{no_seat}"
    );
    grpc.ok(REVOKE_SEAT, Some(&alice), seat_request(id, "dave"));
    grpc.ok(REVOKE_SEAT, Some(&alice), seat_request(id, "carol"));

    // Revoked over REST: bob no longer sees it.
    let revoked = rest.delete(&format!("/api/entitlements/{id}/seats/bob"), Some(&alice));
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert!(listed(grpc, &bob).is_empty(), "bob's seat is gone");
    assert_eq!(
        rest.get("/api/entitlements", Some(&bob)).ok(200)["items"],
        json!([])
    );
    rest.delete(&format!("/api/entitlements/{id}/seats/bob"), Some(&alice))
        .problem(404, None);
    let after = listed(grpc, &alice);
    assert_eq!(
        (after[0]["seatsUsed"].clone(), after[0]["holdsSeat"].clone()),
        (json!(1), json!(true))
    );

    // Granted once, in the order's transaction; soft-deleting the order revokes nothing.
    let cid = text(&order["correlationId"]);
    let rows = "SELECT count(*) AS n FROM entitlements e JOIN orders o ON o.id = e.order_id \
                WHERE o.correlation_id = $1::uuid";
    assert_eq!(
        system.count(rows, &[cid]),
        1,
        "one entitlement for the one line"
    );
    let deleted = rest.delete(
        &format!("/api/orders/{}", int64(&order["orderId"])),
        Some(&alice),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(
        listed(grpc, &alice),
        after,
        "the deleted order's entitlement stays"
    );
}
