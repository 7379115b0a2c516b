//! The store contract, run against [`PgStore`] (a fresh database per test, migrated with
//! `migrate`) and against [`MemoryStore`], so the in-memory store is held to what Postgres does.
//! Each contract function gets two handles on the same data ("replicas": two pools on one
//! database, or two clones of one memory store) and, for Postgres, raw SQL to count rows.
//! Postgres-only behaviour (migrations, constraints, connecting) has its own tests at the end.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeDelta, TimeZone, Utc};
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use contoso_domain::{
    BillingPeriod, CorrelationId, Entitlement, EntitlementId, NewOrder, OrderId, OrderLine,
    OrderRecord, OrderStatus, Quantity, SeatRefusal, UserId,
};
use contoso_store::{
    ManualClock, MemoryStore, ORDER_ID_BLOCK_SIZE, OutboxEntry, PROCESSED_EVENT_KIND, PgStore,
    RecordOutcome, SeatError, Store, StoreError, catalog,
    postgres::{MigrationReport, migrate, with_session_timeouts},
};
use contoso_testkit::TestDatabase;

/// Where the contract's clock starts: the last day of a month, so a Monthly grant meets the
/// month-end rule (Jan 31 + 1 month = Feb 28).
fn start_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 31, 10, 0, 0).unwrap()
}

/// Two handles on one store's data, plus SQL access when it is Postgres.
struct World {
    a: Box<dyn Store>,
    b: Box<dyn Store>,
    /// The time both handles grant and check entitlements by.
    clock: ManualClock,
    sql: Option<Sql>,
    // Last, so the database outlives the pools that point at it.
    _db: Option<TestDatabase>,
}

impl World {
    async fn postgres() -> Self {
        let db = TestDatabase::create().await;
        migrate(db.url()).await.expect("migrating a fresh database");
        let clock = ManualClock::new(start_of_time());
        let a = PgStore::connect(db.url(), 4)
            .await
            .expect("connecting store a")
            .with_clock(Arc::new(clock.clone()));
        let b = PgStore::connect(db.url(), 4)
            .await
            .expect("connecting store b")
            .with_clock(Arc::new(clock.clone()));
        Self {
            a: Box::new(a),
            b: Box::new(b),
            clock,
            sql: Some(Sql {
                url: db.url().to_owned(),
            }),
            _db: Some(db),
        }
    }

    fn memory() -> Self {
        let clock = ManualClock::new(start_of_time());
        let a = MemoryStore::new()
            .expect("catalog loads")
            .with_clock(Arc::new(clock.clone()));
        let b = a.clone();
        Self {
            a: Box::new(a),
            b: Box::new(b),
            clock,
            sql: None,
            _db: None,
        }
    }

    /// Asserts `query` (a `SELECT count(*) AS n ...`) returns `expected`, when this is Postgres.
    async fn assert_rows(&self, query: &str, expected: i64) {
        if let Some(sql) = &self.sql {
            assert_eq!(sql.count(query).await, expected, "{query}");
        }
    }
}

struct Sql {
    url: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Sql {
    async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connecting for raw SQL")
    }

    async fn count(&self, query: &str) -> i64 {
        let mut conn = self.conn().await;
        let row: Count = diesel::sql_query(query)
            .get_result(&mut conn)
            .await
            .expect(query);
        row.n
    }

    async fn run(&self, statement: &str) -> Result<usize, diesel::result::Error> {
        diesel::sql_query(statement)
            .execute(&mut self.conn().await)
            .await
    }
}

/// The versions of the migrations in `migrations/` (`2026-11-24-000001_x` is `20261124000001`),
/// in order: what a fresh database gets applied.
fn migration_versions() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .expect("the migrations directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.split('_').next()?.replace('-', "");
            Some(version)
        })
        .collect();
    versions.sort();
    versions
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user id")
}

fn line(product_id: &str, quantity: i32) -> OrderLine {
    let products = catalog::products().expect("catalog");
    let product = products.iter().find(|p| p.id == product_id);
    OrderLine {
        product_id: product_id.to_owned(),
        product_name: product.map_or_else(|| "Unknown".to_owned(), |p| p.name.clone()),
        quantity: Quantity::try_from(quantity).expect("a valid quantity"),
        unit_price_cents: product.map_or(999, |p| p.effective_price_cents()),
    }
}

fn new_order(id: i64, customer: &str, lines: Vec<OrderLine>) -> NewOrder {
    NewOrder {
        order_id: OrderId::new(id).expect("positive id"),
        correlation_id: CorrelationId::new(),
        customer: user(customer),
        total_cents: lines.iter().map(OrderLine::total_cents).sum(),
        lines,
        currency: "USD".to_owned(),
        accepted_at: Utc::now(),
    }
}

fn event(order: &NewOrder) -> Vec<u8> {
    format!("processed {}", order.correlation_id).into_bytes()
}

async fn record(store: &dyn Store, order: &NewOrder) -> RecordOutcome {
    store
        .record_order(order, &event(order))
        .await
        .expect("recording an order")
}

/// Leases until something is offered or `deadline` passes.
async fn lease_until_offered(
    store: &dyn Store,
    lease: Duration,
    deadline: Duration,
) -> Vec<OutboxEntry> {
    let until = Instant::now() + deadline;
    loop {
        let leased = store.lease_pending(10, lease).await.expect("leasing");
        if !leased.is_empty() || Instant::now() > until {
            return leased;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(entries: &[OutboxEntry]) -> Vec<i64> {
    entries.iter().map(|e| e.order_id.get()).collect()
}

// ---- the contract ------------------------------------------------------------------------

async fn all_products_returns_the_whole_catalog_ordered_by_id(w: World) {
    let products = w.a.all_products().await.expect("products");
    let mut expected = catalog::products().expect("catalog");
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(products, expected);
    assert_eq!(products.iter().filter(|p| !p.active).count(), 3);
}

async fn reserve_block_returns_disjoint_blocks_of_100_across_two_store_instances(w: World) {
    let mut blocks = Vec::new();
    for _ in 0..3 {
        blocks.push(w.a.reserve_block().await.expect("block from a"));
        blocks.push(w.b.reserve_block().await.expect("block from b"));
    }
    assert!(
        blocks
            .iter()
            .all(|b| b.len == ORDER_ID_BLOCK_SIZE && b.start > 0),
        "{blocks:?}"
    );
    blocks.sort_by_key(|b| b.start);
    for pair in blocks.windows(2) {
        assert!(
            pair[0].start + pair[0].len <= pair[1].start,
            "overlap in {blocks:?}"
        );
    }
}

async fn record_order_inserts_order_items_and_outbox_exactly_once(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-104", 1), line("SAA-C03", 3)]);
    assert_eq!(record(&*w.a, &order).await, RecordOutcome::Inserted);

    let stored =
        w.b.get_order(order.order_id)
            .await
            .expect("get")
            .expect("recorded");
    assert_eq!(stored.correlation_id, order.correlation_id);
    assert_eq!(stored.customer, order.customer);
    assert_eq!(stored.status, OrderStatus::Processing);
    assert_eq!(stored.lines, order.lines);
    assert_eq!(
        (stored.total_cents, stored.currency.as_str()),
        (order.total_cents, "USD")
    );
    assert!(!stored.deleted);
    let by_cid =
        w.b.get_order_by_correlation(order.correlation_id)
            .await
            .expect("get by cid");
    assert_eq!(by_cid, Some(stored));

    let leased =
        w.b.lease_pending(10, Duration::from_secs(60))
            .await
            .expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].kind, PROCESSED_EVENT_KIND);
    assert_eq!(leased[0].payload, event(&order));
    assert_eq!(
        (leased[0].order_id, leased[0].correlation_id),
        (order.order_id, order.correlation_id)
    );

    let cid = order.correlation_id;
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM orders WHERE correlation_id = '{cid}'"),
        1,
    )
    .await;
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM order_items WHERE order_id = {start}"),
        2,
    )
    .await;
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM outbox WHERE correlation_id = '{cid}'"),
        1,
    )
    .await;
    w.assert_rows(
        "SELECT count(*) AS n FROM customers WHERE external_id = 'alice'",
        1,
    )
    .await;
}

async fn recording_the_same_correlation_id_twice_returns_already_recorded_and_leaves_one_row(
    w: World,
) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-900", 2)]);
    assert_eq!(record(&*w.a, &order).await, RecordOutcome::Inserted);
    assert_eq!(
        record(&*w.b, &order).await,
        RecordOutcome::AlreadyRecorded(order.order_id)
    );

    // A redelivery racing the first delivery on another replica.
    let racing = new_order(start + 1, "alice", vec![line("AZ-900", 1)]);
    let (x, y) = tokio::join!(record(&*w.a, &racing), record(&*w.b, &racing));
    let mut outcomes = [x, y];
    outcomes.sort_by_key(|o| matches!(o, RecordOutcome::AlreadyRecorded(_)));
    assert_eq!(
        outcomes,
        [
            RecordOutcome::Inserted,
            RecordOutcome::AlreadyRecorded(racing.order_id)
        ]
    );

    let leased =
        w.a.lease_pending(10, Duration::from_secs(60))
            .await
            .expect("lease");
    assert_eq!(
        ids(&leased),
        [start, start + 1],
        "one outbox entry per order"
    );
    for o in [&order, &racing] {
        let cid = o.correlation_id;
        w.assert_rows(
            &format!("SELECT count(*) AS n FROM orders WHERE correlation_id = '{cid}'"),
            1,
        )
        .await;
        w.assert_rows(
            &format!("SELECT count(*) AS n FROM outbox WHERE correlation_id = '{cid}'"),
            1,
        )
        .await;
    }
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM order_items WHERE order_id = {start}"),
        1,
    )
    .await;
}

async fn recording_a_different_correlation_id_under_a_taken_order_id_is_order_id_taken(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let first = new_order(start, "alice", vec![line("200-301", 1)]);
    record(&*w.a, &first).await;
    let impostor = new_order(start, "bob", vec![line("N10-009", 1)]);
    let err =
        w.b.record_order(&impostor, b"x")
            .await
            .expect_err("the id is taken");
    assert!(
        matches!(err, StoreError::OrderIdTaken(id) if id == first.order_id),
        "{err:?}"
    );

    assert_eq!(
        w.a.get_order_by_correlation(impostor.correlation_id)
            .await
            .expect("get"),
        None
    );
    let kept =
        w.a.get_order(first.order_id)
            .await
            .expect("get")
            .expect("first order");
    assert_eq!(kept.correlation_id, first.correlation_id);
    w.assert_rows("SELECT count(*) AS n FROM outbox", 1).await;
    w.assert_rows(
        "SELECT count(*) AS n FROM customers WHERE external_id = 'bob'",
        0,
    )
    .await;
}

async fn an_unknown_product_rolls_back_the_whole_order(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "carol", vec![line("AZ-104", 1), line("NOPE-404", 1)]);
    let err =
        w.a.record_order(&order, &event(&order))
            .await
            .expect_err("unknown product");
    assert!(
        err.constraint() == Some("order_items_product_id_fkey"),
        "{err:?}"
    );
    assert_eq!(w.b.get_order(order.order_id).await.expect("get"), None);
    assert_eq!(
        w.b.get_order_by_correlation(order.correlation_id)
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        w.b.lease_pending(10, Duration::from_secs(60))
            .await
            .expect("lease"),
        []
    );
    w.assert_rows("SELECT count(*) AS n FROM orders", 0).await;
    w.assert_rows("SELECT count(*) AS n FROM order_items", 0)
        .await;
    w.assert_rows("SELECT count(*) AS n FROM outbox", 0).await;
    w.assert_rows("SELECT count(*) AS n FROM customers", 0)
        .await;

    // Nothing was left behind: the same id and correlation id record fine once corrected.
    let fixed = NewOrder {
        lines: vec![line("AZ-104", 1)],
        ..order
    };
    assert_eq!(record(&*w.b, &fixed).await, RecordOutcome::Inserted);
}

/// A product withdrawn from sale after the order was accepted (`AZ-220` is inactive in the data
/// file): the order is refused naming it, and nothing of it is left; once recorded, though, a
/// redelivery of the same order is still "already recorded".
async fn an_order_for_a_product_no_longer_for_sale_is_refused_naming_it(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "erin", vec![line("AZ-104", 1), line("AZ-220", 2)]);
    let err =
        w.a.record_order(&order, &event(&order))
            .await
            .expect_err("AZ-220 is not for sale");
    assert!(
        matches!(&err, StoreError::NotForSale(product) if product == "AZ-220"),
        "{err:?}"
    );
    assert_eq!(w.b.get_order(order.order_id).await.expect("get"), None);
    w.assert_rows("SELECT count(*) AS n FROM orders", 0).await;
    w.assert_rows("SELECT count(*) AS n FROM outbox", 0).await;
    w.assert_rows("SELECT count(*) AS n FROM entitlements", 0)
        .await;

    let recorded = new_order(start + 1, "erin", vec![line("AZ-104", 1)]);
    assert_eq!(record(&*w.a, &recorded).await, RecordOutcome::Inserted);
    // Withdrawing a product takes SQL (the memory store's catalog is the data file's).
    let Some(sql) = &w.sql else { return };
    sql.run("UPDATE products SET active = false WHERE id = 'AZ-104'")
        .await
        .expect("withdrawing AZ-104");
    assert_eq!(
        record(&*w.b, &recorded).await,
        RecordOutcome::AlreadyRecorded(recorded.order_id)
    );
}

/// A batch is one transaction: each order's outcome in order, an already recorded one among new
/// ones included; and when one order cannot be recorded, none of the batch is.
async fn a_batch_records_each_order_once_or_none_of_them(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let before = new_order(start, "gail", vec![line("AZ-104", 1)]);
    assert_eq!(record(&*w.a, &before).await, RecordOutcome::Inserted);
    let first = new_order(start + 1, "gail", vec![line("AZ-900", 2)]);
    let second = new_order(start + 2, "hank", vec![line("AZ-104", 1)]);
    let events = [event(&first), event(&before), event(&second)];
    let outcomes =
        w.b.record_orders(&[
            (&first, events[0].as_slice()),
            (&before, events[1].as_slice()),
            (&second, events[2].as_slice()),
        ])
        .await
        .expect("the batch records");
    assert_eq!(
        outcomes,
        [
            RecordOutcome::Inserted,
            RecordOutcome::AlreadyRecorded(before.order_id),
            RecordOutcome::Inserted
        ]
    );
    w.assert_rows("SELECT count(*) AS n FROM orders", 3).await;
    w.assert_rows("SELECT count(*) AS n FROM outbox", 3).await;
    w.assert_rows("SELECT count(*) AS n FROM entitlements", 3)
        .await;

    let fine = new_order(start + 3, "gail", vec![line("AZ-900", 1)]);
    let withdrawn = new_order(start + 4, "hank", vec![line("AZ-220", 1)]);
    let events = [event(&fine), event(&withdrawn)];
    let err =
        w.a.record_orders(&[
            (&fine, events[0].as_slice()),
            (&withdrawn, events[1].as_slice()),
        ])
        .await
        .expect_err("AZ-220 is not for sale");
    assert!(matches!(err, StoreError::NotForSale(_)), "{err:?}");
    assert_eq!(w.b.get_order(fine.order_id).await.expect("get"), None);
    w.assert_rows("SELECT count(*) AS n FROM orders", 3).await;
    w.assert_rows("SELECT count(*) AS n FROM outbox", 3).await;
    w.assert_rows("SELECT count(*) AS n FROM entitlements", 3)
        .await;
    assert_eq!(listing(&*w.a, "gail").await.len(), 2);
    assert_eq!(record(&*w.b, &fine).await, RecordOutcome::Inserted);
}

/// Quantities outside 1..=100 cannot be built (`Quantity`), and Postgres refuses them too
/// (`check_constraints_reject_quantity_0_and_101_and_discount_101`); the largest one is recorded.
async fn record_order_records_the_largest_quantity(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let max = new_order(start, "dave", vec![line("CKA", Quantity::MAX)]);
    assert_eq!(record(&*w.a, &max).await, RecordOutcome::Inserted);
}

async fn list_orders_pages_newest_first_with_total_and_excludes_deleted(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let alice = user("alice");
    let mut placed = Vec::new();
    for k in 0..5 {
        let order = new_order(
            start + k,
            "alice",
            vec![line("SY0-701", 1), line("CISSP", 2)],
        );
        record(if k % 2 == 0 { &*w.a } else { &*w.b }, &order).await;
        placed.push(order);
    }
    record(&*w.a, &new_order(start + 10, "bob", vec![line("PCA", 1)])).await;
    let page_ids = |page: &contoso_store::Page<OrderRecord>| {
        page.items
            .iter()
            .map(|o| o.order_id.get())
            .collect::<Vec<_>>()
    };

    let first = w.b.list_orders(&alice, 0, 2).await.expect("page 1");
    assert_eq!(
        (page_ids(&first), first.total),
        (vec![start + 4, start + 3], 5)
    );
    assert!(
        first
            .items
            .iter()
            .all(|o| o.lines == placed[0].lines && o.customer == alice)
    );
    let second = w.b.list_orders(&alice, 2, 2).await.expect("page 2");
    assert_eq!(
        (page_ids(&second), second.total),
        (vec![start + 2, start + 1], 5)
    );
    let last = w.b.list_orders(&alice, 4, 2).await.expect("page 3");
    assert_eq!((page_ids(&last), last.total), (vec![start], 5));
    let beyond = w.b.list_orders(&alice, 50, 2).await.expect("past the end");
    assert_eq!((beyond.items.len(), beyond.total), (0, 5));

    assert!(
        w.a.soft_delete(&alice, placed[2].order_id)
            .await
            .expect("delete")
    );
    let after = w.b.list_orders(&alice, 0, 10).await.expect("after delete");
    assert_eq!(
        (page_ids(&after), after.total),
        (vec![start + 4, start + 3, start + 1, start], 4)
    );
    let deleted =
        w.b.get_order(placed[2].order_id)
            .await
            .expect("get")
            .expect("still readable");
    assert!(deleted.deleted);

    let nobody =
        w.b.list_orders(&user("nobody"), 0, 10)
            .await
            .expect("no orders");
    assert_eq!((nobody.items.len(), nobody.total), (0, 0));
    let bob = w.b.list_orders(&user("bob"), 0, 10).await.expect("bob");
    assert_eq!((page_ids(&bob), bob.total), (vec![start + 10], 1));
}

/// Orders are listed by acceptance time, not by when they were recorded: process-svc records them
/// in any order, and accept-svc merges in-flight orders into the list by acceptance time.
async fn list_orders_orders_by_acceptance_time_then_id(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    // Postgres keeps microseconds.
    let t0 = (Utc::now() - chrono::Duration::minutes(10)).trunc_subsecs(6);
    let at = |minutes: i64, id: i64| NewOrder {
        accepted_at: t0 + chrono::Duration::minutes(minutes),
        ..new_order(start + id, "grace", vec![line("AZ-900", 1)])
    };
    // Recorded in this order: the latest accepted first, two accepted at the same instant.
    for order in [at(3, 0), at(1, 1), at(2, 2), at(2, 3), at(0, 4)] {
        record(&*w.a, &order).await;
    }
    let page = w.b.list_orders(&user("grace"), 0, 10).await.expect("list");
    let ids: Vec<i64> = page
        .items
        .iter()
        .map(|o| o.order_id.get() - start)
        .collect();
    assert_eq!(ids, [0, 3, 2, 1, 4]);
    assert_eq!(page.items[0].accepted_at, t0 + chrono::Duration::minutes(3));
    let second = w.b.list_orders(&user("grace"), 2, 2).await.expect("page 2");
    let ids: Vec<i64> = second
        .items
        .iter()
        .map(|o| o.order_id.get() - start)
        .collect();
    assert_eq!((ids, second.total), (vec![2, 1], 5));
}

async fn recorded_among_tells_which_ids_are_recorded_deleted_or_not(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let alice = new_order(start, "alice", vec![line("AZ-104", 1)]);
    let bob = new_order(start + 1, "bob", vec![line("AZ-104", 1)]);
    let deleted = new_order(start + 2, "alice", vec![line("AZ-104", 1)]);
    for order in [&alice, &bob, &deleted] {
        record(&*w.a, order).await;
    }
    assert!(
        w.a.soft_delete(&user("alice"), deleted.order_id)
            .await
            .expect("delete")
    );
    let id = |n: i64| OrderId::new(start + n).expect("id");

    let found =
        w.b.recorded_among(&[id(0), id(1), id(2), id(3), id(50)])
            .await
            .expect("recorded_among");
    assert_eq!(found, [id(0), id(1), id(2)].into_iter().collect());
    assert!(w.b.recorded_among(&[]).await.expect("no ids").is_empty());
    let many: Vec<OrderId> = (3..200).map(id).chain([id(1)]).collect();
    assert_eq!(
        w.b.recorded_among(&many).await.expect("many ids"),
        [id(1)].into_iter().collect()
    );
}

async fn soft_delete_only_for_the_owner(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-700", 1)]);
    record(&*w.a, &order).await;
    let (alice, mallory) = (user("alice"), user("mallory"));
    // mallory must exist as a customer too, so the check is ownership and not existence.
    record(
        &*w.a,
        &new_order(start + 1, "mallory", vec![line("AZ-700", 1)]),
    )
    .await;

    assert!(
        !w.b.soft_delete(&mallory, order.order_id)
            .await
            .expect("delete by another")
    );
    let untouched =
        w.a.get_order(order.order_id)
            .await
            .expect("get")
            .expect("order");
    assert!(!untouched.deleted);
    assert_eq!(w.a.list_orders(&alice, 0, 10).await.expect("list").total, 1);

    assert!(
        w.b.soft_delete(&alice, order.order_id)
            .await
            .expect("delete by owner")
    );
    assert!(
        !w.b.soft_delete(&alice, order.order_id)
            .await
            .expect("delete again")
    );
    let missing = OrderId::new(start + 99).expect("id");
    assert!(
        !w.b.soft_delete(&alice, missing)
            .await
            .expect("delete a missing order")
    );
    assert_eq!(w.a.list_orders(&alice, 0, 10).await.expect("list").total, 0);
}

async fn lease_pending_skips_entries_leased_by_another_store_instance_and_re_offers_them_after_the_lease_expires(
    w: World,
) {
    let start = w.a.reserve_block().await.expect("block").start;
    for k in 0..3 {
        record(&*w.a, &new_order(start + k, "erin", vec![line("CKAD", 1)])).await;
    }
    let long = Duration::from_secs(600);
    let by_a = w.a.lease_pending(2, long).await.expect("a leases");
    assert_eq!(
        ids(&by_a),
        [start, start + 1],
        "oldest first, up to the limit"
    );
    let by_b = w.b.lease_pending(10, long).await.expect("b leases");
    assert_eq!(ids(&by_b), [start + 2], "b skips what a holds");
    assert_eq!(w.b.lease_pending(10, long).await.expect("b again"), []);

    record(&*w.a, &new_order(start + 3, "erin", vec![line("CKAD", 1)])).await;
    let short = Duration::from_secs(2);
    assert_eq!(
        ids(&w.a.lease_pending(10, short).await.expect("a, short lease")),
        [start + 3]
    );
    assert_eq!(
        w.b.lease_pending(10, long).await.expect("b while leased"),
        []
    );
    let reoffered = lease_until_offered(&*w.b, long, Duration::from_secs(20)).await;
    assert_eq!(
        ids(&reoffered),
        [start + 3],
        "only the expired lease comes back"
    );
}

async fn complete_marks_order_completed_and_entry_published(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let done = new_order(start, "frank", vec![line("EX200", 1)]);
    let pending = new_order(start + 1, "frank", vec![line("EX294", 1)]);
    record(&*w.a, &done).await;
    record(&*w.a, &pending).await;
    let blink = Duration::from_millis(1);
    let leased = w.a.lease_pending(10, blink).await.expect("lease");
    assert_eq!(ids(&leased), [start, start + 1]);

    w.b.complete(&leased[..1]).await.expect("complete");
    w.b.complete(&leased[..1])
        .await
        .expect("completing twice is harmless");
    let completed =
        w.a.get_order(done.order_id)
            .await
            .expect("get")
            .expect("order");
    assert_eq!(completed.status, OrderStatus::Completed);
    let still =
        w.a.get_order(pending.order_id)
            .await
            .expect("get")
            .expect("order");
    assert_eq!(still.status, OrderStatus::Processing);
    w.assert_rows(
        &format!(
            "SELECT count(*) AS n FROM outbox WHERE order_id = {start} AND published_at IS NOT NULL"
        ),
        1,
    )
    .await;

    // Once the short lease lapses only the unpublished entry is offered again.
    let again = lease_until_offered(&*w.b, Duration::from_secs(60), Duration::from_secs(20)).await;
    assert_eq!(ids(&again), [start + 1]);
}

async fn prune_published_removes_published_entries_past_retention_and_never_pending_ones(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let done = new_order(start, "gina", vec![line("EX200", 1)]);
    let pending = new_order(start + 1, "gina", vec![line("EX294", 1)]);
    record(&*w.a, &done).await;
    record(&*w.a, &pending).await;
    let leased =
        w.a.lease_pending(10, Duration::from_millis(1))
            .await
            .expect("lease");
    w.a.complete(&leased[..1]).await.expect("complete");
    let published_rows = format!("SELECT count(*) AS n FROM outbox WHERE order_id = {start}");

    // Within the retention period a published entry stays (for audit).
    let kept = w.b.prune_published(Duration::from_secs(3600), 100).await;
    assert_eq!(kept.expect("prune"), 0);
    w.assert_rows(&published_rows, 1).await;

    // Past it, it goes, in batches of at most `limit`; the pending entry never does.
    let pruned =
        w.b.prune_published(Duration::ZERO, 100)
            .await
            .expect("prune");
    w.assert_rows(&published_rows, 0).await;
    if w.sql.is_some() {
        assert_eq!(pruned, 1);
    }
    let again =
        w.b.prune_published(Duration::ZERO, 100)
            .await
            .expect("prune");
    assert_eq!(again, 0);
    let offered =
        lease_until_offered(&*w.b, Duration::from_secs(60), Duration::from_secs(20)).await;
    assert_eq!(ids(&offered), [start + 1]);
}

// ---- entitlements ------------------------------------------------------------------------

fn period_of(product_id: &str) -> BillingPeriod {
    catalog::products()
        .expect("catalog")
        .into_iter()
        .find(|p| p.id == product_id)
        .map(|p| p.billing_period)
        .expect("a catalog product")
}

fn after(product_id: &str, start: DateTime<Utc>) -> DateTime<Utc> {
    period_of(product_id)
        .end_of_period_from(start)
        .expect("in range")
}

/// `user`'s listing.
async fn listing(store: &dyn Store, who: &str) -> Vec<Entitlement> {
    store
        .list_entitlements(&user(who))
        .await
        .expect("listing entitlements")
        .value
}

/// The entitlement `who` sees for `order` line `line_no`.
async fn granted(store: &dyn Store, who: &str, order: &NewOrder, line_no: i32) -> Entitlement {
    listing(store, who)
        .await
        .into_iter()
        .find(|e| e.order_id == order.order_id && e.line_no == line_no)
        .unwrap_or_else(|| {
            panic!(
                "{who} sees no entitlement of order {} line {line_no}",
                order.order_id
            )
        })
}

async fn assign(
    store: &dyn Store,
    caller: &str,
    id: EntitlementId,
    assignee: &str,
) -> Result<Entitlement, SeatError> {
    store
        .assign_seat(&user(caller), id, &user(assignee))
        .await
        .map(|s| s.value)
}

async fn revoke(
    store: &dyn Store,
    caller: &str,
    id: EntitlementId,
    assignee: &str,
) -> Result<Entitlement, SeatError> {
    store
        .revoke_seat(&user(caller), id, &user(assignee))
        .await
        .map(|s| s.value)
}

fn refusal<T: std::fmt::Debug>(result: Result<T, SeatError>) -> SeatRefusal {
    match result {
        Err(SeatError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn assignees(e: &Entitlement) -> Vec<&str> {
    e.assignments.iter().map(|a| a.assignee.as_str()).collect()
}

async fn record_order_grants_one_entitlement_per_line_with_its_seats_and_period(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    // AZ-700 is billed monthly, AZ-104 yearly; the clock stands on January 31st.
    assert_eq!(
        (period_of("AZ-700"), period_of("AZ-104")),
        (BillingPeriod::Monthly, BillingPeriod::Annual)
    );
    let order = new_order(start, "alice", vec![line("AZ-700", 3), line("AZ-104", 1)]);
    assert_eq!(record(&*w.a, &order).await, RecordOutcome::Inserted);
    let now = start_of_time();

    let listed = w.b.list_entitlements(&user("alice")).await.expect("list");
    assert_eq!(listed.as_of, now);
    let monthly = granted(&*w.b, "alice", &order, 1).await;
    assert_eq!(
        (
            monthly.product_id.as_str(),
            monthly.product_name.as_str(),
            monthly.seats.get()
        ),
        ("AZ-700", order.lines[0].product_name.as_str(), 3)
    );
    assert_eq!(monthly.buyer, user("alice"));
    assert_eq!(
        monthly.validity.from, now,
        "valid from the moment of recording"
    );
    assert_eq!(
        monthly.validity.until,
        Utc.with_ymd_and_hms(2027, 2, 28, 10, 0, 0).unwrap(),
        "Jan 31 + 1 month"
    );
    assert_eq!(monthly.validity.days_left(now), 28);
    assert_eq!((monthly.seats_used(), monthly.free_seats()), (1, 2));
    assert!(monthly.assignments.is_empty());
    let annual = granted(&*w.b, "alice", &order, 2).await;
    assert_eq!(annual.seats.get(), 1);
    assert_eq!(
        annual.validity.until,
        Utc.with_ymd_and_hms(2028, 1, 31, 10, 0, 0).unwrap()
    );
    assert_eq!(listed.value.len(), 2);
    assert!(listing(&*w.a, "bob").await.is_empty(), "bob holds nothing");
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM entitlements WHERE order_id = {start}"),
        2,
    )
    .await;
}

async fn entitlements_granted_names_what_an_orders_lines_granted_by_line(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-700", 3), line("AZ-104", 1)]);
    assert_eq!(record(&*w.a, &order).await, RecordOutcome::Inserted);
    let other = new_order(start + 1, "bob", vec![line("AZ-900", 2)]);
    assert_eq!(record(&*w.a, &other).await, RecordOutcome::Inserted);

    let unknown = OrderId::new(start + 50).expect("positive id");
    let mut granted =
        w.b.entitlements_granted(&[order.order_id, other.order_id, unknown])
            .await
            .expect("granted");
    let lines = |order_id: OrderId, granted: &[Entitlement]| -> Vec<(i32, String, i32)> {
        assert!(granted.iter().all(|e| e.order_id == order_id));
        granted
            .iter()
            .map(|e| (e.line_no, e.product_id.clone(), e.seats.get()))
            .collect()
    };
    let first = granted
        .remove(&order.order_id)
        .expect("the first order's grants");
    assert_eq!(
        lines(order.order_id, &first),
        [(1, "AZ-700".to_owned(), 3), (2, "AZ-104".to_owned(), 1)]
    );
    let second = granted
        .remove(&other.order_id)
        .expect("the second order's grants");
    assert_eq!(
        lines(other.order_id, &second),
        [(1, "AZ-900".to_owned(), 2)]
    );
    assert!(
        granted.is_empty(),
        "nothing for an unknown order: {granted:?}"
    );
}

async fn a_redelivered_order_grants_nothing_twice(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-700", 2)]);
    assert_eq!(record(&*w.a, &order).await, RecordOutcome::Inserted);
    w.clock.advance(TimeDelta::days(3));
    assert_eq!(
        record(&*w.b, &order).await,
        RecordOutcome::AlreadyRecorded(order.order_id)
    );
    // A redelivery racing the first delivery on another replica.
    let racing = new_order(start + 1, "alice", vec![line("AZ-104", 1), line("CKA", 4)]);
    let (x, y) = tokio::join!(record(&*w.a, &racing), record(&*w.b, &racing));
    assert!(
        matches!(
            (x, y),
            (RecordOutcome::Inserted, RecordOutcome::AlreadyRecorded(_))
                | (RecordOutcome::AlreadyRecorded(_), RecordOutcome::Inserted)
        ),
        "{x:?} {y:?}"
    );

    let listed = listing(&*w.a, "alice").await;
    let mut lines: Vec<(i64, i32)> = listed
        .iter()
        .map(|e| (e.order_id.get() - start, e.line_no))
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [(0, 1), (1, 1), (1, 2)], "one entitlement per line");
    let first = granted(&*w.a, "alice", &order, 1).await;
    assert_eq!(
        first.validity.from,
        start_of_time(),
        "the redelivery changed nothing"
    );
    w.assert_rows("SELECT count(*) AS n FROM entitlements", 3)
        .await;
}

async fn a_failed_order_grants_nothing(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let bad = new_order(start, "carol", vec![line("AZ-700", 1), line("NOPE-404", 1)]);
    w.a.record_order(&bad, &event(&bad))
        .await
        .expect_err("unknown product");
    let first = new_order(start + 1, "carol", vec![line("AZ-700", 1)]);
    record(&*w.a, &first).await;
    let impostor = new_order(start + 1, "carol", vec![line("AZ-104", 1)]);
    let taken = w.b.record_order(&impostor, b"x").await;
    assert!(
        matches!(taken, Err(StoreError::OrderIdTaken(_))),
        "{taken:?}"
    );

    let listed = listing(&*w.b, "carol").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].order_id, first.order_id);
    w.assert_rows("SELECT count(*) AS n FROM entitlements", 1)
        .await;
}

/// Decision 16 at the store: expired entitlements start nothing; an active one is extended from
/// its end with the new seats usable at once (its assignments carried over); each line by its
/// own product's period.
async fn buying_again_renews_as_the_renewal_rule_says(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let t0 = start_of_time();
    let first = new_order(start, "dana", vec![line("AZ-700", 2), line("AZ-104", 1)]);
    record(&*w.a, &first).await;
    let monthly = granted(&*w.a, "dana", &first, 1).await;
    let annual = granted(&*w.a, "dana", &first, 2).await;
    assign(&*w.a, "dana", monthly.id, "ann")
        .await
        .expect("a seat for ann");

    // Ten days in, while both are active: each renewal runs from now to one of its own periods
    // past the current end, and ann keeps her seat on the monthly one.
    w.clock.advance(TimeDelta::days(10));
    let t1 = t0 + TimeDelta::days(10);
    let second = new_order(
        start + 1,
        "dana",
        vec![line("AZ-104", 2), line("AZ-700", 3)],
    );
    record(&*w.b, &second).await;
    let annual_renewal = granted(&*w.a, "dana", &second, 1).await;
    assert_eq!(annual_renewal.validity.from, t1);
    assert_eq!(
        annual_renewal.validity.until,
        after("AZ-104", annual.validity.until)
    );
    let monthly_renewal = granted(&*w.a, "dana", &second, 2).await;
    assert_eq!(
        monthly_renewal.validity.from, t1,
        "the new seats are usable at once"
    );
    assert_eq!(
        monthly_renewal.validity.until,
        Utc.with_ymd_and_hms(2027, 3, 28, 10, 0, 0).unwrap(),
        "Feb 28 + 1 month"
    );
    assert_eq!(
        assignees(&monthly_renewal),
        ["ann"],
        "assignments carry over"
    );
    assert_eq!(monthly_renewal.seats.get(), 3);
    assert!(annual_renewal.assignments.is_empty());
    // During the overlap both monthly entitlements are active: 2 + 3 seats.
    let active: i32 = listing(&*w.b, "dana")
        .await
        .iter()
        .filter(|e| e.product_id == "AZ-700" && e.validity.is_active(t1))
        .map(|e| e.seats.get())
        .sum();
    assert_eq!(active, 5);
    // ann sees both monthly entitlements as hers.
    let anns = listing(&*w.b, "ann").await;
    assert_eq!(anns.len(), 2, "{anns:?}");

    // A third purchase extends the chain from its last end.
    let third = new_order(start + 2, "dana", vec![line("AZ-700", 1)]);
    record(&*w.a, &third).await;
    let chained = granted(&*w.a, "dana", &third, 1).await;
    assert_eq!(
        chained.validity.until,
        after("AZ-700", monthly_renewal.validity.until)
    );
    assert_eq!(assignees(&chained), ["ann"], "up to its own seats");

    // Once the whole monthly chain has expired, buying again starts a fresh period.
    w.clock.set(chained.validity.until);
    let t2 = chained.validity.until;
    let fourth = new_order(start + 3, "dana", vec![line("AZ-700", 2)]);
    record(&*w.b, &fourth).await;
    let fresh = granted(&*w.a, "dana", &fourth, 1).await;
    assert_eq!(fresh.validity.from, t2);
    assert_eq!(fresh.validity.until, after("AZ-700", t2));
    assert!(
        fresh.assignments.is_empty(),
        "nothing carries over from an expired one"
    );

    // Another buyer's entitlements are not theirs to renew.
    let other = new_order(start + 4, "erin", vec![line("AZ-700", 1)]);
    record(&*w.a, &other).await;
    let erins = granted(&*w.a, "erin", &other, 1).await;
    assert_eq!(erins.validity.until, after("AZ-700", t2));
}

async fn listings_show_active_entitlements_first_and_expired_ones_after(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let old = new_order(start, "fay", vec![line("AZ-700", 1)]);
    record(&*w.a, &old).await;
    w.clock.advance(TimeDelta::days(40));
    let newer = new_order(start + 1, "fay", vec![line("AZ-900", 1), line("AZ-104", 1)]);
    record(&*w.a, &newer).await;
    let listed = w.b.list_entitlements(&user("fay")).await.expect("list");
    let products: Vec<&str> = listed.value.iter().map(|e| e.product_id.as_str()).collect();
    assert_eq!(
        products,
        ["AZ-900", "AZ-104", "AZ-700"],
        "soonest end first, expired last"
    );
    assert!(listed.value[2].validity.is_expired(listed.as_of));
    assert_eq!(listed.value[2].validity.days_left(listed.as_of), 0);
}

async fn only_the_buyer_assigns_and_revokes_seats_within_the_rules(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "gus", vec![line("AZ-700", 3)]);
    record(&*w.a, &order).await;
    let other = new_order(start + 1, "hal", vec![line("AZ-700", 1)]);
    record(&*w.a, &other).await;
    let id = granted(&*w.a, "gus", &order, 1).await.id;
    let hals = granted(&*w.a, "hal", &other, 1).await.id;
    let missing = EntitlementId::new(987_654).expect("id");

    let after_ann = assign(&*w.a, "gus", id, "ann").await.expect("ann");
    assert_eq!(assignees(&after_ann), ["ann"]);
    assert_eq!((after_ann.seats_used(), after_ann.free_seats()), (2, 1));
    let shared = granted(&*w.b, "ann", &order, 1).await;
    assert_eq!(shared.id, id, "ann sees it as hers");
    assert!(shared.holds_seat(&user("ann")));

    let refused = [
        (
            refusal(assign(&*w.b, "gus", missing, "bo").await),
            SeatRefusal::NotFound,
        ),
        (
            refusal(assign(&*w.b, "gus", hals, "bo").await),
            SeatRefusal::NotFound,
        ),
        (
            refusal(assign(&*w.b, "eve", id, "bo").await),
            SeatRefusal::NotFound,
        ),
        (
            refusal(assign(&*w.b, "ann", id, "bo").await),
            SeatRefusal::NotBuyer,
        ),
        (
            refusal(assign(&*w.b, "gus", id, "gus").await),
            SeatRefusal::OwnSeat,
        ),
        (
            refusal(assign(&*w.b, "gus", id, "ann").await),
            SeatRefusal::AlreadyAssigned,
        ),
        (
            refusal(revoke(&*w.b, "ann", id, "ann").await),
            SeatRefusal::NotBuyer,
        ),
        (
            refusal(revoke(&*w.b, "gus", id, "bo").await),
            SeatRefusal::NotAssigned,
        ),
        (
            refusal(revoke(&*w.b, "gus", id, "gus").await),
            SeatRefusal::NotAssigned,
        ),
        (
            refusal(revoke(&*w.b, "eve", id, "ann").await),
            SeatRefusal::NotFound,
        ),
        (
            refusal(revoke(&*w.b, "gus", missing, "ann").await),
            SeatRefusal::NotFound,
        ),
    ];
    for (n, (got, expected)) in refused.into_iter().enumerate() {
        assert_eq!(got, expected, "case {n}");
    }
    assert!(
        listing(&*w.a, "eve").await.is_empty(),
        "eve sees nothing of gus's"
    );
    assert!(listing(&*w.a, "bo").await.is_empty());

    // The last seat goes too: the buyer then holds none, but still manages it.
    assign(&*w.a, "gus", id, "bo").await.expect("bo");
    let full = assign(&*w.b, "gus", id, "cy")
        .await
        .expect("cy, the buyer's own seat");
    assert_eq!(assignees(&full), ["ann", "bo", "cy"]);
    assert!(!full.buyer_holds_seat());
    assert_eq!(
        refusal(assign(&*w.a, "gus", id, "dee").await),
        SeatRefusal::NoSeatFree { seats: 3 }
    );
    let back = revoke(&*w.a, "gus", id, "bo").await.expect("revoke bo");
    assert_eq!(assignees(&back), ["ann", "cy"]);
    assert!(back.buyer_holds_seat());
    assert!(
        listing(&*w.b, "bo").await.is_empty(),
        "bo no longer sees it"
    );
    assert_eq!(listing(&*w.b, "gus").await.len(), 1);

    // Expired: no new assignments, but revoking still works.
    w.clock.set(back.validity.until);
    assert_eq!(
        refusal(assign(&*w.a, "gus", id, "dee").await),
        SeatRefusal::Expired
    );
    revoke(&*w.a, "gus", id, "cy")
        .await
        .expect("revoke after expiry");
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM seat_assignments WHERE entitlement_id = {id}"),
        1,
    )
    .await;
}

async fn concurrent_assignments_never_exceed_the_seats(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "ivy", vec![line("AZ-700", 3)]);
    record(&*w.a, &order).await;
    let id = granted(&*w.a, "ivy", &order, 1).await.id;

    let learners: Vec<String> = (0..24).map(|n| format!("learner-{n}")).collect();
    let attempts = learners.iter().enumerate().map(|(n, learner)| {
        let store = if n % 2 == 0 { &*w.a } else { &*w.b };
        assign(store, "ivy", id, learner)
    });
    let results = futures::future::join_all(attempts).await;
    let assigned = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(assigned, 3, "as many as the seats");
    for result in results.into_iter().filter(Result::is_err) {
        assert_eq!(refusal(result), SeatRefusal::NoSeatFree { seats: 3 });
    }
    let held = granted(&*w.b, "ivy", &order, 1).await;
    assert_eq!(held.assignments.len(), 3);
    w.assert_rows(
        &format!("SELECT count(*) AS n FROM seat_assignments WHERE entitlement_id = {id}"),
        3,
    )
    .await;

    // The same learner assigned twice at once gets one seat.
    let revoked = held.assignments[0].assignee.as_str().to_owned();
    revoke(&*w.a, "ivy", id, &revoked).await.expect("revoke");
    let (x, y) = tokio::join!(
        assign(&*w.a, "ivy", id, "twice"),
        assign(&*w.b, "ivy", id, "twice")
    );
    let mut refused: Vec<SeatRefusal> = [x, y]
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| refusal::<()>(Err(e)))
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused.pop(), Some(SeatRefusal::AlreadyAssigned));
}

async fn soft_deleting_an_order_revokes_nothing(w: World) {
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "jo", vec![line("AZ-104", 2)]);
    record(&*w.a, &order).await;
    let id = granted(&*w.a, "jo", &order, 1).await.id;
    assign(&*w.a, "jo", id, "kim").await.expect("kim");
    assert!(
        w.b.soft_delete(&user("jo"), order.order_id)
            .await
            .expect("delete")
    );
    assert_eq!(
        w.a.list_orders(&user("jo"), 0, 10)
            .await
            .expect("list")
            .total,
        0
    );
    let kept = granted(&*w.b, "jo", &order, 1).await;
    assert_eq!(kept.id, id);
    assert_eq!(assignees(&kept), ["kim"]);
    assert_eq!(granted(&*w.b, "kim", &order, 1).await.id, id);
    revoke(&*w.a, "jo", id, "kim").await.expect("still managed");
}

macro_rules! contract_tests {
    ($($name:ident),+ $(,)?) => {
        mod in_postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::World::postgres().await).await;
            })+
        }
        mod in_memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::World::memory()).await;
            })+
        }
    };
}

contract_tests!(
    all_products_returns_the_whole_catalog_ordered_by_id,
    reserve_block_returns_disjoint_blocks_of_100_across_two_store_instances,
    record_order_inserts_order_items_and_outbox_exactly_once,
    recording_the_same_correlation_id_twice_returns_already_recorded_and_leaves_one_row,
    recording_a_different_correlation_id_under_a_taken_order_id_is_order_id_taken,
    an_unknown_product_rolls_back_the_whole_order,
    an_order_for_a_product_no_longer_for_sale_is_refused_naming_it,
    a_batch_records_each_order_once_or_none_of_them,
    record_order_records_the_largest_quantity,
    list_orders_pages_newest_first_with_total_and_excludes_deleted,
    list_orders_orders_by_acceptance_time_then_id,
    recorded_among_tells_which_ids_are_recorded_deleted_or_not,
    soft_delete_only_for_the_owner,
    lease_pending_skips_entries_leased_by_another_store_instance_and_re_offers_them_after_the_lease_expires,
    complete_marks_order_completed_and_entry_published,
    prune_published_removes_published_entries_past_retention_and_never_pending_ones,
    record_order_grants_one_entitlement_per_line_with_its_seats_and_period,
    entitlements_granted_names_what_an_orders_lines_granted_by_line,
    a_redelivered_order_grants_nothing_twice,
    a_failed_order_grants_nothing,
    buying_again_renews_as_the_renewal_rule_says,
    listings_show_active_entitlements_first_and_expired_ones_after,
    only_the_buyer_assigns_and_revokes_seats_within_the_rules,
    concurrent_assignments_never_exceed_the_seats,
    soft_deleting_an_order_revokes_nothing,
);

// ---- Postgres only -----------------------------------------------------------------------

#[tokio::test]
async fn migrate_is_idempotent_and_loads_145_products() {
    let db = TestDatabase::create().await;
    let first = migrate(db.url()).await.expect("first migrate");
    assert_eq!(first.applied, migration_versions());
    assert_eq!(
        (first.products_changed, first.products_deactivated),
        (145, 0)
    );

    let second = migrate(db.url()).await.expect("second migrate");
    let nothing = MigrationReport {
        applied: vec![],
        products_changed: 0,
        products_deactivated: 0,
    };
    assert_eq!(second, nothing);

    let sql = Sql {
        url: db.url().to_owned(),
    };
    assert_eq!(sql.count("SELECT count(*) AS n FROM products").await, 145);
    assert_eq!(
        sql.count("SELECT count(*) AS n FROM products WHERE active")
            .await,
        142
    );
    assert_eq!(
        sql.count("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .await,
        migration_versions().len() as i64
    );
}

#[tokio::test]
async fn migrate_restores_edited_products_and_deactivates_ones_missing_from_the_data_file() {
    let db = TestDatabase::create().await;
    migrate(db.url()).await.expect("migrate");
    let sql = Sql {
        url: db.url().to_owned(),
    };
    sql.run("UPDATE products SET price_cents = 1, name = 'edited' WHERE id = 'AZ-900'")
        .await
        .expect("edit a product");
    sql.run(
        "INSERT INTO products (id, name, category, vendor, image_url, discount_percent, \
         billing_period, subscription, price_cents, currency) \
         VALUES ('OLD-001', 'Gone', 'Lab', 'Nobody', '/x.svg', 0, 'Monthly', true, 100, 'USD')",
    )
    .await
    .expect("insert a product the file does not list");

    let report = migrate(db.url()).await.expect("migrate again");
    assert_eq!(
        (report.products_changed, report.products_deactivated),
        (1, 1)
    );
    assert_eq!(
        sql.count("SELECT count(*) AS n FROM products WHERE id = 'AZ-900' AND price_cents <> 1")
            .await,
        1
    );
    assert_eq!(
        sql.count("SELECT count(*) AS n FROM products WHERE id = 'OLD-001' AND NOT active")
            .await,
        1
    );
    assert_eq!(
        migrate(db.url())
            .await
            .expect("third migrate")
            .products_deactivated,
        0
    );
}

#[tokio::test]
async fn migrating_twice_concurrently_succeeds() {
    let db = TestDatabase::create().await;
    let (x, y) = tokio::join!(migrate(db.url()), migrate(db.url()));
    let (x, y) = (x.expect("first replica"), y.expect("second replica"));
    let mut applied = [x.applied.len(), y.applied.len()];
    applied.sort_unstable();
    assert_eq!(
        applied,
        [0, migration_versions().len()],
        "exactly one replica applied the migrations"
    );
    assert_eq!(x.products_changed + y.products_changed, 145);

    let sql = Sql {
        url: db.url().to_owned(),
    };
    assert_eq!(sql.count("SELECT count(*) AS n FROM products").await, 145);
    assert_eq!(
        sql.count("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .await,
        migration_versions().len() as i64
    );
}

#[tokio::test]
async fn check_constraints_reject_quantity_0_and_101_and_discount_101() {
    let db = TestDatabase::create().await;
    migrate(db.url()).await.expect("migrate");
    let sql = Sql {
        url: db.url().to_owned(),
    };
    sql.run("INSERT INTO customers (id, external_id) VALUES (1, 'alice')")
        .await
        .expect("customer");
    sql.run(
        "INSERT INTO orders (id, correlation_id, customer_id, status, total_cents, currency, accepted_at) \
         VALUES (1, gen_random_uuid(), 1, 'PROCESSING', 0, 'USD', now())",
    )
    .await
    .expect("order");
    let item = |line_no: i32, quantity: i32| {
        format!(
            "INSERT INTO order_items (order_id, line_no, product_id, product_name, quantity, unit_price_cents) \
             VALUES (1, {line_no}, 'AZ-900', 'x', {quantity}, 100)"
        )
    };
    let violated = |result: Result<usize, diesel::result::Error>| match result {
        Err(diesel::result::Error::DatabaseError(_, info)) => {
            info.constraint_name().map(str::to_owned)
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    };

    assert_eq!(
        violated(sql.run(&item(1, 0)).await).as_deref(),
        Some("order_items_quantity_check")
    );
    assert_eq!(
        violated(sql.run(&item(1, 101)).await).as_deref(),
        Some("order_items_quantity_check")
    );
    assert_eq!(
        sql.run(&item(1, 100))
            .await
            .expect("quantity 100 is allowed"),
        1
    );
    assert_eq!(
        violated(
            sql.run("UPDATE products SET discount_percent = 101 WHERE id = 'AZ-900'")
                .await
        )
        .as_deref(),
        Some("products_discount_percent_check")
    );
    assert_eq!(
        violated(
            sql.run("UPDATE orders SET status = 'SHIPPED' WHERE id = 1")
                .await
        )
        .as_deref(),
        Some("orders_status_check")
    );
}

#[tokio::test]
async fn both_stores_serve_the_same_catalog() {
    let pg = World::postgres().await;
    let memory = World::memory();
    assert_eq!(
        pg.a.all_products().await.expect("postgres catalog"),
        memory.a.all_products().await.expect("memory catalog")
    );
}

#[tokio::test]
async fn connecting_to_an_unreachable_database_is_unavailable() {
    let free = contoso_testkit::free_port();
    let down = PgStore::connect(&format!("postgres://postgres@127.0.0.1:{free}/postgres"), 2).await;
    let down = down.expect_err("nothing listens there");
    assert!(matches!(down, StoreError::Unavailable { .. }), "{down:?}");
    // What an operator's log shows: the store's context, then the driver's own reason.
    let report = contoso_domain::Report(&down).to_string();
    assert!(
        report.starts_with("database unavailable while ") && report.contains(": "),
        "{report}"
    );
    assert!(std::error::Error::source(&down).is_some(), "{report}");
    let garbage = PgStore::connect("definitely not a url", 2).await;
    assert!(
        matches!(garbage, Err(StoreError::Unavailable { .. })),
        "{garbage:?}"
    );
    let migrate_down = migrate(&format!("postgres://postgres@127.0.0.1:{free}/postgres")).await;
    assert!(
        matches!(migrate_down, Err(StoreError::Unavailable { .. })),
        "{migrate_down:?}"
    );
}

#[tokio::test]
async fn is_ready_answers_for_a_live_database() {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(db.url(), 1).await.expect("connect");
    assert!(store.is_ready().await);
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    setting: String,
}

#[tokio::test]
async fn session_timeouts_reach_the_server_and_cancel_a_slow_statement() {
    let db = TestDatabase::create().await;
    let url = with_session_timeouts(db.url(), Duration::from_millis(300));
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .expect("connecting with session options");
    for name in ["statement_timeout", "idle_in_transaction_session_timeout"] {
        let shown: Setting =
            diesel::sql_query(format!("SELECT current_setting('{name}') AS setting"))
                .get_result(&mut conn)
                .await
                .expect(name);
        assert_eq!(shown.setting, "300ms", "{name}");
    }
    let slow = diesel::sql_query("SELECT pg_sleep(2)")
        .execute(&mut conn)
        .await;
    assert!(slow.is_err(), "a statement past the timeout is cancelled");
}

#[test]
fn session_timeouts_fit_urls_with_and_without_a_query_and_key_value_strings() {
    let second = Duration::from_secs(1);
    assert_eq!(
        with_session_timeouts("postgres://u@h/db", second),
        "postgres://u@h/db?options=-c%20statement_timeout%3D1000%20-c%20idle_in_transaction_session_timeout%3D1000"
    );
    assert!(
        with_session_timeouts("postgres://u@h/db?sslmode=require", second)
            .contains("?sslmode=require&options=")
    );
    assert_eq!(
        with_session_timeouts("host=h user=u", second),
        "host=h user=u options='-c statement_timeout=1000 -c idle_in_transaction_session_timeout=1000'"
    );
}

/// The grant is part of recording: when it fails, nothing of the order is left.
#[tokio::test]
async fn a_grant_that_fails_rolls_back_the_whole_order() {
    let w = World::postgres().await;
    let sql = w.sql.as_ref().expect("postgres");
    sql.run(
        "CREATE FUNCTION refuse_grant() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'grants are refused'; END $$",
    )
    .await
    .expect("trigger function");
    sql.run(
        "CREATE TRIGGER refuse_grant BEFORE INSERT ON entitlements \
         FOR EACH ROW EXECUTE FUNCTION refuse_grant()",
    )
    .await
    .expect("trigger");
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-700", 3)]);
    let err =
        w.a.record_order(&order, &event(&order))
            .await
            .expect_err("the grant fails");
    assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
    for table in [
        "orders",
        "order_items",
        "outbox",
        "customers",
        "entitlements",
    ] {
        w.assert_rows(&format!("SELECT count(*) AS n FROM {table}"), 0)
            .await;
    }

    sql.run("DROP TRIGGER refuse_grant ON entitlements")
        .await
        .expect("drop trigger");
    assert_eq!(record(&*w.b, &order).await, RecordOutcome::Inserted);
    assert_eq!(granted(&*w.a, "alice", &order, 1).await.seats.get(), 3);
}

#[tokio::test]
async fn entitlement_constraints_hold_in_the_database() {
    let w = World::postgres().await;
    let sql = w.sql.as_ref().expect("postgres");
    let start = w.a.reserve_block().await.expect("block").start;
    let order = new_order(start, "alice", vec![line("AZ-700", 2)]);
    record(&*w.a, &order).await;
    let id = granted(&*w.a, "alice", &order, 1).await.id;
    let violated = |result: Result<usize, diesel::result::Error>| match result {
        Err(diesel::result::Error::DatabaseError(_, info)) => {
            info.constraint_name().map(str::to_owned)
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    };
    let insert = |seats: i32, from: &str, until: &str, line_no: i32| {
        format!(
            "INSERT INTO entitlements (customer_id, product_id, seats, valid_from, valid_until, \
             order_id, line_no) SELECT id, 'AZ-700', {seats}, {from}, {until}, {start}, {line_no} \
             FROM customers WHERE external_id = 'alice'"
        )
    };
    let cases = [
        (
            insert(0, "now()", "now() + interval '1 day'", 1),
            "entitlements_seats_check",
        ),
        (
            insert(1, "now()", "now()", 1),
            "entitlements_validity_check",
        ),
        (
            insert(1, "now()", "now() + interval '1 day'", 1),
            "entitlements_order_line_key",
        ),
        (
            insert(1, "now()", "now() + interval '1 day'", 2),
            "entitlements_order_line_fkey",
        ),
        (
            format!(
                "INSERT INTO seat_assignments (entitlement_id, assignee, assigned_at) \
                 VALUES ({id}, 'ann', now()), ({id}, 'ann', now())"
            ),
            "seat_assignments_pkey",
        ),
        (
            format!(
                "INSERT INTO seat_assignments (entitlement_id, assignee, assigned_at) \
                 VALUES ({id}, '', now())"
            ),
            "seat_assignments_assignee_check",
        ),
    ];
    for (statement, constraint) in cases {
        assert_eq!(
            violated(sql.run(&statement).await).as_deref(),
            Some(constraint),
            "{statement}"
        );
    }
}
