//! The broker settings the service binaries share, read from the environment (12-factor) or flags.

use std::{sync::Arc, time::Duration};

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
    /// How long the stream remembers a message id, in seconds: a publish repeated with the same
    /// id inside this window (a retried `OrderAccepted`) is dropped by the broker. A repeat after
    /// it is stored again, and consumers deduplicate it (process-svc records a correlation id
    /// once).
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS",
          default_value_t = crate::memory::DEFAULT_DUPLICATE_WINDOW.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_duplicate_window_secs: u64,
    /// JetStream stream holding dead letters, on `{prefix}_dlq.>` (default `{NATS_STREAM}_DLQ`).
    #[arg(long, env = "NATS_DLQ_STREAM")]
    pub nats_dlq_stream: Option<String>,
    /// How long a dead letter is kept, in days.
    #[arg(long, env = "NATS_DLQ_MAX_AGE_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub nats_dlq_max_age_days: u64,
}

impl NatsArgs {
    pub fn settings(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            stream: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
            replicas: self.nats_stream_replicas,
            duplicate_window: Duration::from_secs(self.nats_duplicate_window_secs),
            dead_letter_stream: self
                .nats_dlq_stream
                .clone()
                .unwrap_or_else(|| format!("{}_DLQ", self.nats_stream)),
            dead_letter_max_age: Duration::from_secs(
                self.nats_dlq_max_age_days.saturating_mul(24 * 3600),
            ),
            ..NatsSettings::default()
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Bus>> {
        let bus = NatsBus::connect(self.settings())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))?;
        Ok(Arc::new(bus))
    }

    /// The JetStream adapter, leaving the streams as the services set them up: for operating
    /// them, e.g. through its [`DeadLetters`](crate::DeadLetters).
    pub async fn connect_to_existing(&self) -> anyhow::Result<NatsBus> {
        NatsBus::connect_to_existing(self.settings())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn the_duplicate_window_defaults_to_jetstreams_and_can_be_set() {
        let default = Cli::try_parse_from(["x", "--nats-url", "nats://n:4222"]).unwrap();
        assert_eq!(
            default.nats.settings().duplicate_window,
            NatsSettings::default().duplicate_window
        );
        let set = Cli::try_parse_from([
            "x",
            "--nats-url",
            "nats://n:4222",
            "--nats-duplicate-window-secs",
            "600",
        ])
        .unwrap();
        assert_eq!(
            set.nats.settings().duplicate_window,
            Duration::from_secs(600)
        );
        assert!(
            Cli::try_parse_from([
                "x",
                "--nats-url",
                "nats://n:4222",
                "--nats-duplicate-window-secs",
                "0",
            ])
            .is_err()
        );
    }

    #[test]
    fn the_dead_letter_stream_follows_the_stream_unless_named() {
        let default =
            Cli::try_parse_from(["x", "--nats-url", "n", "--nats-stream", "SHOP"]).unwrap();
        let settings = default.nats.settings();
        assert_eq!(settings.dead_letter_stream, "SHOP_DLQ");
        assert_eq!(
            settings.dead_letter_max_age,
            Duration::from_secs(30 * 24 * 3600)
        );
        let named = Cli::try_parse_from([
            "x",
            "--nats-url",
            "n",
            "--nats-dlq-stream",
            "DEAD",
            "--nats-dlq-max-age-days",
            "7",
        ])
        .unwrap();
        let settings = named.nats.settings();
        assert_eq!(settings.dead_letter_stream, "DEAD");
        assert_eq!(
            settings.dead_letter_max_age,
            Duration::from_secs(7 * 24 * 3600)
        );
    }
}
