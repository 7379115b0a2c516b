//! The Redis settings the service binaries share, read from the environment (12-factor) or flags.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{RedisState, WorkflowState};

/// Redis, home of the workflow state and (in notify-svc) the backplane.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(long = "redis-url", env = "REDIS_URL")]
    pub redis_url: String,
    /// Prefix of every key and channel, to share one Redis between deployments.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
    /// Lifetime of the workflow keys (`order:map:*`, `order:status:*`, `order:inflight:*`), in
    /// seconds.
    #[arg(long, env = "WORKFLOW_TTL_SECS", default_value_t = 45 * 60)]
    pub workflow_ttl_secs: u64,
    /// How long a completed idempotency key answers retries of `PlaceOrder`, in seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = crate::DEFAULT_IDEMPOTENCY_TTL.as_secs())]
    pub idempotency_ttl_secs: u64,
}

impl RedisArgs {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.workflow_ttl_secs)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    pub async fn connect_state(&self) -> anyhow::Result<Arc<dyn WorkflowState>> {
        let state = RedisState::connect(&self.redis_url, &self.redis_key_prefix, self.ttl())
            .await
            .with_context(|| format!("connecting to Redis at {}", self.redis_url))?
            .with_idempotency_ttl(self.idempotency_ttl());
        Ok(Arc::new(state))
    }
}
