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
    /// Size of the connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,
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
        let store = PgStore::connect(&self.database_url, self.database_max_connections as usize)
            .await
            .context("connecting to Postgres")?;
        Ok(Arc::new(store))
    }
}
