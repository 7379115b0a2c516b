//! The gateway binary: configuration from flags or the environment, then [`gateway::run`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{ArgAction, Parser, builder::BoolishValueParser};
use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    server::{Readiness, ServerArgs, bind},
};

/// Serves grpc-web and gRPC (forwarded to accept-svc and notify-svc), the SPA and the dev login.
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Args {
    /// Address to listen on (gRPC, grpc-web and HTTP share it).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// accept-svc's gRPC endpoint (catalog and orders).
    #[arg(
        long = "accept-grpc-url",
        env = "ACCEPT_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    accept_url: String,
    /// notify-svc's gRPC endpoint (order status streams).
    #[arg(
        long = "notify-grpc-url",
        env = "NOTIFY_GRPC_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    notify_url: String,
    /// Directory of the built SPA (with index.html); unset serves a short note at `/`.
    #[arg(long = "web-dir", env = "WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Enables `POST /dev/token`, which issues a token for any user. Never in production.
    #[arg(
        long = "dev-auth",
        env = "DEV_AUTH",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    dev_auth: bool,
    /// Lifetime of dev tokens, in seconds.
    #[arg(
        long = "dev-token-ttl-secs",
        env = "DEV_TOKEN_TTL_SECS",
        default_value_t = 3600
    )]
    dev_token_ttl_secs: u64,
    /// Origins allowed to call the REST API from a browser (CORS), comma-separated, e.g.
    /// `http://localhost:5173`; empty allows the gateway's own origin only.
    #[arg(
        long = "cors-allowed-origins",
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    #[command(flatten)]
    oidc: gateway::OidcArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.server.probe {
        std::process::exit(contoso_platform::server::probe_readiness(args.listen));
    }
    let telemetry = contoso_platform::telemetry::init("gateway")?;
    let served = serve(args).await;
    // Also after a failure: its spans say what went wrong.
    telemetry.shutdown().await;
    served
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // The keys first: a deployment that forgot them stops here.
    let auth = Authenticator::new(&args.auth)?;
    let oidc = args.oidc.settings()?;
    // Readiness is draining only: an upstream that is down answers UNAVAILABLE through us, and
    // making the gateway unready with it would empty the whole front door during a blip.
    let deps = gateway::Deps {
        auth: Arc::new(auth),
        readiness: Readiness::new(),
    };
    let settings = gateway::Settings {
        accept_url: args.accept_url,
        notify_url: args.notify_url,
        web_dir: args.web_dir,
        dev_auth: args.dev_auth,
        dev_token_ttl: Duration::from_secs(args.dev_token_ttl_secs),
        oidc,
        cors_origins: args.cors_origins,
        server: args.server.limits(),
    };
    let listener = bind(args.listen).await?;
    gateway::run(
        listener,
        deps,
        settings,
        contoso_platform::shutdown::on_signal(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn the_identity_provider_flags_default_their_scope_and_go_together() {
        let parse = |argv: &[&str]| Args::try_parse_from(argv).unwrap().oidc.settings();
        assert_eq!(parse(&["gateway"]).unwrap(), None);
        let with = parse(&[
            "gateway",
            "--oidc-authority=https://idp.example.test",
            "--oidc-client-id=shop",
        ])
        .unwrap();
        assert!(with.is_some());
        let args = Args::try_parse_from(["gateway"]).unwrap();
        assert_eq!(args.oidc.oidc_scope, gateway::DEFAULT_OIDC_SCOPE);
        assert!(parse(&["gateway", "--oidc-client-id=shop"]).is_err());
    }

    #[test]
    fn dev_auth_is_a_flag_that_also_takes_a_value() {
        let parse = |argv: &[&str]| Args::try_parse_from(argv).map(|a| a.dev_auth);
        assert!(parse(&["gateway", "--dev-auth"]).unwrap());
        assert!(!parse(&["gateway", "--dev-auth=false"]).unwrap());
        assert!(parse(&["gateway", "--dev-auth=yes"]).unwrap());
    }
}
