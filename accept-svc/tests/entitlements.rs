//! EntitlementService over a real tonic server on port 0, wired to the in-memory store (whose
//! `record_order` grants the entitlements, as process-svc's recording does) on a manual clock.

mod common;

use common::{as_user, user};

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use contoso_bus::MemoryBus;
use contoso_domain::{CorrelationId, NewOrder, OrderId, OrderLine, Quantity};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    server::Readiness,
};
use contoso_proto::entitlements::v1::{
    self as pb, AssignSeatRequest, ListEntitlementsRequest, RevokeSeatRequest,
    entitlement_service_client::EntitlementServiceClient,
};
use contoso_state::MemoryState;
use contoso_store::{ManualClock, MemoryStore, OrderWriter, RecordOutcome};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// January 31st: a monthly entitlement granted now ends on February 28th.
fn start_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 31, 10, 0, 0).unwrap()
}

struct Harness {
    client: EntitlementServiceClient<Channel>,
    channel: Channel,
    auth: Authenticator,
    store: Arc<MemoryStore>,
    clock: ManualClock,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Harness {
    let auth = Authenticator::new(&AuthArgs::dev()).unwrap();
    let clock = ManualClock::new(start_of_time());
    let store = Arc::new(
        MemoryStore::new()
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let deps = accept_svc::Deps {
        catalog: store.clone(),
        ids: store.clone(),
        orders: store.clone(),
        entitlements: store.clone(),
        state: Arc::new(MemoryState::new(Duration::from_secs(60))),
        bus: Arc::new(MemoryBus::new()),
        auth: Arc::new(auth.clone()),
        sealer: CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap(),
        readiness: Readiness::new(),
    };
    tokio::spawn(accept_svc::run(
        listener,
        deps,
        accept_svc::Settings::default(),
        shutdown.clone(),
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    Harness {
        client: EntitlementServiceClient::new(channel.clone()),
        channel,
        auth,
        store,
        clock,
        shutdown,
    }
}

impl Harness {
    fn request<T>(&self, who: &str, message: T) -> Request<T> {
        as_user(&self.auth, who, message)
    }

    /// Records an order of `lines` for `who`, as process-svc would, granting its entitlements.
    async fn record(&self, order_id: i64, who: &str, lines: &[(&str, i32)]) -> NewOrder {
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|(id, quantity)| OrderLine {
                product_id: (*id).to_owned(),
                product_name: format!("{id} practice"),
                quantity: Quantity::try_from(*quantity).unwrap(),
                unit_price_cents: 1000,
            })
            .collect();
        let order = NewOrder {
            order_id: OrderId::new(order_id).unwrap(),
            correlation_id: CorrelationId::new(),
            customer: user(who),
            total_cents: lines.iter().map(OrderLine::total_cents).sum(),
            lines,
            currency: "USD".into(),
            accepted_at: Utc::now(),
        };
        assert_eq!(
            self.store.record_order(&order, b"processed").await.unwrap(),
            RecordOutcome::Inserted
        );
        order
    }

    async fn list(&self, who: &str) -> Vec<pb::Entitlement> {
        self.client
            .clone()
            .list_entitlements(self.request(who, ListEntitlementsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .entitlements
    }

    async fn assign(&self, who: &str, id: i64, to: &str) -> Result<pb::Entitlement, tonic::Status> {
        let request = AssignSeatRequest {
            entitlement_id: id,
            user_id: to.into(),
        };
        let reply = self
            .client
            .clone()
            .assign_seat(self.request(who, request))
            .await?;
        Ok(reply.into_inner().entitlement.unwrap())
    }

    async fn revoke(
        &self,
        who: &str,
        id: i64,
        from: &str,
    ) -> Result<pb::Entitlement, tonic::Status> {
        let request = RevokeSeatRequest {
            entitlement_id: id,
            user_id: from.into(),
        };
        let reply = self
            .client
            .clone()
            .revoke_seat(self.request(who, request))
            .await?;
        Ok(reply.into_inner().entitlement.unwrap())
    }
}

fn seconds(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn users(e: &pb::Entitlement) -> Vec<&str> {
    e.assignments.iter().map(|a| a.user_id.as_str()).collect()
}

#[tokio::test]
async fn a_buyer_lists_what_an_order_granted_and_a_learner_sees_a_seat_they_were_given() {
    let h = start().await;
    let order = h.record(1, "alice", &[("AZ-700", 3), ("AZ-104", 1)]).await;

    let listed = h.list("alice").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let monthly = &listed[0];
    assert_eq!(monthly.product_id, "AZ-700", "the one ending soonest first");
    assert_eq!(monthly.product_name, "AZ-700 practice");
    assert_eq!(monthly.role, pb::EntitlementRole::Buyer as i32);
    assert_eq!((monthly.seats, monthly.seats_used), (3, 1));
    assert!(monthly.holds_seat && monthly.active);
    assert_eq!(monthly.days_left, 28);
    assert_eq!(
        monthly.valid_from.as_ref().map(|t| t.seconds),
        Some(seconds(start_of_time()))
    );
    let feb_28 = Utc.with_ymd_and_hms(2027, 2, 28, 10, 0, 0).unwrap();
    assert_eq!(
        monthly.valid_until.as_ref().map(|t| t.seconds),
        Some(seconds(feb_28))
    );
    assert_eq!(
        (monthly.order_id, monthly.line_no),
        (order.order_id.get(), 1)
    );
    assert_eq!(monthly.buyer, "alice");
    assert_eq!(listed[1].product_id, "AZ-104");
    assert_eq!(listed[1].days_left, 365);

    let id = monthly.entitlement_id;
    let after = h.assign("alice", id, "ann").await.unwrap();
    assert_eq!((after.seats_used, users(&after)), (2, vec!["ann"]));

    let anns = h.list("ann").await;
    assert_eq!(anns.len(), 1, "{anns:?}");
    let seat = &anns[0];
    assert_eq!(seat.entitlement_id, id);
    assert_eq!(seat.role, pb::EntitlementRole::Assignee as i32);
    assert!(seat.holds_seat && seat.active);
    assert_eq!(seat.buyer, "alice");
    assert_eq!(
        (seat.order_id, seat.line_no),
        (0, 0),
        "the order is the buyer's"
    );
    assert!(
        seat.assignments.is_empty(),
        "a learner does not see the other learners"
    );
    assert!(
        h.list("eve").await.is_empty(),
        "eve sees nothing of alice's"
    );

    let back = h.revoke("alice", id, "ann").await.unwrap();
    assert_eq!((back.seats_used, back.assignments.len()), (1, 0));
    assert!(h.list("ann").await.is_empty());

    // Expired entitlements are listed after the active ones, with no days left.
    h.clock.set(feb_28 + TimeDelta::seconds(1));
    let later = h.list("alice").await;
    assert_eq!(later[1].entitlement_id, id);
    assert!(!later[1].active);
    assert_eq!(later[1].days_left, 0);
}

#[tokio::test]
async fn bad_seat_requests_get_the_documented_codes_and_change_nothing() {
    let h = start().await;
    h.record(1, "alice", &[("AZ-700", 2)]).await;
    h.record(2, "bob", &[("AZ-700", 1)]).await;
    let id = h.list("alice").await[0].entitlement_id;
    let bobs = h.list("bob").await[0].entitlement_id;
    h.assign("alice", id, "ann").await.unwrap();

    let cases: [(&str, &str, i64, &str, Code, &str); 10] = [
        (
            "assign",
            "alice",
            id + 1000,
            "cy",
            Code::NotFound,
            "no such entitlement",
        ),
        (
            "assign",
            "alice",
            bobs,
            "cy",
            Code::NotFound,
            "no such entitlement",
        ),
        (
            "assign",
            "ann",
            id,
            "cy",
            Code::PermissionDenied,
            "only the buyer",
        ),
        (
            "assign",
            "alice",
            id,
            "alice",
            Code::InvalidArgument,
            "user_id: ",
        ),
        (
            "assign",
            "alice",
            id,
            "ann",
            Code::InvalidArgument,
            "user_id: ",
        ),
        (
            "assign",
            "alice",
            id,
            " ",
            Code::InvalidArgument,
            "user_id: ",
        ),
        (
            "assign",
            "alice",
            0,
            "cy",
            Code::InvalidArgument,
            "entitlement_id: ",
        ),
        (
            "revoke",
            "alice",
            id,
            "cy",
            Code::NotFound,
            "holds no assigned seat",
        ),
        (
            "revoke",
            "alice",
            id,
            "alice",
            Code::NotFound,
            "holds no assigned seat",
        ),
        (
            "revoke",
            "ann",
            id,
            "ann",
            Code::PermissionDenied,
            "only the buyer",
        ),
    ];
    for (rpc, who, entitlement, to, code, says) in cases {
        let result = if rpc == "assign" {
            h.assign(who, entitlement, to).await
        } else {
            h.revoke(who, entitlement, to).await
        };
        let status = result.expect_err("refused");
        assert_eq!(status.code(), code, "{rpc} by {who} for {to:?}: {status:?}");
        assert!(
            status.message().contains(says),
            "{rpc} by {who}: {}",
            status.message()
        );
    }

    // The second seat goes to cy; then no seat is free.
    h.assign("alice", id, "cy").await.unwrap();
    let full = h.assign("alice", id, "dee").await.expect_err("full");
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert!(
        full.message().contains("no seat is free"),
        "{}",
        full.message()
    );
    let listed = h.list("alice").await;
    assert_eq!(
        users(&listed[0]),
        ["ann", "cy"],
        "nothing changed but cy's seat"
    );
    assert!(!listed[0].holds_seat, "alice gave away her own seat too");

    let anonymous = h
        .client
        .clone()
        .list_entitlements(Request::new(ListEntitlementsRequest {}))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_service_reports_serving_on_the_health_service() {
    let h = start().await;
    let status = HealthClient::new(h.channel.clone())
        .check(HealthCheckRequest {
            service: "contoso.entitlements.v1.EntitlementService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}
