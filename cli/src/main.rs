//! `contoso`: the workspace's default binary.
//!
//! - `contoso dev` runs gateway, accept-svc, process-svc and notify-svc in one process on embedded
//!   defaults (in-memory bus, workflow state, backplane and store; dev login on); `--database-url`,
//!   `--redis-url`, `--nats-url` swap any of them for the real one.
//! - `contoso migrate` applies the schema migrations and loads the catalog.
//! - `contoso token --sub alice` prints a token the dev stack accepts.
//! - `contoso bench` places orders against a running system and prints latency figures.
//! - `contoso dlq list | show ID | replay ID | replay --all | purge ID` operates the dead letters.

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod dev;
mod dlq;
mod web;

#[derive(Debug, Parser)]
#[command(
    name = "contoso",
    version,
    about = "Contoso Orders: run, migrate, and get a dev token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system in one process.
    Dev(dev::DevArgs),
    /// Place orders against a running system and print latency figures.
    Bench(bench::BenchArgs),
    /// List, show, replay or purge the dead letters in JetStream.
    Dlq(dlq::DlqArgs),
    /// Apply the database migrations and load the catalog.
    Migrate {
        #[command(flatten)]
        database: contoso_store::config::DatabaseArgs,
    },
    /// Print a fresh `JWT_SECRET` and `SEAL_KEYS` for a deployment (as `KEY=value` lines).
    Keys {
        /// Key id of the new seal key (rotate by prepending a new id to the old ring).
        #[arg(long, default_value = "k1")]
        seal_key_id: String,
    },
    /// Print a bearer token for a user (signed with JWT_SECRET, or the dev secret when unset).
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        #[command(flatten)]
        auth: contoso_platform::auth::AuthArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `dlq` prints its tables on stdout, which is where the logs go. Only `dev` exports traces:
    // the tools' own work is no order's.
    match &cli.command {
        Command::Dlq(_) => {}
        Command::Dev(_) => {}
        _ => contoso_platform::telemetry::init_logs(),
    }
    match cli.command {
        Command::Dev(args) => {
            let telemetry = contoso_platform::telemetry::init("contoso-dev")?;
            let ran = dev::run(args).await;
            telemetry.shutdown().await;
            ran
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Migrate { database } => database.migrate().await,
        Command::Keys { seal_key_id } => {
            println!("JWT_SECRET={}", contoso_platform::auth::generate_secret());
            println!(
                "SEAL_KEYS={}",
                contoso_platform::seal::generate_key_ring(&seal_key_id)?
            );
            Ok(())
        }
        Command::Token {
            sub,
            ttl_secs,
            auth,
        } => {
            let auth = contoso_platform::auth::Authenticator::new(&auth.or_dev_secret())?;
            let sub = contoso_domain::UserId::parse(sub)?;
            println!(
                "{}",
                auth.issue(&sub, std::time::Duration::from_secs(ttl_secs))?
            );
            Ok(())
        }
    }
}
