//! `--raw`: the limits the design cannot beat, measured on the same servers in the same run, each
//! looped by `--concurrency` workers for `--raw-secs` without any service in between:
//!
//! - the Redis writes of one intake (owner map, status hash, in-flight entry, with their TTLs) as
//!   one pipelined round trip, on one multiplexed connection as the services use;
//! - one acknowledged JetStream publish (file storage, a message id, an event-sized payload) to a
//!   stream of the bench's own, deleted afterwards;
//! - both in turn: the raw intake;
//! - the Postgres inserts of one processed order (customer upsert, order, item, entitlement,
//!   outbox row already published, so no relay picks it up) as one statement and one commit, under
//!   customers of the bench's own, deleted afterwards;
//! - a tonic call that does nothing: the health check of accept-svc.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Text},
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    load::PRODUCT,
    progress::Progress,
    stats::{Counter, Errors, Latencies, Latency, per_sec},
};

/// Where the raw figures are taken: the servers the services use.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RawArgs {
    /// Redis the services use, for `--raw`.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// The services' Redis key prefix; the raw keys go under `{prefix}bench-raw:`.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    redis_key_prefix: String,
    /// NATS the services use, for `--raw`.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Postgres the services use (migrated), for `--raw`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// How long each raw figure is looped, in seconds.
    #[arg(long, default_value_t = 5)]
    raw_secs: u64,
}

/// One raw limit.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RawFigure {
    pub(crate) what: &'static str,
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) latency: Latency,
    pub(crate) errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RawReport {
    pub(crate) concurrency: usize,
    pub(crate) secs: u64,
    pub(crate) redis_intake_writes: RawFigure,
    pub(crate) jetstream_publish: RawFigure,
    /// Redis writes then the publish: what one intake cannot do faster.
    pub(crate) intake: RawFigure,
    pub(crate) postgres_order: RawFigure,
    pub(crate) tonic_echo: RawFigure,
}

/// Bytes of an in-flight entry (write time and the accepted order's snapshot), of an
/// `OrderAccepted` event and of an `OrderProcessed` event: about what the services write.
const INFLIGHT_BYTES: usize = 168;
const ACCEPTED_EVENT_BYTES: usize = 220;
const PROCESSED_EVENT_BYTES: usize = 64;
/// The raw keys' lifetime: long enough to outlive the run, short enough to leave nothing behind.
const RAW_TTL_MS: u64 = 120_000;
/// Distinct in-flight fields per worker: rewritten in turn so the hash stays small.
const INFLIGHT_FIELDS: u64 = 1000;

pub(crate) async fn measure(
    args: &RawArgs,
    concurrency: usize,
    accept: &Channel,
    progress: &Progress,
) -> anyhow::Result<RawReport> {
    let need = |value: &Option<String>, flag: &str| {
        value
            .clone()
            .with_context(|| format!("--raw needs {flag} (or its environment variable)"))
    };
    let redis_url = need(&args.redis_url, "--redis-url")?;
    let nats_url = need(&args.nats_url, "--nats-url")?;
    let database_url = need(&args.database_url, "--database-url")?;
    let secs = Duration::from_secs(args.raw_secs);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let redis = redis::Client::open(redis_url.as_str())
        .with_context(|| format!("opening Redis at {redis_url}"))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {redis_url}"))?;
    let nats = async_nats::connect(nats_url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    let js = jetstream::new(nats);
    let stream_name = format!("BENCH_RAW_{run}");
    let subject = format!("bench_raw_{run}.accepted");
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("bench_raw_{run}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .context("creating the bench's JetStream stream")?;

    let redis_writer = |worker: usize| RedisIntake {
        conn: redis.clone(),
        prefix: format!("{}bench-raw:{run}:", args.redis_key_prefix),
        user: format!("bench-raw-{run}-{worker}"),
        n: 0,
    };
    let publisher = || JsPublish {
        js: js.clone(),
        subject: subject.clone(),
    };

    progress.println(format!("raw: Redis writes of one intake ({secs:?})"));
    let redis_intake_writes = drive(
        "Redis writes of one intake (1 pipelined round trip)",
        (0..concurrency).map(redis_writer).collect(),
        secs,
    )
    .await;
    progress.println(format!("raw: acknowledged JetStream publish ({secs:?})"));
    let jetstream_publish = drive(
        "acknowledged JetStream publish",
        (0..concurrency).map(|_| publisher()).collect(),
        secs,
    )
    .await;
    progress.println(format!("raw: intake = Redis writes + publish ({secs:?})"));
    let intake = drive(
        "raw intake: Redis writes, then an acknowledged publish",
        (0..concurrency)
            .map(|w| RawIntake {
                redis: redis_writer(w),
                publish: publisher(),
            })
            .collect(),
        secs,
    )
    .await;
    if let Err(error) = js.delete_stream(&stream_name).await {
        tracing::warn!(%error, stream = stream_name, "deleting the bench's stream failed");
    }

    progress.println(format!(
        "raw: Postgres inserts of one processed order ({secs:?})"
    ));
    let customer_prefix = format!("bench-raw-{run}-");
    let mut orders = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        orders.push(PgOrder::connect(&database_url, format!("{customer_prefix}{worker}")).await?);
    }
    let postgres_order = drive(
        "Postgres inserts of one processed order (1 statement, 1 commit)",
        orders,
        secs,
    )
    .await;
    remove_raw_orders(&database_url, &customer_prefix).await?;

    progress.println(format!("raw: tonic echo ({secs:?})"));
    let tonic_echo = drive(
        "tonic echo (accept-svc health check)",
        (0..concurrency)
            .map(|_| Echo(HealthClient::new(accept.clone())))
            .collect(),
        secs,
    )
    .await;

    Ok(RawReport {
        concurrency,
        secs: args.raw_secs,
        redis_intake_writes,
        jetstream_publish,
        intake,
        postgres_order,
        tonic_echo,
    })
}

/// One operation of a raw loop; `Err` carries the code it failed with.
trait Op: Send + 'static {
    fn run(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs every worker's operation back to back for `secs`.
async fn drive<W: Op>(what: &'static str, workers: Vec<W>, secs: Duration) -> RawFigure {
    let latencies = Arc::new(Latencies::default());
    let errors = Arc::new(Errors::default());
    let ops = Arc::new(Counter::default());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut worker in workers {
        let (latencies, errors, ops) = (latencies.clone(), errors.clone(), ops.clone());
        tasks.spawn(async move {
            while started.elapsed() < secs {
                let at = Instant::now();
                match worker.run().await {
                    Ok(()) => {
                        latencies.record(at.elapsed());
                        ops.add(1);
                    }
                    Err(code) => {
                        errors.add(code);
                        // Not a spin against a server that is down.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    RawFigure {
        what,
        ops: ops.get(),
        ops_per_sec: per_sec(ops.get(), elapsed),
        latency: latencies.summary(),
        errors: errors.snapshot(),
    }
}

struct RedisIntake {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
    user: String,
    n: u64,
}

impl Op for RedisIntake {
    async fn run(&mut self) -> Result<(), String> {
        self.n += 1;
        let cid = uuid::Uuid::new_v4();
        let status = format!("{}order:status:{cid}", self.prefix);
        let inflight = format!("{}order:inflight:{}", self.prefix, self.user);
        let now = chrono::Utc::now().to_rfc3339();
        redis::pipe()
            .cmd("SET")
            .arg(format!("{}order:map:{cid}", self.prefix))
            .arg(&self.user)
            .arg("NX")
            .arg("PX")
            .arg(RAW_TTL_MS)
            .ignore()
            .cmd("HSET")
            .arg(&status)
            .arg("status")
            .arg("ACCEPTED")
            .arg("order_id")
            .arg(self.n)
            .arg("updated_at")
            .arg(&now)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&status)
            .arg(RAW_TTL_MS)
            .ignore()
            .cmd("HSET")
            .arg(&inflight)
            .arg(self.n % INFLIGHT_FIELDS)
            .arg(&[7u8; INFLIGHT_BYTES][..])
            .ignore()
            .cmd("PEXPIRE")
            .arg(&inflight)
            .arg(RAW_TTL_MS)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| format!("Redis {:?}", e.kind()))
    }
}

struct JsPublish {
    js: jetstream::Context,
    subject: String,
}

impl Op for JsPublish {
    async fn run(&mut self) -> Result<(), String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
        self.js
            .publish_with_headers(
                self.subject.clone(),
                headers,
                Bytes::from_static(&[9u8; ACCEPTED_EVENT_BYTES]),
            )
            .await
            .map_err(|e| format!("JetStream publish {:?}", e.kind()))?
            .await
            .map_err(|e| format!("JetStream ack {:?}", e.kind()))?;
        Ok(())
    }
}

struct RawIntake {
    redis: RedisIntake,
    publish: JsPublish,
}

impl Op for RawIntake {
    async fn run(&mut self) -> Result<(), String> {
        self.redis.run().await?;
        self.publish.run().await
    }
}

/// Customer upsert, order, item, entitlement and a published outbox row: what process-svc commits
/// for a one-line order, in one statement (the foreign keys are checked at its end).
const INSERT_ORDER: &str = "\
WITH c AS (
  INSERT INTO customers (external_id) VALUES ($1)
  ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id
  RETURNING id
), o AS (
  INSERT INTO orders (id, correlation_id, customer_id, status, total_cents, currency, accepted_at)
  SELECT $2, gen_random_uuid(), c.id, 'PROCESSING', $3, 'USD', now() FROM c
  RETURNING id, correlation_id, customer_id
), i AS (
  INSERT INTO order_items (order_id, line_no, product_id, product_name, quantity, unit_price_cents)
  SELECT o.id, 1, $4, $5, 1, $3 FROM o
  RETURNING order_id, line_no
), e AS (
  INSERT INTO entitlements (customer_id, product_id, seats, valid_from, valid_until, order_id, line_no)
  SELECT o.customer_id, $4, 1, now(), now() + interval '1 year', i.order_id, i.line_no FROM o, i
  RETURNING order_id
)
INSERT INTO outbox (correlation_id, order_id, kind, payload, published_at)
SELECT o.correlation_id, o.id, 'bench-raw', $6, now() FROM o, e";

#[derive(QueryableByName)]
struct NextBlock {
    #[diesel(sql_type = BigInt)]
    start: i64,
}

#[derive(QueryableByName)]
struct ProductRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    price_cents: i64,
}

/// Order ids per block of the `order_id_blocks` sequence (its increment).
const ID_BLOCK: i64 = 100;

struct PgOrder {
    conn: AsyncPgConnection,
    customer: String,
    product: ProductRow,
    next_id: i64,
    block_end: i64,
}

impl PgOrder {
    async fn connect(url: &str, customer: String) -> anyhow::Result<Self> {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .context("connecting to Postgres for --raw")?;
        let product: ProductRow =
            diesel::sql_query("SELECT name, price_cents FROM products WHERE id = $1")
                .bind::<Text, _>(PRODUCT)
                .get_result(&mut conn)
                .await
                .with_context(|| {
                    format!("reading product {PRODUCT} (is the database migrated?)")
                })?;
        Ok(Self {
            conn,
            customer,
            product,
            next_id: 0,
            block_end: 0,
        })
    }
}

impl Op for PgOrder {
    async fn run(&mut self) -> Result<(), String> {
        // Ids come in blocks from the services' own sequence, as at intake, so none collides.
        if self.next_id == self.block_end {
            let block: NextBlock = diesel::sql_query("SELECT nextval('order_id_blocks') AS start")
                .get_result(&mut self.conn)
                .await
                .map_err(|e| format!("Postgres {e}"))?;
            self.next_id = block.start;
            self.block_end = block.start + ID_BLOCK;
        }
        let id = self.next_id;
        self.next_id += 1;
        diesel::sql_query(INSERT_ORDER)
            .bind::<Text, _>(&self.customer)
            .bind::<BigInt, _>(id)
            .bind::<BigInt, _>(self.product.price_cents)
            .bind::<Text, _>(PRODUCT)
            .bind::<Text, _>(&self.product.name)
            .bind::<Binary, _>(&[5u8; PROCESSED_EVENT_BYTES][..])
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("Postgres {e}"))
    }
}

/// Removes every row the raw Postgres loop wrote.
async fn remove_raw_orders(url: &str, customer_prefix: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .context("connecting to Postgres to remove the raw orders")?;
    let pattern = format!("{customer_prefix}%");
    for sql in [
        "DELETE FROM entitlements WHERE customer_id IN \
         (SELECT id FROM customers WHERE external_id LIKE $1)",
        "DELETE FROM orders WHERE customer_id IN \
         (SELECT id FROM customers WHERE external_id LIKE $1)",
        "DELETE FROM customers WHERE external_id LIKE $1",
    ] {
        diesel::sql_query(sql)
            .bind::<Text, _>(&pattern)
            .execute(&mut conn)
            .await
            .context("removing the raw orders")?;
    }
    Ok(())
}

struct Echo(HealthClient<Channel>);

impl Op for Echo {
    async fn run(&mut self) -> Result<(), String> {
        self.0
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code()))
    }
}
