//! Redis-backed [`WorkflowState`], shared by every replica of every service.
//!
//! Key layout (`{p}` is the configured prefix):
//!
//! | key                      | type   | value                                                    |
//! |--------------------------|--------|----------------------------------------------------------|
//! | `{p}order:map:{cid}`     | string | the owner's user id                                      |
//! | `{p}order:status:{cid}`  | hash   | `status` (`ACCEPTED`…), `updated_at` (RFC 3339), `order_id` (decimal, absent when unknown) |
//! | `{p}idem:{user}:{key}`   | string | `p` while claimed, `d` followed by the stored result once completed |
//!
//! The status is a hash rather than JSON so the advance script compares one field without
//! decoding anything, and an operator can read it with `HGETALL`. Every key carries a TTL.
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
    IdempotencyClaim, IntakeState, StateError, StatusReader, StatusRecord, StatusWriter,
    WorkflowState,
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

/// Bounds on how long one command may take, so a dead server fails calls instead of hanging them.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Workflow state in Redis. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    claim_ttl: Duration,
    advance: Script,
    claim: Script,
    release: Script,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("claim_ttl", &self.claim_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`). Every key starts with `key_prefix` and
    /// expires `ttl` after it was written or last advanced (at least one millisecond).
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
            claim_ttl: DEFAULT_CLAIM_TTL.min(ttl),
            advance: Script::new(ADVANCE_LUA),
            claim: Script::new(CLAIM_LUA),
            release: Script::new(RELEASE_LUA),
        })
    }

    /// Overrides how long an unfinished idempotency claim blocks retries (default
    /// [`DEFAULT_CLAIM_TTL`], never more than the TTL).
    pub fn with_claim_ttl(mut self, claim_ttl: Duration) -> Self {
        self.claim_ttl = claim_ttl.clamp(Duration::from_millis(1), self.ttl);
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
}

#[async_trait]
impl IntakeState for RedisState {
    async fn record_accepted(
        &self,
        cid: CorrelationId,
        owner: &UserId,
        order_id: OrderId,
    ) -> Result<(), StateError> {
        let (map_key, status_key) = (self.map_key(cid), self.status_key(cid));
        let ttl = self.ttl_ms();
        // MULTI/EXEC: a reader never sees the map without the status, nor either without a TTL.
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&map_key)
            .arg(owner.as_str())
            .arg("PX")
            .arg(ttl)
            .ignore()
            .del(&status_key)
            .ignore()
            .hset_multiple(
                &status_key,
                &[
                    ("status", OrderStatus::Accepted.as_str().to_owned()),
                    ("order_id", order_id.get().to_string()),
                    ("updated_at", timestamp(Utc::now())),
                ],
            )
            .ignore()
            .cmd("PEXPIRE")
            .arg(&status_key)
            .arg(ttl)
            .ignore()
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("recording an accepted order", &status_key, e))
    }

    async fn forget(&self, cid: CorrelationId) -> Result<(), StateError> {
        let map_key = self.map_key(cid);
        self.conn
            .clone()
            .del::<_, ()>(&[&map_key, &self.status_key(cid)])
            .await
            .map_err(|e| redis_error("forgetting an order", &map_key, e))
    }

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

    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        result: &[u8],
    ) -> Result<(), StateError> {
        let key = self.idempotency_key(user, key);
        let mut value = Vec::with_capacity(result.len() + 1);
        value.push(DONE_TAG);
        value.extend_from_slice(result);
        // A fresh full TTL rather than the claim's: the claim TTL is short by design, while
        // the result must answer retries for as long as the rest of the workflow state lives.
        self.conn
            .clone()
            .pset_ex::<_, _, ()>(&key, value, self.ttl_ms())
            .await
            .map_err(|e| redis_error("completing an idempotency key", &key, e))
    }

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
