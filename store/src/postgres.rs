//! The Postgres store: the system of record in production. One deadpool of diesel-async
//! connections per process; every call borrows a connection for its statements (one
//! transaction where it writes more than one row) and gives it back.
//!
//! Database errors become [`StoreError`]s by constraint name, never by message text: the
//! `orders` primary key becomes [`StoreError::OrderIdTaken`], other violations are
//! [`StoreError::Query`] with the constraint named, and lost connections or pool timeouts are
//! [`StoreError::Unavailable`].

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{BigInt, Double},
    upsert::excluded,
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Object, Pool},
    },
};
use uuid::Uuid;

use contoso_domain::{
    BillingPeriod, CorrelationId, NewOrder, OrderId, OrderLine, OrderRecord, OrderStatus, Product,
    Quantity, SeatRefusal, UserId,
};

use crate::{
    Backlog, CatalogSource, Clock, IdBlock, MAX_BATCH, ORDER_ID_BLOCK_SIZE, OrderIdSource,
    OrderReader, OrderWriter, Outbox, OutboxEntry, PROCESSED_EVENT_KIND, Page, RecordOutcome,
    SeatError, StoreError, SystemClock, clock,
    schema::{customers, order_items, orders, outbox, products},
};

mod entitlements;
mod migrate;
mod pool_metrics;

pub use migrate::{MigrationReport, migrate};

/// How long a caller waits for a free pooled connection before getting
/// [`StoreError::Unavailable`].
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening one new connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`PgStore::is_ready`] waits for an answer; a probe must not hang on a stuck database.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long checking a returned connection (a ping) may take before it is discarded.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);

/// `database_url` with session settings that bound every statement by `timeout` and end a
/// session that sits idle inside an open transaction for as long, so a hung query or a stuck
/// transaction gives its connection back instead of holding it (and its locks) forever. Works for
/// URLs (`postgres://…`, an `options` query parameter) and key-value strings.
pub fn with_session_timeouts(database_url: &str, timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    let options = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let encoded = options.replace(' ', "%20").replace('=', "%3D");
        let separator = if database_url.contains('?') { '&' } else { '?' };
        format!("{database_url}{separator}options={encoded}")
    } else {
        format!("{database_url} options='{options}'")
    }
}

const ORDERS_PKEY: &str = "orders_pkey";

diesel::define_sql_function! {
    /// Postgres' `nextval(regclass)`, called with the sequence name as text.
    fn nextval(sequence: diesel::sql_types::Text) -> BigInt;
}

/// The Postgres [`Store`](crate::Store). Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<AsyncPgConnection>,
    /// The time entitlements are granted and checked by.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("max_size", &status.max_size)
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl PgStore {
    /// Builds a pool of up to `max_connections` (at least 1) connections to `database_url` and
    /// checks that one connection can be opened, so a wrong URL or a database that is down fails
    /// here, with [`StoreError::Unavailable`], rather than on the first order.
    pub async fn connect(database_url: &str, max_connections: usize) -> Result<Self, StoreError> {
        // Fast: a pooled connection is not probed with a query each time it is handed out (one
        // round trip per checkout); one that died fails its first statement as Unavailable, which
        // every caller already retries, and the pool drops it.
        let mut config = ManagerConfig::default();
        config.recycling_method = RecyclingMethod::Fast;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            database_url,
            config,
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| StoreError::unavailable("building the Postgres connection pool", e))?;
        let store = Self {
            pool,
            clock: Arc::new(SystemClock),
        };
        drop(store.conn().await?);
        Ok(store)
    }

    /// The same store granting and checking entitlements by `clock` (tests move it to reach
    /// expiry and renewal edges).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// True when a pooled connection answers `SELECT 1` within [`READY_TIMEOUT`]: the
    /// readiness probe.
    pub async fn is_ready(&self) -> bool {
        let probe = async {
            let mut conn = self.conn().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        };
        matches!(
            tokio::time::timeout(READY_TIMEOUT, probe).await,
            Ok(Some(_))
        )
    }

    async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        let started = std::time::Instant::now();
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::unavailable("getting a Postgres connection", e));
        pool_metrics::observe(&self.pool, started.elapsed());
        conn
    }
}

fn constraint_name(e: &DieselError) -> Option<&str> {
    match e {
        DieselError::DatabaseError(_, info) => info.constraint_name(),
        _ => None,
    }
}

/// Maps a diesel error to a [`StoreError`], naming the violated constraint if there is one.
pub(crate) fn query_error(context: &str, e: DieselError) -> StoreError {
    match &e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => StoreError::unavailable(context, e),
        _ => StoreError::Query {
            context: context.to_owned(),
            constraint: constraint_name(&e).map(str::to_owned),
            source: e.into(),
        },
    }
}

fn on_query(context: &'static str) -> impl FnOnce(DieselError) -> StoreError {
    move |e| query_error(context, e)
}

/// Why a transaction closure stopped; anything but `Ok` rolls the transaction back.
#[derive(Debug)]
enum TxError {
    Db(&'static str, DieselError),
    Store(StoreError),
    /// A seat change the rules refused.
    Refused(SeatRefusal),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        Self::Db("running a transaction", e)
    }
}

fn in_tx(context: &'static str) -> impl FnOnce(DieselError) -> TxError {
    move |e| TxError::Db(context, e)
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Db(context, e) => query_error(context, e),
            TxError::Store(e) => e,
            TxError::Refused(refusal) => StoreError::Query {
                context: "changing a seat".into(),
                constraint: None,
                source: refusal.into(),
            },
        }
    }
}

impl From<TxError> for SeatError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Refused(refusal) => Self::Refused(refusal),
            other => Self::Store(other.into()),
        }
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
struct ProductRow {
    id: String,
    name: String,
    category: String,
    vendor: String,
    image_url: String,
    discount_percent: i32,
    billing_period: String,
    subscription: bool,
    price_cents: i64,
    currency: String,
    active: bool,
}

fn billing_period_str(period: BillingPeriod) -> &'static str {
    match period {
        BillingPeriod::Monthly => "Monthly",
        BillingPeriod::Annual => "Annual",
    }
}

impl From<&Product> for ProductRow {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            category: p.category.clone(),
            vendor: p.vendor.clone(),
            image_url: p.image_url.clone(),
            discount_percent: p.discount_percent,
            billing_period: billing_period_str(p.billing_period).to_owned(),
            subscription: p.subscription,
            price_cents: p.price_cents,
            currency: p.currency.clone(),
            active: p.active,
        }
    }
}

/// A stored billing period (`products_billing_period_check` allows these two).
fn billing_period(raw: &str, product_id: &str) -> Result<BillingPeriod, StoreError> {
    match raw {
        "Monthly" => Ok(BillingPeriod::Monthly),
        "Annual" => Ok(BillingPeriod::Annual),
        other => Err(StoreError::corrupt(
            format!("product {product_id}"),
            format!("billing period {other:?}"),
        )),
    }
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;
    fn try_from(row: ProductRow) -> Result<Self, StoreError> {
        let billing_period = billing_period(&row.billing_period, &row.id)?;
        Ok(Self {
            id: row.id,
            name: row.name,
            category: row.category,
            vendor: row.vendor,
            image_url: row.image_url,
            discount_percent: row.discount_percent,
            billing_period,
            subscription: row.subscription,
            price_cents: row.price_cents,
            currency: row.currency,
            active: row.active,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
struct OrderRow {
    id: i64,
    correlation_id: Uuid,
    status: String,
    total_cents: i64,
    currency: String,
    deleted: bool,
    accepted_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = orders)]
struct NewOrderRow<'a> {
    id: i64,
    correlation_id: Uuid,
    customer_id: i64,
    status: &'a str,
    total_cents: i64,
    currency: &'a str,
    accepted_at: DateTime<Utc>,
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items, check_for_backend(diesel::pg::Pg))]
struct ItemRow {
    order_id: i64,
    line_no: i32,
    product_id: String,
    product_name: String,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    correlation_id: Uuid,
    order_id: i64,
    kind: &'a str,
    payload: &'a [u8],
    traceparent: Option<&'a str>,
}

#[derive(Debug, QueryableByName)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
struct OutboxRow {
    id: i64,
    correlation_id: Uuid,
    order_id: i64,
    kind: String,
    payload: Vec<u8>,
    created_at: DateTime<Utc>,
    traceparent: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    accepted_at: Option<DateTime<Utc>>,
}

fn order_id(raw: i64) -> Result<OrderId, StoreError> {
    OrderId::new(raw)
        .ok_or_else(|| StoreError::corrupt("an order id", format!("{raw} is not positive")))
}

impl TryFrom<OutboxRow> for OutboxEntry {
    type Error = StoreError;
    fn try_from(row: OutboxRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id,
            correlation_id: CorrelationId::from(row.correlation_id),
            order_id: order_id(row.order_id)?,
            kind: row.kind,
            payload: row.payload,
            created_at: row.created_at,
            traceparent: row.traceparent,
            accepted_at: row.accepted_at,
        })
    }
}

fn to_record(
    row: OrderRow,
    external_id: String,
    lines: Vec<OrderLine>,
) -> Result<OrderRecord, StoreError> {
    let status: OrderStatus = row
        .status
        .parse()
        .map_err(|e| StoreError::corrupt(format!("order {}", row.id), e))?;
    let customer = UserId::parse(external_id)
        .map_err(|e| StoreError::corrupt(format!("order {} customer", row.id), e))?;
    Ok(OrderRecord {
        order_id: order_id(row.id)?,
        correlation_id: CorrelationId::from(row.correlation_id),
        customer,
        status,
        lines,
        total_cents: row.total_cents,
        currency: row.currency,
        accepted_at: row.accepted_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        deleted: row.deleted,
    })
}

/// Loads the lines of all `rows` with one `order_id = ANY(...)` query and builds the records.
async fn with_lines(
    conn: &mut AsyncPgConnection,
    rows: Vec<(OrderRow, String)>,
) -> Result<Vec<OrderRecord>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|(o, _)| o.id).collect();
    let items: Vec<ItemRow> = order_items::table
        .filter(order_items::order_id.eq_any(&ids))
        .order((order_items::order_id, order_items::line_no))
        .select(ItemRow::as_select())
        .load(conn)
        .await
        .map_err(on_query("loading order items"))?;
    let mut lines: HashMap<i64, Vec<OrderLine>> = HashMap::with_capacity(rows.len());
    for item in items {
        let quantity = Quantity::try_from(item.quantity).map_err(|e| {
            StoreError::corrupt(
                format!("order {} line {} quantity", item.order_id, item.line_no),
                e,
            )
        })?;
        lines.entry(item.order_id).or_default().push(OrderLine {
            product_id: item.product_id,
            product_name: item.product_name,
            quantity,
            unit_price_cents: item.unit_price_cents,
        });
    }
    rows.into_iter()
        .map(|(row, external_id)| {
            let order_lines = lines.remove(&row.id).unwrap_or_default();
            to_record(row, external_id, order_lines)
        })
        .collect()
}

#[async_trait]
impl CatalogSource for PgStore {
    async fn all_products(&self) -> Result<Vec<Product>, StoreError> {
        let mut conn = self.conn().await?;
        // Byte order, like the in-memory store's BTreeMap, whatever the database's collation.
        let rows: Vec<ProductRow> = products::table
            .order(diesel::dsl::sql::<diesel::sql_types::Text>(
                "id COLLATE \"C\"",
            ))
            .select(ProductRow::as_select())
            .load(&mut conn)
            .await
            .map_err(on_query("loading the catalog"))?;
        rows.into_iter().map(Product::try_from).collect()
    }
}

#[async_trait]
impl OrderIdSource for PgStore {
    #[tracing::instrument(skip(self), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn reserve_block(&self) -> Result<IdBlock, StoreError> {
        let mut conn = self.conn().await?;
        let start: i64 = diesel::select(nextval("order_id_blocks"))
            .get_result(&mut conn)
            .await
            .map_err(on_query("reserving an order id block"))?;
        if start <= 0 {
            return Err(StoreError::corrupt(
                "the order_id_blocks sequence",
                format!("returned {start}"),
            ));
        }
        Ok(IdBlock {
            start,
            len: ORDER_ID_BLOCK_SIZE,
        })
    }
}

#[async_trait]
impl OrderWriter for PgStore {
    #[tracing::instrument(
        name = "record_orders",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "record_orders", orders = batch.len())
    )]
    async fn record_orders_traced(
        &self,
        batch: &[(&NewOrder, &[u8], Option<&str>)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = clock::now(&*self.clock);
        let mut conn = self.conn().await?;
        conn.transaction::<_, TxError, _>(async |conn| {
            let customers = upsert_customers(conn, batch.iter().map(|(o, ..)| &o.customer)).await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for (order, processed_event, traceparent) in batch {
                let customer_id =
                    customers
                        .get(order.customer.as_str())
                        .copied()
                        .ok_or_else(|| {
                            TxError::Store(StoreError::corrupt(
                                format!("customer {}", order.customer),
                                "the upsert returned no id for it",
                            ))
                        })?;
                outcomes.push(
                    record_in(conn, order, processed_event, *traceparent, customer_id, now).await?,
                );
            }
            Ok(outcomes)
        })
        .await
        .map_err(Into::into)
    }
}

/// Upserts the buyers of a batch in one statement and returns their ids by external id. Sorted,
/// so two batches lock the customers they share in the same order and never deadlock.
async fn upsert_customers(
    conn: &mut AsyncPgConnection,
    buyers: impl Iterator<Item = &UserId>,
) -> Result<HashMap<String, i64>, TxError> {
    let mut external: Vec<&str> = buyers.map(UserId::as_str).collect();
    external.sort_unstable();
    external.dedup();
    let rows: Vec<_> = external
        .iter()
        .map(|id| customers::external_id.eq(*id))
        .collect();
    let ids: Vec<(i64, String)> = diesel::insert_into(customers::table)
        .values(rows)
        .on_conflict(customers::external_id)
        .do_update()
        .set(customers::external_id.eq(excluded(customers::external_id)))
        .returning((customers::id, customers::external_id))
        .get_results(conn)
        .await
        .map_err(in_tx("upserting the customers"))?;
    Ok(ids
        .into_iter()
        .map(|(id, external)| (external, id))
        .collect())
}

/// Records one order of a batch inside its transaction: the order under its reserved id, its
/// items, its entitlements and its outbox row; or nothing, when its correlation id is recorded
/// already.
async fn record_in(
    conn: &mut AsyncPgConnection,
    order: &NewOrder,
    processed_event: &[u8],
    traceparent: Option<&str>,
    customer_id: i64,
    now: DateTime<Utc>,
) -> Result<RecordOutcome, TxError> {
    let cid = order.correlation_id.as_uuid();
    let inserted: Option<i64> = diesel::insert_into(orders::table)
        .values(NewOrderRow {
            id: order.order_id.get(),
            correlation_id: cid,
            customer_id,
            status: OrderStatus::Processing.as_str(),
            total_cents: order.total_cents,
            currency: &order.currency,
            accepted_at: order.accepted_at,
        })
        .on_conflict(orders::correlation_id)
        .do_nothing()
        .returning(orders::id)
        .get_result(conn)
        .await
        .optional()
        .map_err(|e| match constraint_name(&e) {
            Some(ORDERS_PKEY) => TxError::Store(StoreError::OrderIdTaken(order.order_id)),
            _ => TxError::Db("inserting the order", e),
        })?;
    if inserted.is_none() {
        let existing: i64 = orders::table
            .filter(orders::correlation_id.eq(cid))
            .select(orders::id)
            .first(conn)
            .await
            .map_err(in_tx("reading the already recorded order"))?;
        return Ok(RecordOutcome::AlreadyRecorded(
            order_id(existing).map_err(TxError::Store)?,
        ));
    }

    // Accepted while for sale, withdrawn since: refused (the transaction rolls back).
    let withdrawn: Option<String> = products::table
        .filter(products::id.eq_any(order.lines.iter().map(|l| &l.product_id)))
        .filter(products::active.eq(false))
        .select(products::id)
        .order(products::id)
        .first(conn)
        .await
        .optional()
        .map_err(in_tx("checking the products are for sale"))?;
    if let Some(product) = withdrawn {
        return Err(TxError::Store(StoreError::NotForSale(product)));
    }

    let items = order
        .lines
        .iter()
        .zip(1..)
        .map(|(line, line_no)| ItemRow {
            order_id: order.order_id.get(),
            line_no,
            product_id: line.product_id.clone(),
            product_name: line.product_name.clone(),
            quantity: line.quantity.get(),
            unit_price_cents: line.unit_price_cents,
        })
        .collect::<Vec<_>>();
    if !items.is_empty() {
        diesel::insert_into(order_items::table)
            .values(&items)
            .execute(conn)
            .await
            .map_err(in_tx("inserting the order items"))?;
    }
    entitlements::grant_lines(conn, order, customer_id, now).await?;

    diesel::insert_into(outbox::table)
        .values(NewOutboxRow {
            correlation_id: cid,
            order_id: order.order_id.get(),
            kind: PROCESSED_EVENT_KIND,
            payload: processed_event,
            traceparent,
        })
        .execute(conn)
        .await
        .map_err(in_tx("inserting the outbox entry"))?;
    Ok(RecordOutcome::Inserted)
}

#[async_trait]
impl OrderReader for PgStore {
    #[tracing::instrument(skip(self, customer), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn list_orders(
        &self,
        customer: &UserId,
        offset: i64,
        limit: i64,
    ) -> Result<Page<OrderRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mine = orders::table
            .inner_join(customers::table)
            .filter(customers::external_id.eq(customer.as_str()))
            .filter(orders::deleted.eq(false));
        let total: i64 = mine
            .count()
            .get_result(&mut conn)
            .await
            .map_err(on_query("counting orders"))?;
        let rows: Vec<(OrderRow, String)> = mine
            .order((orders::accepted_at.desc(), orders::id.desc()))
            .offset(offset.max(0))
            .limit(limit.clamp(0, MAX_BATCH))
            .select((OrderRow::as_select(), customers::external_id))
            .load(&mut conn)
            .await
            .map_err(on_query("listing orders"))?;
        let items = with_lines(&mut conn, rows).await?;
        Ok(Page { items, total })
    }

    #[tracing::instrument(skip(self), fields(otel.kind = "client", db.system.name = "postgresql", order_id = %order_id))]
    async fn get_order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(OrderRow, String)> = orders::table
            .inner_join(customers::table)
            .filter(orders::id.eq(order_id.get()))
            .select((OrderRow::as_select(), customers::external_id))
            .load(&mut conn)
            .await
            .map_err(on_query("reading an order"))?;
        Ok(with_lines(&mut conn, rows).await?.pop())
    }

    #[tracing::instrument(skip(self), fields(otel.kind = "client", db.system.name = "postgresql", correlation_id = %cid))]
    async fn get_order_by_correlation(
        &self,
        cid: CorrelationId,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(OrderRow, String)> = orders::table
            .inner_join(customers::table)
            .filter(orders::correlation_id.eq(cid.as_uuid()))
            .select((OrderRow::as_select(), customers::external_id))
            .load(&mut conn)
            .await
            .map_err(on_query("reading an order by correlation id"))?;
        Ok(with_lines(&mut conn, rows).await?.pop())
    }

    #[tracing::instrument(skip(self, order_ids), fields(otel.kind = "client", db.system.name = "postgresql", count = order_ids.len()))]
    async fn recorded_among(&self, order_ids: &[OrderId]) -> Result<HashSet<OrderId>, StoreError> {
        if order_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<i64> = order_ids.iter().map(|id| id.get()).collect();
        let mut conn = self.conn().await?;
        // `eq_any` binds the ids as one array: `WHERE id = ANY($1)`, whatever their number.
        let found: Vec<i64> = orders::table
            .filter(orders::id.eq_any(ids))
            .select(orders::id)
            .load(&mut conn)
            .await
            .map_err(on_query("checking which orders are recorded"))?;
        found.into_iter().map(order_id).collect()
    }

    #[tracing::instrument(skip(self, customer), fields(otel.kind = "client", db.system.name = "postgresql", order_id = %order_id))]
    async fn soft_delete(&self, customer: &UserId, order_id: OrderId) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let owner = customers::table
            .filter(customers::external_id.eq(customer.as_str()))
            .select(customers::id);
        let changed = diesel::update(
            orders::table
                .filter(orders::id.eq(order_id.get()))
                .filter(orders::customer_id.eq_any(owner))
                .filter(orders::deleted.eq(false)),
        )
        .set((
            orders::deleted.eq(true),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(&mut conn)
        .await
        .map_err(on_query("soft-deleting an order"))?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl Outbox for PgStore {
    #[tracing::instrument(level = "debug", skip(self), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn lease_pending(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = limit.clamp(0, MAX_BATCH);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        // SKIP LOCKED lets relays lease concurrently without waiting on each other's rows; the
        // lease itself (not the row lock, which ends with this statement) keeps others off them.
        let mut rows: Vec<OutboxRow> = diesel::sql_query(
            "UPDATE outbox SET leased_until = now() + make_interval(secs => $2) \
             WHERE id IN ( \
                 SELECT id FROM outbox \
                 WHERE published_at IS NULL AND (leased_until IS NULL OR leased_until < now()) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, correlation_id, order_id, kind, payload, created_at, traceparent, \
                 (SELECT accepted_at FROM orders WHERE orders.id = outbox.order_id) AS accepted_at",
        )
        .bind::<BigInt, _>(limit)
        .bind::<Double, _>(lease.as_secs_f64())
        .load(&mut conn)
        .await
        .map_err(on_query("leasing outbox entries"))?;
        rows.sort_by_key(|r| r.id);
        rows.into_iter().map(OutboxEntry::try_from).collect()
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = "postgresql", orders = order_ids.len()))]
    async fn entitlements_granted(
        &self,
        order_ids: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<contoso_domain::Entitlement>>, StoreError> {
        if order_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<i64> = order_ids.iter().map(|id| id.get()).collect();
        let mut conn = self.conn().await?;
        entitlements::granted_by(&mut conn, &ids).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn backlog(&self) -> Result<Backlog, StoreError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            pending: i64,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
            oldest: Option<DateTime<Utc>>,
        }
        let mut conn = self.conn().await?;
        let row: Row = diesel::sql_query(
            "SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox \
             WHERE published_at IS NULL",
        )
        .get_result(&mut conn)
        .await
        .map_err(on_query("measuring the outbox backlog"))?;
        Ok(Backlog {
            pending: u64::try_from(row.pending).unwrap_or(0),
            oldest: row.oldest,
        })
    }

    #[tracing::instrument(level = "debug", skip(self), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn prune_published(&self, older_than: Duration, limit: i64) -> Result<u64, StoreError> {
        let limit = limit.clamp(0, MAX_BATCH);
        if limit == 0 {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        let deleted = diesel::sql_query(
            "DELETE FROM outbox WHERE id IN ( \
                 SELECT id FROM outbox \
                 WHERE published_at IS NOT NULL \
                   AND published_at < now() - make_interval(secs => $1) \
                 ORDER BY published_at LIMIT $2)",
        )
        .bind::<Double, _>(older_than.as_secs_f64())
        .bind::<BigInt, _>(limit)
        .execute(&mut conn)
        .await
        .map_err(on_query("pruning published outbox entries"))?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = "postgresql", entries = entries.len()))]
    async fn complete(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let outbox_ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let order_ids: Vec<i64> = entries.iter().map(|e| e.order_id.get()).collect();
        let mut conn = self.conn().await?;
        conn.transaction::<_, TxError, _>(async |conn| {
            diesel::update(
                outbox::table
                    .filter(outbox::id.eq_any(&outbox_ids))
                    .filter(outbox::published_at.is_null()),
            )
            .set(outbox::published_at.eq(diesel::dsl::now))
            .execute(conn)
            .await
            .map_err(in_tx("marking outbox entries published"))?;
            let not_final = [
                OrderStatus::Accepted.as_str(),
                OrderStatus::Processing.as_str(),
            ];
            diesel::update(
                orders::table
                    .filter(orders::id.eq_any(&order_ids))
                    .filter(orders::status.eq_any(not_final)),
            )
            .set((
                orders::status.eq(OrderStatus::Completed.as_str()),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await
            .map_err(in_tx("marking orders completed"))?;
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }
}
