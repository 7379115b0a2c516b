//! `contoso dev --demo-data`: a few customers with completed orders, the entitlements those
//! orders granted (one expired) and seats handed out, for trying the web app's subscriptions.
//!
//! The orders go through `OrderWriter::record_order`, as process-svc records them, so the
//! entitlements are granted by the same rules (decision 16); their outbox entries are then marked
//! completed without publishing, since nothing in the workflow state or on the bus knows them.
//! Seeding again finds the first demo customer's orders and does nothing.

use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use contoso_domain::{
    CorrelationId, EntitlementId, LineRequest, NewOrder, OrderId, UserId, price_lines,
};
use contoso_platform::seal::{CustomerSealer, DEV_SEAL_KEYS};
use contoso_proto::{convert::to_timestamp, events::v1::OrderProcessed};
use contoso_store::{RecordOutcome, Store};
use prost::Message as _;

/// The demo customers: a training lead who hands out seats, and two learners.
pub(crate) const BUYER: &str = "ada";
const LEARNERS: [&str; 2] = ["grace", "linus"];

/// How long ago the expired demo order was placed: past any monthly period.
pub(crate) const PAST: TimeDelta = TimeDelta::days(75);

/// One demo order: who places it, which products (exam code, quantity), and whether it is placed
/// through the store that stands [`PAST`] in the past.
struct Demo {
    customer: &'static str,
    lines: &'static [(&'static str, i32)],
    in_the_past: bool,
}

const ORDERS: [Demo; 3] = [
    // Expired: a monthly lab bought long ago.
    Demo {
        customer: BUYER,
        lines: &[("CKA", 2)],
        in_the_past: true,
    },
    // A team's yearly bundle and a monthly practice exam.
    Demo {
        customer: BUYER,
        lines: &[("AZ-104", 5), ("AZ-900", 1)],
        in_the_past: false,
    },
    Demo {
        customer: "grace",
        lines: &[("SAA-C03", 1)],
        in_the_past: false,
    },
];

/// Seeds the demo data through `store` and, for orders placed in the past, `past` (the same data
/// on a clock [`PAST`] behind). Returns whether anything was seeded.
pub(crate) async fn seed(store: &dyn Store, past: &dyn Store) -> anyhow::Result<bool> {
    let buyer = UserId::parse(BUYER)?;
    if store.list_orders(&buyer, 0, 1).await?.total > 0 {
        tracing::info!("demo data already present");
        return Ok(false);
    }
    let catalog = store.all_products().await?;
    let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS)?;
    let block = store.reserve_block().await?;
    let now = Utc::now();
    let mut recorded = HashSet::new();
    for (demo, id) in ORDERS.iter().zip(block.start..) {
        let requests: Vec<LineRequest<'_>> = demo
            .lines
            .iter()
            .map(|&(product_id, quantity)| LineRequest {
                product_id,
                quantity,
            })
            .collect();
        let priced = price_lines(&requests, |id| catalog.iter().find(|p| p.id == id))
            .with_context(|| format!("pricing the demo order of {}", demo.customer))?;
        let accepted_at: DateTime<Utc> = if demo.in_the_past { now - PAST } else { now };
        let correlation_id = CorrelationId::new();
        let customer = UserId::parse(demo.customer)?;
        // Sealed as accept-svc would, so notify-svc can route the order's COMPLETED.
        let sealed = sealer.seal(correlation_id, &customer)?;
        let order = NewOrder {
            order_id: OrderId::new(id).context("a reserved order id")?,
            correlation_id,
            customer,
            lines: priced.lines,
            total_cents: priced.total_cents,
            currency: priced.currency,
            accepted_at,
        };
        let event = OrderProcessed {
            correlation_id: order.correlation_id.to_string(),
            order_id: order.order_id.get(),
            processed_at: Some(to_timestamp(accepted_at)),
            customer: Some(sealed),
        }
        .encode_to_vec();
        let writer = if demo.in_the_past { past } else { store };
        if writer.record_order(&order, &event).await? == RecordOutcome::Inserted {
            recorded.insert(order.order_id);
        }
    }

    // The team's yearly bundle: a seat for each learner.
    let listed = store.list_entitlements(&buyer).await?.value;
    let bundle: EntitlementId = listed
        .iter()
        .find(|e| e.product_id == "AZ-104")
        .map(|e| e.id)
        .context("the demo bundle's entitlement")?;
    for learner in LEARNERS {
        store
            .assign_seat(&buyer, bundle, &UserId::parse(learner)?)
            .await
            .with_context(|| format!("assigning a demo seat to {learner}"))?;
    }

    complete(store, &recorded).await?;
    tracing::info!(
        orders = recorded.len(),
        users = ?[BUYER, LEARNERS[0], LEARNERS[1]],
        "demo data seeded; sign in as one of these users"
    );
    Ok(true)
}

/// Marks the outbox entries of `orders` published and the orders COMPLETED. Entries of other
/// orders (a previous run's, still to be relayed) are only leased for a moment, so the relay gets
/// them right back.
async fn complete(store: &dyn Store, orders: &HashSet<OrderId>) -> anyhow::Result<()> {
    let mut left = orders.len();
    while left > 0 {
        let leased = store
            .lease_pending(contoso_store::MAX_BATCH, Duration::from_millis(1))
            .await?;
        let mine: Vec<_> = leased
            .into_iter()
            .filter(|e| orders.contains(&e.order_id))
            .collect();
        anyhow::ensure!(
            !mine.is_empty(),
            "the demo orders' outbox entries are not pending"
        );
        store.complete(&mine).await?;
        left -= mine.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use contoso_domain::OrderStatus;
    use contoso_store::{Entitlements, ManualClock, MemoryStore, OrderReader, Outbox};

    use super::*;

    #[tokio::test]
    async fn demo_data_seeds_completed_orders_with_entitlements_once() {
        let store = MemoryStore::new().unwrap();
        let past = store
            .clone()
            .with_clock(Arc::new(ManualClock::new(Utc::now() - PAST)));
        assert!(seed(&store, &past).await.unwrap());

        let ada = UserId::parse(BUYER).unwrap();
        let orders = store.list_orders(&ada, 0, 10).await.unwrap();
        assert_eq!(orders.total, 2);
        assert!(
            orders
                .items
                .iter()
                .all(|o| o.status == OrderStatus::Completed)
        );

        let listed = store.list_entitlements(&ada).await.unwrap();
        let products: Vec<&str> = listed.value.iter().map(|e| e.product_id.as_str()).collect();
        assert_eq!(
            products,
            ["AZ-900", "AZ-104", "CKA"],
            "active first, the expired one last"
        );
        assert!(listed.value[2].validity.is_expired(listed.as_of));
        assert_eq!(listed.value[1].seats_used(), 3, "ada and her two learners");
        let grace = store
            .list_entitlements(&UserId::parse("grace").unwrap())
            .await
            .unwrap();
        assert_eq!(grace.value.len(), 2, "her own and the seat she was given");

        assert!(!seed(&store, &past).await.unwrap(), "seeded once");
        assert_eq!(store.list_orders(&ada, 0, 10).await.unwrap().total, 2);
        assert!(
            store
                .lease_pending(10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty(),
            "nothing left for the relay"
        );
    }
}
