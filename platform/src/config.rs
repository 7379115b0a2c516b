//! Configuration pieces shared by the service binaries, read from the environment (12-factor) or
//! flags, each able to connect its real adapter. Invalid values fail at start with a clear line.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    backplane::{Backplane, RedisBackplane},
    bus::{Bus, NatsBus, NatsSettings},
    seal::{CustomerSealer, DEV_SEAL_KEYS},
    state::{RedisState, WorkflowState},
};

/// The broker.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL (JetStream enabled, server 2.10 or newer).
    #[arg(long = "nats-url", env = "NATS_URL")]
    pub nats_url: String,
    /// JetStream stream holding every order event.
    #[arg(long, env = "NATS_STREAM", default_value = "ORDERS")]
    pub nats_stream: String,
    /// Subject prefix; the stream covers `{prefix}.>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "orders")]
    pub nats_subject_prefix: String,
    /// Stream replicas (3 on a JetStream cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
}

impl NatsArgs {
    pub fn settings(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            stream: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
            replicas: self.nats_stream_replicas,
            ..NatsSettings::default()
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Bus>> {
        let bus = NatsBus::connect(self.settings())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))?;
        Ok(Arc::new(bus))
    }
}

/// Workflow state and the backplane.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(long = "redis-url", env = "REDIS_URL")]
    pub redis_url: String,
    /// Prefix of every key and channel, to share one Redis between deployments.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
    /// Lifetime of the workflow keys (`order:map:*`, `order:status:*`), in seconds.
    #[arg(long, env = "WORKFLOW_TTL_SECS", default_value_t = 45 * 60)]
    pub workflow_ttl_secs: u64,
}

impl RedisArgs {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.workflow_ttl_secs)
    }

    pub async fn connect_state(&self) -> anyhow::Result<Arc<dyn WorkflowState>> {
        let state = RedisState::connect(&self.redis_url, &self.redis_key_prefix, self.ttl())
            .await
            .with_context(|| format!("connecting to Redis at {}", self.redis_url))?;
        Ok(Arc::new(state))
    }

    pub async fn connect_backplane(&self) -> anyhow::Result<Arc<dyn Backplane>> {
        let backplane = RedisBackplane::connect(&self.redis_url, &self.redis_key_prefix)
            .await
            .with_context(|| format!("connecting the backplane to Redis at {}", self.redis_url))?;
        Ok(Arc::new(backplane))
    }
}

/// The key ring for sealed customer references (shared by accept-svc and process-svc).
#[derive(Debug, Clone, clap::Args)]
pub struct SealArgs {
    /// `id:base64(32 bytes)[,id:base64...]`; the first key seals, every key opens.
    #[arg(long, env = "SEAL_KEYS", hide_env_values = true, default_value = DEV_SEAL_KEYS)]
    pub seal_keys: String,
}

impl SealArgs {
    pub fn sealer(&self) -> anyhow::Result<CustomerSealer> {
        if self.seal_keys == DEV_SEAL_KEYS {
            tracing::warn!("SEAL_KEYS not set: using the public development key");
        }
        CustomerSealer::from_spec(&self.seal_keys).context("reading SEAL_KEYS")
    }
}
