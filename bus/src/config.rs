//! The broker settings the service binaries share, read from the environment (12-factor) or flags.

use std::sync::Arc;

use anyhow::Context;

use crate::{Bus, NatsBus, NatsSettings};

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
