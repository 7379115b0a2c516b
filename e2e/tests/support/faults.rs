//! The world of the fault suite: the real binaries (two accept-svc, two process-svc, one
//! notify-svc) on a private nats-server and a private redis-server, which a test may restart, kill
//! or flush, and a fresh Postgres database that the services reach through a proxy a test can cut.
//! Every service can be killed (SIGKILL) and started again on its address.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    process::Command,
};

use contoso_testkit::{NatsServer, RedisServer, TestDatabase, free_port, unique_name};
use tempfile::TempDir;

use super::{
    process::{Service, binary, run_to_completion},
    proxy::CuttableProxy,
    system::{SEAL_KEYS, auth_env, count_in, issue_token},
};

/// One service process and how to start it again.
#[derive(Debug)]
pub(crate) struct Restartable {
    pub(crate) name: String,
    program: PathBuf,
    pub(crate) addr: SocketAddr,
    env: Vec<(&'static str, String)>,
    pub(crate) service: Option<Service>,
}

impl Restartable {
    /// SIGKILL: no drain, no goodbye.
    pub(crate) fn kill(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts it again on the same address and waits until it is ready.
    pub(crate) fn restart(&mut self, logs: &std::path::Path) {
        self.kill();
        let mut service = Service::start(&self.name, &self.program, &[], &self.env, logs);
        service.wait_ready(self.addr);
        self.service = Some(service);
    }
}

#[derive(Debug)]
pub(crate) struct FaultWorld {
    pub(crate) accept: Vec<Restartable>,
    pub(crate) process: Vec<Restartable>,
    pub(crate) notify: Restartable,
    pub(crate) nats: NatsServer,
    /// Between the process-svc replicas and nats-server, so a test can cut a worker off the
    /// broker between its Postgres commit and its ack.
    pub(crate) process_nats: CuttableProxy,
    /// Between the services and Postgres.
    pub(crate) postgres: CuttableProxy,
    /// Private, so a Redis fault harms no other test.
    pub(crate) redis: RedisServer,
    database: TestDatabase,
    jwt_secret: String,
    runtime: tokio::runtime::Runtime,
    pub(crate) logs: TempDir,
}

impl FaultWorld {
    pub(crate) fn start() -> Self {
        let logs = tempfile::tempdir().expect("a temp dir for service logs");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the Postgres fixture");
        let nats = NatsServer::start();
        let redis = RedisServer::start();
        let database = runtime.block_on(TestDatabase::create());
        let jwt_secret = unique_name("e2e-jwt-secret-of-this-test-only-");
        run_to_completion(
            Command::new(binary("contoso"))
                .args(["migrate", "--database-url", database.url()])
                .env_clear()
                .env("RUST_LOG", "warn"),
        );
        let (postgres, services_url) = through_proxy(database.url());
        let (process_nats, process_nats_url) = through_proxy(&nats.url());
        let mut env: Vec<(&'static str, String)> = vec![
            ("SEAL_KEYS", SEAL_KEYS.to_owned()),
            ("DATABASE_URL", services_url),
            ("NATS_URL", nats.url()),
            ("REDIS_URL", redis.url()),
            ("HEARTBEAT_INTERVAL_SECS", "1".to_owned()),
            // Fast redelivery of what a killed worker held.
            ("ACK_WAIT_SECS", "5".to_owned()),
        ];
        env.extend(auth_env(&jwt_secret));
        let make = |name: &str, n: usize| {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut all = env.clone();
            all.push(("LISTEN_ADDR", addr.to_string()));
            if name == "process-svc" {
                all.retain(|(key, _)| *key != "NATS_URL");
                all.push(("NATS_URL", process_nats_url.clone()));
            }
            let mut r = Restartable {
                name: format!("{name}-{n}"),
                program: binary(name),
                addr,
                env: all,
                service: None,
            };
            r.restart(logs.path());
            r
        };
        // The first worker creates the streams before the others race to.
        let first = make("process-svc", 1);
        let process = vec![first, make("process-svc", 2)];
        let accept = vec![make("accept-svc", 1), make("accept-svc", 2)];
        let notify = make("notify-svc", 1);
        Self {
            accept,
            process,
            notify,
            nats,
            process_nats,
            postgres,
            redis,
            database,
            jwt_secret,
            runtime,
            logs,
        }
    }

    pub(crate) fn token(&self, user: &str) -> String {
        issue_token(user, &self.jwt_secret)
    }

    /// One number (a column `n`) from `sql`.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        count_in(&self.runtime, self.database.url(), sql, &[])
    }
}

/// A proxy in front of the server of `url` (`postgres://user@host:port/db`,
/// `nats://host:port`), and the same URL pointing at the proxy.
fn through_proxy(url: &str) -> (CuttableProxy, String) {
    let authority = url.find("://").map_or(0, |scheme| scheme + 3);
    let after_at = url[authority..]
        .find('@')
        .map_or(authority, |at| authority + at + 1);
    let end = url[after_at..]
        .find('/')
        .map_or(url.len(), |slash| after_at + slash);
    let host_port = &url[after_at..end];
    let upstream = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("the database address {host_port:?} does not resolve"));
    let proxy = CuttableProxy::start(upstream);
    let proxied = format!("{}{}{}", &url[..after_at], proxy.addr, &url[end..]);
    (proxy, proxied)
}
