//! Entitlements in Postgres: granted inside `record_order`'s transaction ([`grant_lines`]),
//! listed for their buyer and assignees, and seats assigned and revoked under a lock on the
//! entitlement's row, so concurrent assignments are counted one after another and never exceed
//! its seats.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use contoso_domain::{
    Entitlement, EntitlementId, Held, NewOrder, OrderId, Quantity, SeatAssignment, SeatRefusal,
    UserId, Validity, grant, sort_for_listing,
};

use super::{PgStore, TxError, billing_period, in_tx, on_query, order_id};
use crate::{
    Entitlements, MAX_BATCH, SeatError, Snapshot, StoreError, clock,
    schema::{customers, entitlements, order_items, seat_assignments},
};

/// A product of an order with the buyer's current entitlement to it, if any.
#[derive(Debug, QueryableByName)]
struct ProductHolding {
    #[diesel(sql_type = Text)]
    product_id: String,
    #[diesel(sql_type = Text)]
    billing_period: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    entitlement_id: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    valid_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = entitlements, check_for_backend(diesel::pg::Pg))]
struct EntitlementRow {
    id: i64,
    product_id: String,
    seats: i32,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    order_id: i64,
    line_no: i32,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = entitlements)]
struct NewEntitlementRow<'a> {
    customer_id: i64,
    product_id: &'a str,
    seats: i32,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    order_id: i64,
    line_no: i32,
}

fn entitlement_id(raw: i64) -> Result<EntitlementId, StoreError> {
    EntitlementId::new(raw)
        .ok_or_else(|| StoreError::corrupt("an entitlement id", format!("{raw} is not positive")))
}

/// Grants one entitlement per line of `order` to `customer_id` at `now`, renewing what the buyer
/// holds as [`grant`] rules and carrying the renewed entitlement's seat assignments over. Runs
/// inside `record_order`'s transaction, after the items (whose rows the entitlements reference).
/// The customer's row is locked by that transaction's upsert, so two orders of one buyer grant
/// one after the other and each sees the other's renewal.
pub(super) async fn grant_lines(
    conn: &mut AsyncPgConnection,
    order: &NewOrder,
    customer_id: i64,
    now: DateTime<Utc>,
) -> Result<(), TxError> {
    let product_ids: Vec<&str> = order.lines.iter().map(|l| l.product_id.as_str()).collect();
    // Each product's billing period and the buyer's current entitlement to it, the one a renewal
    // extends (latest end, then highest id, as `grant` picks): one index probe per product, however
    // long the buyer's chain of renewals has grown.
    let rows: Vec<ProductHolding> = diesel::sql_query(
        "SELECT p.id AS product_id, p.billing_period, e.id AS entitlement_id, e.valid_until \
         FROM products p \
         LEFT JOIN LATERAL ( \
             SELECT id, valid_until FROM entitlements \
             WHERE customer_id = $1 AND product_id = p.id AND valid_until > $3 \
             ORDER BY valid_until DESC, id DESC LIMIT 1) e ON true \
         WHERE p.id = ANY($2)",
    )
    .bind::<BigInt, _>(customer_id)
    .bind::<Array<Text>, _>(&product_ids)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await
    .map_err(in_tx(
        "reading the products and the buyer's current entitlements",
    ))?;
    let mut periods: HashMap<String, String> = HashMap::new();
    let mut held: HashMap<String, Vec<Held>> = HashMap::new();
    for row in rows {
        if let (Some(id), Some(valid_until)) = (row.entitlement_id, row.valid_until) {
            let id = entitlement_id(id).map_err(TxError::Store)?;
            held.entry(row.product_id.clone())
                .or_default()
                .push(Held { id, valid_until });
        }
        periods.insert(row.product_id, row.billing_period);
    }

    for (line, line_no) in order.lines.iter().zip(1..) {
        let what = || format!("order {} line {line_no}", order.order_id);
        let period = periods
            .get(&line.product_id)
            .ok_or_else(|| StoreError::corrupt(what(), "its product has no billing period"))
            .and_then(|raw| billing_period(raw, &line.product_id))
            .map_err(TxError::Store)?;
        let chain = held.entry(line.product_id.clone()).or_default();
        let granted = grant(now, period, chain)
            .map_err(|e| TxError::Store(StoreError::corrupt(what(), e)))?;
        let id: i64 = diesel::insert_into(entitlements::table)
            .values(NewEntitlementRow {
                customer_id,
                product_id: &line.product_id,
                seats: line.quantity.get(),
                valid_from: granted.validity.from,
                valid_until: granted.validity.until,
                order_id: order.order_id.get(),
                line_no,
            })
            .returning(entitlements::id)
            .get_result(conn)
            .await
            .map_err(in_tx("granting an entitlement"))?;
        if let Some(renewed) = granted.renews {
            diesel::sql_query(
                "INSERT INTO seat_assignments (entitlement_id, assignee, assigned_at) \
                 SELECT $1, assignee, assigned_at FROM seat_assignments \
                 WHERE entitlement_id = $2 ORDER BY assigned_at, assignee LIMIT $3",
            )
            .bind::<BigInt, _>(id)
            .bind::<BigInt, _>(renewed.get())
            .bind::<BigInt, _>(i64::from(line.quantity.get()))
            .execute(conn)
            .await
            .map_err(in_tx("carrying seat assignments over to a renewal"))?;
        }
        chain.push(Held {
            id: entitlement_id(id).map_err(TxError::Store)?,
            valid_until: granted.validity.until,
        });
    }
    Ok(())
}

/// The entitlements the lines of `order_ids` granted, by order and line.
pub(super) async fn granted_by(
    conn: &mut AsyncPgConnection,
    order_ids: &[i64],
) -> Result<HashMap<OrderId, Vec<Entitlement>>, StoreError> {
    let ids: Vec<i64> = entitlements::table
        .filter(entitlements::order_id.eq_any(order_ids))
        .select(entitlements::id)
        .load(conn)
        .await
        .map_err(on_query("reading what orders granted"))?;
    let mut granted: HashMap<OrderId, Vec<Entitlement>> = HashMap::new();
    for entitlement in load(conn, &ids).await? {
        granted
            .entry(entitlement.order_id)
            .or_default()
            .push(entitlement);
    }
    for lines in granted.values_mut() {
        lines.sort_by_key(|e| e.line_no);
    }
    Ok(granted)
}

/// The entitlements with these ids, with their buyers, product names and assignments (oldest
/// first), in no particular order.
async fn load(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<Vec<Entitlement>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(EntitlementRow, String, String)> = entitlements::table
        .inner_join(customers::table)
        .inner_join(
            order_items::table.on(order_items::order_id
                .eq(entitlements::order_id)
                .and(order_items::line_no.eq(entitlements::line_no))),
        )
        .filter(entitlements::id.eq_any(ids))
        .select((
            EntitlementRow::as_select(),
            customers::external_id,
            order_items::product_name,
        ))
        .load(conn)
        .await
        .map_err(on_query("loading entitlements"))?;
    let assigned: Vec<(i64, String, DateTime<Utc>)> = seat_assignments::table
        .filter(seat_assignments::entitlement_id.eq_any(ids))
        .order((seat_assignments::assigned_at, seat_assignments::assignee))
        .select((
            seat_assignments::entitlement_id,
            seat_assignments::assignee,
            seat_assignments::assigned_at,
        ))
        .load(conn)
        .await
        .map_err(on_query("loading seat assignments"))?;
    let mut assignments: HashMap<i64, Vec<SeatAssignment>> = HashMap::new();
    for (id, assignee, assigned_at) in assigned {
        let assignee = UserId::parse(assignee)
            .map_err(|e| StoreError::corrupt(format!("entitlement {id} assignee"), e))?;
        assignments.entry(id).or_default().push(SeatAssignment {
            assignee,
            assigned_at,
        });
    }
    rows.into_iter()
        .map(|(row, buyer, product_name)| {
            let what = |field: &str| format!("entitlement {} {field}", row.id);
            Ok(Entitlement {
                id: entitlement_id(row.id)?,
                buyer: UserId::parse(buyer).map_err(|e| StoreError::corrupt(what("buyer"), e))?,
                product_id: row.product_id,
                product_name,
                seats: Quantity::try_from(row.seats)
                    .map_err(|e| StoreError::corrupt(what("seats"), e))?,
                validity: Validity {
                    from: row.valid_from,
                    until: row.valid_until,
                },
                order_id: order_id(row.order_id)?,
                line_no: row.line_no,
                assignments: assignments.remove(&row.id).unwrap_or_default(),
            })
        })
        .collect()
}

/// Locks entitlement `id` for the rest of the transaction and loads it; `NotFound` when there
/// is none.
async fn lock(conn: &mut AsyncPgConnection, id: EntitlementId) -> Result<Entitlement, TxError> {
    let locked: Option<i64> = entitlements::table
        .filter(entitlements::id.eq(id.get()))
        .select(entitlements::id)
        .for_update()
        .first(conn)
        .await
        .optional()
        .map_err(in_tx("locking an entitlement"))?;
    if locked.is_none() {
        return Err(TxError::Refused(SeatRefusal::NotFound));
    }
    load(conn, &[id.get()])
        .await
        .map_err(TxError::Store)?
        .pop()
        .ok_or(TxError::Refused(SeatRefusal::NotFound))
}

fn sort_assignments(assignments: &mut [SeatAssignment]) {
    assignments.sort_by(|a, b| {
        (a.assigned_at, a.assignee.as_str()).cmp(&(b.assigned_at, b.assignee.as_str()))
    });
}

#[async_trait]
impl Entitlements for PgStore {
    #[tracing::instrument(skip(self, user), fields(otel.kind = "client", db.system.name = "postgresql"))]
    async fn list_entitlements(
        &self,
        user: &UserId,
    ) -> Result<Snapshot<Vec<Entitlement>>, StoreError> {
        let now = clock::now(&*self.clock);
        let mut conn = self.conn().await?;
        let assigned_to_user = seat_assignments::table
            .filter(seat_assignments::assignee.eq(user.as_str()))
            .select(seat_assignments::entitlement_id);
        // Those ending last first: every active one comes before any expired one, so the cap
        // drops only the oldest expired ones.
        let ids: Vec<i64> = entitlements::table
            .inner_join(customers::table)
            .filter(
                customers::external_id
                    .eq(user.as_str())
                    .or(entitlements::id.eq_any(assigned_to_user)),
            )
            .order((entitlements::valid_until.desc(), entitlements::id.desc()))
            .limit(MAX_BATCH)
            .select(entitlements::id)
            .load(&mut conn)
            .await
            .map_err(on_query("listing a user's entitlements"))?;
        let mut value = load(&mut conn, &ids).await?;
        sort_for_listing(&mut value, now);
        Ok(Snapshot { as_of: now, value })
    }

    #[tracing::instrument(skip(self, caller, assignee), fields(otel.kind = "client", db.system.name = "postgresql", entitlement_id = %id))]
    async fn assign_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError> {
        let now = clock::now(&*self.clock);
        let mut conn = self.conn().await?;
        let value = conn
            .transaction::<_, TxError, _>(async |conn| {
                let mut entitlement = lock(conn, id).await?;
                entitlement
                    .check_assign(caller, assignee, now)
                    .map_err(TxError::Refused)?;
                diesel::insert_into(seat_assignments::table)
                    .values((
                        seat_assignments::entitlement_id.eq(id.get()),
                        seat_assignments::assignee.eq(assignee.as_str()),
                        seat_assignments::assigned_at.eq(now),
                    ))
                    .execute(conn)
                    .await
                    .map_err(in_tx("assigning a seat"))?;
                entitlement.assignments.push(SeatAssignment {
                    assignee: assignee.clone(),
                    assigned_at: now,
                });
                sort_assignments(&mut entitlement.assignments);
                Ok(entitlement)
            })
            .await?;
        Ok(Snapshot { as_of: now, value })
    }

    #[tracing::instrument(skip(self, caller, assignee), fields(otel.kind = "client", db.system.name = "postgresql", entitlement_id = %id))]
    async fn revoke_seat(
        &self,
        caller: &UserId,
        id: EntitlementId,
        assignee: &UserId,
    ) -> Result<Snapshot<Entitlement>, SeatError> {
        let now = clock::now(&*self.clock);
        let mut conn = self.conn().await?;
        let value = conn
            .transaction::<_, TxError, _>(async |conn| {
                let mut entitlement = lock(conn, id).await?;
                entitlement
                    .check_revoke(caller, assignee)
                    .map_err(TxError::Refused)?;
                diesel::delete(
                    seat_assignments::table
                        .filter(seat_assignments::entitlement_id.eq(id.get()))
                        .filter(seat_assignments::assignee.eq(assignee.as_str())),
                )
                .execute(conn)
                .await
                .map_err(in_tx("revoking a seat"))?;
                entitlement.assignments.retain(|a| a.assignee != *assignee);
                Ok(entitlement)
            })
            .await?;
        Ok(Snapshot { as_of: now, value })
    }
}
