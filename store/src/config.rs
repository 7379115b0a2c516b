//! The database settings the service binaries share, read from the environment or flags.

use std::sync::Arc;

use anyhow::Context;

use crate::PgStore;

/// Postgres, the system of record.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Most connections in the pool (opened on demand). process-svc uses up to its consumer
    /// concurrency plus 16 for the outbox relay at once.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,
    /// Longest a statement may run, and a session may sit idle inside a transaction, in seconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub database_statement_timeout_secs: u64,
}

impl DatabaseArgs {
    /// Applies the migrations and loads the catalog.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let report = crate::postgres::migrate(&self.database_url)
            .await
            .context("migrating the database")?;
        tracing::info!(?report, "database migrated");
        Ok(())
    }

    pub async fn connect(&self) -> anyhow::Result<Arc<PgStore>> {
        let url = crate::postgres::with_session_timeouts(
            &self.database_url,
            std::time::Duration::from_secs(self.database_statement_timeout_secs),
        );
        let store = PgStore::connect(&url, self.database_max_connections as usize)
            .await
            .context("connecting to Postgres")?;
        Ok(Arc::new(store))
    }
}
