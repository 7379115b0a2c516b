//! Redis-backed [`WorkflowState`], shared by every replica of every service.
//!
//! Key layout (`{p}` is the configured prefix):
//!
//! | key                      | type   | value                                                    |
//! |--------------------------|--------|----------------------------------------------------------|
//! | `{p}order:map:{cid}`     | string | the owner's user id                                      |
//! | `{p}order:status:{cid}`  | hash   | `status` (`ACCEPTED`…), `updated_at` (RFC 3339), `order_id` (decimal, absent when unknown) |
//! | `{p}order:inflight:{user}` | hash | field: order id (decimal); value: when it was written (8 bytes, big-endian Unix milliseconds) followed by the snapshot |
//! | `{p}idem:{user}:{key}`   | string | `p` while claimed, `d` followed by the stored result once completed |
//!
//! The status is a hash rather than JSON so the advance script compares one field without
//! decoding anything, and an operator can read it with `HGETALL`. Every key carries a TTL: the
//! workflow TTL, except completed idempotency keys (the idempotency TTL). The in-flight hash's TTL
//! is refreshed on each write, and Redis (before 7.4) cannot expire one field, so each entry
//! carries its write time and is ignored (and removed when listed) once older than the TTL.
//!
//! All commands go over one multiplexed [`ConnectionManager`], which reconnects by itself; a
//! command that fails meanwhile surfaces as [`StateError::Unavailable`].

use std::{collections::HashMap, fmt, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use redis::{
    AsyncCommands, Client, ErrorKind, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::{
    DEFAULT_IDEMPOTENCY_TTL, IdempotencyClaim, InflightOrder, IntakeState, StateError,
    StatusReader, StatusRecord, StatusWriter, WorkflowState,
};
use contoso_domain::{CorrelationId, OrderId, OrderStatus, UserId};

pub use crate::memory::DEFAULT_CLAIM_TTL;

/// Moves a status forward atomically, whichever process calls it. The ranks mirror
/// `OrderStatus::can_advance_to`; a contract test keeps both in step.
///
/// KEYS: status hash, owner map. ARGV: new status, order id or '', updated_at, TTL in ms.
/// Returns 1 when written, 0 when the recorded status is not earlier, -1 when the recorded
/// status is unreadable.
const ADVANCE_LUA: &str = r"
local ranks = { ACCEPTED = 0, PROCESSING = 1, COMPLETED = 2, FAILED = 2 }
local next_rank = ranks[ARGV[1]]
if next_rank == nil then
  return redis.error_reply('ERR unknown order status ' .. ARGV[1])
end
local current = redis.call('HGET', KEYS[1], 'status')
if current then
  local current_rank = ranks[current]
  if current_rank == nil then
    return -1
  end
  if next_rank <= current_rank then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'order_id', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
";

/// Records an accepted order, or replays its recording: writes only what is missing, so a keyed
/// retry never moves a status back (or rewrites its time) nor refreshes what is there. A missing
/// or expired in-flight entry is written; the in-flight hash's TTL is refreshed, as on every write
/// to it.
///
/// KEYS: owner map, status hash, in-flight hash. ARGV: owner, order id, updated_at, TTL in ms,
/// now in Unix ms, in-flight value (write time, then snapshot). Returns the in-flight hash's length.
const RECORD_ACCEPTED_LUA: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'status', 'ACCEPTED', 'order_id', ARGV[2], 'updated_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('HSETNX', KEYS[2], 'order_id', ARGV[2])
end
local entry = redis.call('HGET', KEYS[3], ARGV[2])
local live = false
if entry and string.len(entry) >= 8 then
  local written_at = 0
  for i = 1, 8 do
    written_at = written_at * 256 + string.byte(entry, i)
  end
  live = tonumber(ARGV[5]) - written_at < tonumber(ARGV[4])
end
if not live then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[6])
end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return redis.call('HLEN', KEYS[3])
";

/// Takes an idempotency key if it is free; otherwise returns what it holds, read in the same
/// atomic step so an expiry in between cannot be mistaken for a free key.
///
/// KEYS: idempotency key. ARGV: pending marker, claim TTL in ms.
const CLAIM_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
";

/// Stores a result under an idempotency key that is free or still pending; a result already
/// stored wins and is returned instead.
///
/// KEYS: idempotency key. ARGV: pending marker, tagged result, idempotency TTL in ms.
const COMPLETE_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  return held
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return false
";

/// Replaces a stored result (never a pending claim or a missing key).
///
/// KEYS: idempotency key. ARGV: done tag, tagged result, idempotency TTL in ms.
const REPLACE_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 1) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 0
";

/// Deletes an idempotency key only while it is still pending, never a stored result.
///
/// KEYS: idempotency key. ARGV: pending marker.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const PENDING: &[u8] = b"p";
const DONE_TAG: u8 = b'd';
/// Bytes of the write time in front of an in-flight snapshot.
const WRITTEN_AT_LEN: usize = 8;

/// Bounds on how long one command may take, so a dead server fails calls instead of hanging them.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Workflow state in Redis. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    idempotency_ttl: Duration,
    claim_ttl: Duration,
    advance: Script,
    record: Script,
    claim: Script,
    complete: Script,
    replace: Script,
    release: Script,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("claim_ttl", &self.claim_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`). Every key starts with `key_prefix`;
    /// workflow keys expire `ttl` after they were written or last advanced (at least one
    /// millisecond), completed idempotency keys after [`DEFAULT_IDEMPOTENCY_TTL`] unless
    /// [`RedisState::with_idempotency_ttl`] says otherwise.
    pub async fn connect(url: &str, key_prefix: &str, ttl: Duration) -> Result<Self, StateError> {
        let client = Client::open(url).map_err(|e| unavailable("parsing the Redis URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable("connecting to Redis", e))?;
        let ttl = ttl.max(Duration::from_millis(1));
        Ok(Self {
            conn,
            prefix: key_prefix.to_owned(),
            ttl,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            claim_ttl: DEFAULT_CLAIM_TTL.min(DEFAULT_IDEMPOTENCY_TTL),
            advance: Script::new(ADVANCE_LUA),
            record: Script::new(RECORD_ACCEPTED_LUA),
            claim: Script::new(CLAIM_LUA),
            complete: Script::new(COMPLETE_LUA),
            replace: Script::new(REPLACE_LUA),
            release: Script::new(RELEASE_LUA),
        })
    }

    /// Overrides how long a completed idempotency key answers retries (default
    /// [`DEFAULT_IDEMPOTENCY_TTL`], at least one millisecond). The claim TTL is lowered to it if
    /// longer.
    pub fn with_idempotency_ttl(mut self, idempotency_ttl: Duration) -> Self {
        self.idempotency_ttl = idempotency_ttl.max(Duration::from_millis(1));
        self.claim_ttl = self.claim_ttl.min(self.idempotency_ttl);
        self
    }

    /// Overrides how long an unfinished idempotency claim blocks retries (default
    /// [`DEFAULT_CLAIM_TTL`], never more than the idempotency TTL).
    pub fn with_claim_ttl(mut self, claim_ttl: Duration) -> Self {
        self.claim_ttl = claim_ttl.clamp(Duration::from_millis(1), self.idempotency_ttl);
        self
    }

    /// `{prefix}order:map:{cid}`.
    pub fn map_key(&self, cid: CorrelationId) -> String {
        format!("{}order:map:{cid}", self.prefix)
    }

    /// `{prefix}order:status:{cid}`.
    pub fn status_key(&self, cid: CorrelationId) -> String {
        format!("{}order:status:{cid}", self.prefix)
    }

    /// `{prefix}order:inflight:{user}`.
    pub fn inflight_key(&self, user: &UserId) -> String {
        format!("{}order:inflight:{user}", self.prefix)
    }

    /// `{prefix}idem:{user}:{key}`.
    pub fn idempotency_key(&self, user: &UserId, key: &str) -> String {
        format!("{}idem:{user}:{key}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        millis(self.ttl)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(context: &str, err: RedisError) -> StateError {
    StateError::Unavailable {
        context: context.to_owned(),
        source: err.into(),
    }
}

/// A wrong-typed key or reply is bad data under `key`; anything else means Redis could not be
/// used right now.
fn redis_error(context: &str, key: &str, err: RedisError) -> StateError {
    let bad_data = err.code() == Some("WRONGTYPE") || err.kind() == ErrorKind::UnexpectedReturnType;
    if bad_data {
        StateError::Corrupt {
            key: key.to_owned(),
            detail: err.to_string(),
        }
    } else {
        unavailable(context, err)
    }
}

fn corrupt(key: &str, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        key: key.to_owned(),
        detail: detail.into(),
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A completed idempotency key's value: the done tag, then the result.
fn done_value(result: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(result.len() + 1);
    value.push(DONE_TAG);
    value.extend_from_slice(result);
    value
}

/// An in-flight hash value: the write time (Unix ms), then the snapshot.
fn inflight_value_at(written_at: i64, snapshot: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(WRITTEN_AT_LEN + snapshot.len());
    value.extend_from_slice(&written_at.to_be_bytes());
    value.extend_from_slice(snapshot);
    value
}

/// Splits an in-flight hash value into its write time (Unix ms) and its snapshot.
fn parse_inflight_value<'v>(
    key: &str,
    field: &str,
    value: &'v [u8],
) -> Result<(i64, &'v [u8]), StateError> {
    match value.split_first_chunk::<WRITTEN_AT_LEN>() {
        Some((written_at, snapshot)) => Ok((i64::from_be_bytes(*written_at), snapshot)),
        None => Err(corrupt(
            key,
            format!("in-flight entry {field} is shorter than its write time"),
        )),
    }
}

fn parse_inflight_field(key: &str, field: &str) -> Result<OrderId, StateError> {
    field
        .parse::<i64>()
        .ok()
        .and_then(OrderId::new)
        .ok_or_else(|| corrupt(key, format!("in-flight field {field:?} is not an order id")))
}

fn parse_status_record(
    key: &str,
    mut fields: HashMap<String, String>,
) -> Result<StatusRecord, StateError> {
    let status = fields
        .get("status")
        .ok_or_else(|| corrupt(key, "no status field"))?
        .parse::<OrderStatus>()
        .map_err(|e| corrupt(key, e.to_string()))?;
    let order_id = match fields.remove("order_id") {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .and_then(OrderId::new)
                .ok_or_else(|| corrupt(key, format!("bad order_id {raw:?}")))?,
        ),
    };
    let updated_at = fields
        .get("updated_at")
        .ok_or_else(|| corrupt(key, "no updated_at field"))
        .and_then(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map_err(|e| corrupt(key, format!("bad updated_at {raw:?}: {e}")))
        })?
        .with_timezone(&Utc);
    Ok(StatusRecord {
        status,
        order_id,
        updated_at,
    })
}

#[async_trait]
impl StatusReader for RedisState {
    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "GET")
    )]
    async fn owner(&self, cid: CorrelationId) -> Result<Option<UserId>, StateError> {
        let key = self.map_key(cid);
        let raw: Option<String> = self
            .conn
            .clone()
            .get(&key)
            .await
            .map_err(|e| redis_error("reading an order's owner", &key, e))?;
        raw.map(|raw| UserId::parse(raw).map_err(|e| corrupt(&key, e.to_string())))
            .transpose()
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "HGETALL")
    )]
    async fn status(&self, cid: CorrelationId) -> Result<Option<StatusRecord>, StateError> {
        let key = self.status_key(cid);
        let fields: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(&key)
            .await
            .map_err(|e| redis_error("reading an order's status", &key, e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_status_record(&key, fields).map(Some)
    }
}

#[async_trait]
impl StatusWriter for RedisState {
    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn advance(
        &self,
        cid: CorrelationId,
        status: OrderStatus,
        order_id: Option<OrderId>,
    ) -> Result<bool, StateError> {
        let status_key = self.status_key(cid);
        let written: i64 = self
            .advance
            .key(&status_key)
            .key(self.map_key(cid))
            .arg(status.as_str())
            .arg(order_id.map(|id| id.get().to_string()).unwrap_or_default())
            .arg(timestamp(Utc::now()))
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("advancing an order's status", &status_key, e))?;
        match written {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(corrupt(
                &status_key,
                "recorded status is not a known status",
            )),
        }
    }

    async fn restore_owner(&self, cid: CorrelationId, owner: &UserId) -> Result<(), StateError> {
        let map_key = self.map_key(cid);
        let _: Option<String> = redis::cmd("SET")
            .arg(&map_key)
            .arg(owner.as_str())
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("restoring an order's owner", &map_key, e))?;
        Ok(())
    }
}

#[async_trait]
impl IntakeState for RedisState {
    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn record_accepted(
        &self,
        cid: CorrelationId,
        owner: &UserId,
        order_id: OrderId,
        snapshot: &[u8],
    ) -> Result<usize, StateError> {
        let status_key = self.status_key(cid);
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        // One script: a reader never sees the map, the status or the in-flight entry without the
        // others, nor any of them without a TTL; and a replay writes only what is missing.
        let held: usize = self
            .record
            .key(self.map_key(cid))
            .key(&status_key)
            .key(self.inflight_key(owner))
            .arg(owner.as_str())
            .arg(order_id.get().to_string())
            .arg(timestamp(now))
            .arg(self.ttl_ms())
            .arg(now_ms)
            .arg(inflight_value_at(now_ms, snapshot))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("recording an accepted order", &status_key, e))?;
        Ok(held)
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "HGETALL")
    )]
    async fn inflight_orders(&self, user: &UserId) -> Result<Vec<InflightOrder>, StateError> {
        let key = self.inflight_key(user);
        let entries: HashMap<String, Vec<u8>> = self
            .conn
            .clone()
            .hgetall(&key)
            .await
            .map_err(|e| redis_error("reading in-flight orders", &key, e))?;
        let now = Utc::now().timestamp_millis();
        let ttl = i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX);
        let mut live = Vec::with_capacity(entries.len());
        let mut expired = Vec::new();
        for (field, value) in &entries {
            let order_id = parse_inflight_field(&key, field)?;
            let (written_at, snapshot) = parse_inflight_value(&key, field, value)?;
            if now.saturating_sub(written_at) >= ttl {
                expired.push(field.as_str());
            } else {
                live.push(InflightOrder {
                    order_id,
                    snapshot: snapshot.to_vec(),
                });
            }
        }
        if !expired.is_empty() {
            self.conn
                .clone()
                .hdel::<_, _, ()>(&key, expired)
                .await
                .map_err(|e| redis_error("removing expired in-flight orders", &key, e))?;
        }
        live.sort_by_key(|o| o.order_id);
        Ok(live)
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "HGET")
    )]
    async fn inflight_order(
        &self,
        user: &UserId,
        order_id: OrderId,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.inflight_key(user);
        let field = order_id.get().to_string();
        let value: Option<Vec<u8>> = self
            .conn
            .clone()
            .hget(&key, &field)
            .await
            .map_err(|e| redis_error("reading an in-flight order", &key, e))?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (written_at, snapshot) = parse_inflight_value(&key, &field, &value)?;
        let ttl = i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX);
        if Utc::now().timestamp_millis().saturating_sub(written_at) >= ttl {
            return Ok(None);
        }
        Ok(Some(snapshot.to_vec()))
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "HDEL")
    )]
    async fn drop_inflight(&self, user: &UserId, order_ids: &[OrderId]) -> Result<(), StateError> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let key = self.inflight_key(user);
        let fields: Vec<String> = order_ids.iter().map(|id| id.get().to_string()).collect();
        self.conn
            .clone()
            .hdel::<_, _, ()>(&key, fields)
            .await
            .map_err(|e| redis_error("dropping in-flight orders", &key, e))
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<IdempotencyClaim, StateError> {
        let key = self.idempotency_key(user, key);
        let held: Option<Vec<u8>> = self
            .claim
            .key(&key)
            .arg(PENDING)
            .arg(millis(self.claim_ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("claiming an idempotency key", &key, e))?;
        match held.as_deref() {
            None => Ok(IdempotencyClaim::Claimed),
            Some(PENDING) => Ok(IdempotencyClaim::InFlight),
            Some([DONE_TAG, result @ ..]) => Ok(IdempotencyClaim::Completed(result.to_vec())),
            Some(_) => Err(corrupt(&key, "neither pending nor completed")),
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.idempotency_key(user, key);
        // A fresh idempotency TTL rather than the claim's: the claim TTL is short by design,
        // while the result must answer retries for as long as a client may retry.
        let held: Option<Vec<u8>> = self
            .complete
            .key(&key)
            .arg(PENDING)
            .arg(done_value(result))
            .arg(millis(self.idempotency_ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("completing an idempotency key", &key, e))?;
        match held.as_deref() {
            None => Ok(None),
            Some([DONE_TAG, result @ ..]) => Ok(Some(result.to_vec())),
            Some(_) => Err(corrupt(&key, "neither pending nor completed")),
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn replace_idempotency_result(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<(), StateError> {
        let key = self.idempotency_key(user, key);
        self.replace
            .key(&key)
            .arg(&[DONE_TAG][..])
            .arg(done_value(result))
            .arg(millis(self.idempotency_ttl))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("replacing an idempotency result", &key, e))
    }

    #[tracing::instrument(
        skip_all,
        fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA")
    )]
    async fn release_idempotency_key(&self, user: &UserId, key: &str) -> Result<(), StateError> {
        let key = self.idempotency_key(user, key);
        self.release
            .key(&key)
            .arg(PENDING)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("releasing an idempotency key", &key, e))
    }
}

#[async_trait]
impl WorkflowState for RedisState {
    async fn is_ready(&self) -> bool {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .is_ok()
    }
}
