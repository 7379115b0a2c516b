//! Schema migrations and catalog seeding, run by `contoso migrate` and at process-svc start.
//!
//! Everything happens in one transaction under a transaction-scoped advisory lock: the pending
//! embedded migrations, then an upsert of every product in `products.json` and the deactivation
//! of products the file no longer lists. A second replica migrating at the same time waits on the
//! lock and then finds nothing to do; a failure anywhere leaves the database as it was.
//!
//! diesel_migrations is synchronous, so the work runs on a blocking thread through diesel-async's
//! `AsyncConnectionWrapper` (a sync `Connection` over the async one). `AsyncMigrationHarness`
//! would do the same with `block_in_place`, which panics on a current-thread runtime (the
//! default of `#[tokio::test]`); `spawn_blocking` works on either.

use diesel::{
    BoolExpressionMethods, Connection, ExpressionMethods, QueryDsl, RunQueryDsl, dsl::now,
    sql_types::BigInt, upsert::excluded,
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::ProductRow;
use contoso_domain::{Cause, Product};

use crate::{StoreError, catalog, schema::products};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Key of the advisory lock that serialises concurrent `migrate` calls ("contoso" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x63_6f_6e_74_6f_73_6f;

/// Bounds how long `migrate` waits for the lock (or for a table lock a migration needs), so a
/// replica stuck mid-migration makes the others fail with a clear error instead of hang.
const LOCK_TIMEOUT: &str = "120s";

/// What one [`migrate`] call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions of the migrations this call applied, oldest first; empty when the schema was
    /// already current.
    pub applied: Vec<String>,
    /// Catalog rows inserted or updated to match the data file; 0 when they already matched.
    pub products_changed: usize,
    /// Rows missing from the data file that this call marked inactive.
    pub products_deactivated: usize,
}

#[derive(Debug)]
enum MigrateError {
    Db(&'static str, diesel::result::Error),
    Migration(Cause),
}

impl From<diesel::result::Error> for MigrateError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db("migration transaction", e)
    }
}

/// Brings the database at `database_url` to the current schema and catalog. Safe to run from
/// several replicas at once, and a no-op (empty [`MigrationReport`]) when nothing changed.
///
/// Needs a Tokio runtime; either flavour works.
pub async fn migrate(database_url: &str) -> Result<MigrationReport, StoreError> {
    let products = catalog::products()?;
    let conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| StoreError::unavailable("connecting to Postgres to migrate", e))?;
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        Connection::transaction(&mut conn, |conn| migrate_locked(conn, &products))
    })
    .await
    .map_err(|e| StoreError::Query {
        context: "running migrations".into(),
        constraint: None,
        source: e.into(),
    })?
    .map_err(|e| match e {
        MigrateError::Db(context, e) => super::query_error(context, e),
        MigrateError::Migration(e) => StoreError::Query {
            context: "running migrations".into(),
            constraint: None,
            source: e,
        },
    })
}

fn migrate_locked(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    products: &[Product],
) -> Result<MigrationReport, MigrateError> {
    diesel::sql_query(format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(conn)
        .map_err(|e| MigrateError::Db("setting the lock timeout", e))?;
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn)
        .map_err(|e| MigrateError::Db("taking the migration lock", e))?;

    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(MigrateError::Migration)?
        .into_iter()
        .map(|v| v.to_string())
        .collect();

    let rows: Vec<ProductRow> = products.iter().map(ProductRow::from).collect();
    let changed_row = products::name
        .ne(excluded(products::name))
        .or(products::category.ne(excluded(products::category)))
        .or(products::vendor.ne(excluded(products::vendor)))
        .or(products::image_url.ne(excluded(products::image_url)))
        .or(products::discount_percent.ne(excluded(products::discount_percent)))
        .or(products::billing_period.ne(excluded(products::billing_period)))
        .or(products::subscription.ne(excluded(products::subscription)))
        .or(products::price_cents.ne(excluded(products::price_cents)))
        .or(products::currency.ne(excluded(products::currency)))
        .or(products::active.ne(excluded(products::active)));
    // The WHERE keeps an unchanged row untouched, so re-running leaves `updated_at` (and the
    // report) alone.
    let upsert = diesel::insert_into(products::table)
        .values(&rows)
        .on_conflict(products::id)
        .do_update()
        .set((
            products::name.eq(excluded(products::name)),
            products::category.eq(excluded(products::category)),
            products::vendor.eq(excluded(products::vendor)),
            products::image_url.eq(excluded(products::image_url)),
            products::discount_percent.eq(excluded(products::discount_percent)),
            products::billing_period.eq(excluded(products::billing_period)),
            products::subscription.eq(excluded(products::subscription)),
            products::price_cents.eq(excluded(products::price_cents)),
            products::currency.eq(excluded(products::currency)),
            products::active.eq(excluded(products::active)),
            products::updated_at.eq(now),
        ));
    // `InsertStatement` is not `QueryDsl`, so its WHERE comes from `FilterDsl` itself.
    let products_changed = diesel::query_dsl::methods::FilterDsl::filter(upsert, changed_row)
        .execute(conn)
        .map_err(|e| MigrateError::Db("upserting the catalog", e))?;

    // Rows are deactivated, not deleted: order items keep referencing them.
    let ids: Vec<&str> = products.iter().map(|p| p.id.as_str()).collect();
    let products_deactivated = diesel::update(
        products::table
            .filter(products::id.ne_all(&ids))
            .filter(products::active.eq(true)),
    )
    .set((products::active.eq(false), products::updated_at.eq(now)))
    .execute(conn)
    .map_err(|e| MigrateError::Db("deactivating products missing from the catalog", e))?;

    Ok(MigrationReport {
        applied,
        products_changed,
        products_deactivated,
    })
}
