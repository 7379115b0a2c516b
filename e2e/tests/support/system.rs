//! Whole systems a test owns: the four service binaries on a private nats-server, a fresh
//! Postgres database and a Redis key prefix of their own ([`System`]), or `contoso dev` on its
//! embedded defaults ([`DevSystem`]).

use std::{net::SocketAddr, process::Command};

use contoso_testkit::{NatsServer, TestDatabase, free_port, redis_url, unique_name};
use diesel::{pg::Pg, sql_types::BigInt};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{
    http,
    process::{Service, binary, run_to_completion},
    rest::RestClient,
    rpc::Client,
};

const JWT_ISSUER: &str = "contoso-e2e";
const JWT_AUDIENCE: &str = "contoso-orders-e2e";
/// A key ring of the tests' own, so accept-svc and process-svc must agree on configured keys.
pub(crate) const SEAL_KEYS: &str = "e2e:ZTJlLW9ubHktc2VhbC1rZXktMzItYnl0ZXMtbG9uZyE=";

/// accept-svc, process-svc, notify-svc and the gateway, each its own process, on real Postgres,
/// Redis and NATS. Fields drop in order: the services stop before their backends go away.
#[derive(Debug)]
pub(crate) struct System {
    accept: Service,
    _process: Service,
    notify: Service,
    _gateway: Service,
    accept_addr: SocketAddr,
    process_addr: SocketAddr,
    notify_addr: SocketAddr,
    gateway_addr: SocketAddr,
    nats: NatsServer,
    database: TestDatabase,
    redis_prefix: String,
    jwt_secret: String,
    /// The environment each service was started with, by binary name.
    service_envs: Vec<(&'static str, Vec<(&'static str, String)>)>,
    runtime: tokio::runtime::Runtime,
    logs: TempDir,
}

impl System {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`System::start`], with `extra` in every service's environment (e.g. `OTEL_*`).
    pub(crate) fn start_with(extra: &[(&'static str, String)]) -> Self {
        let logs = tempfile::tempdir().expect("a temp dir for service logs");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the Postgres fixture");
        let nats = NatsServer::start();
        let database = runtime.block_on(TestDatabase::create());
        let redis_prefix = format!("{}:", unique_name("e2e"));
        let jwt_secret = unique_name("e2e-jwt-secret-of-this-test-only-");

        run_to_completion(
            Command::new(binary("contoso"))
                .args(["migrate", "--database-url", database.url()])
                .env_clear()
                .env("RUST_LOG", "warn"),
        );

        let [accept_addr, process_addr, notify_addr, gateway_addr] =
            [(); 4].map(|()| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let auth = auth_env(&jwt_secret);
        let backends = [
            ("DATABASE_URL", database.url().to_owned()),
            ("NATS_URL", nats.url()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", redis_prefix.clone()),
        ];
        let common = extra;
        let env =
            |listen: SocketAddr, extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
                let mut env = vec![
                    ("LISTEN_ADDR", listen.to_string()),
                    ("SEAL_KEYS", SEAL_KEYS.to_owned()),
                ];
                env.extend(auth.iter().cloned());
                env.extend(backends.iter().cloned());
                env.extend(common.iter().cloned());
                env.extend(extra.iter().cloned());
                env
            };
        let mut service_envs = Vec::new();
        let mut start = |name: &'static str, listen, extra: &[(&'static str, String)]| {
            let env = env(listen, extra);
            let service = Service::start(name, &binary(name), &[], &env, logs.path());
            service_envs.push((name, env));
            service
        };
        // process-svc migrates again on start: replicas do that in production, so it must be a no-op.
        let mut process = start(
            "process-svc",
            process_addr,
            &[("MIGRATE_ON_START", "true".to_owned())],
        );
        let mut accept = start("accept-svc", accept_addr, &[]);
        // A heartbeat every second tells a test quickly that its stream is open.
        let mut notify = start(
            "notify-svc",
            notify_addr,
            &[("HEARTBEAT_INTERVAL_SECS", "1".to_owned())],
        );
        let mut gateway = start(
            "gateway",
            gateway_addr,
            &[
                ("ACCEPT_GRPC_URL", format!("http://{accept_addr}")),
                ("NOTIFY_GRPC_URL", format!("http://{notify_addr}")),
            ],
        );
        process.wait_ready(process_addr);
        accept.wait_ready(accept_addr);
        notify.wait_ready(notify_addr);
        gateway.wait_ready(gateway_addr);

        Self {
            accept,
            _process: process,
            notify,
            _gateway: gateway,
            accept_addr,
            process_addr,
            notify_addr,
            gateway_addr,
            nats,
            database,
            redis_prefix,
            jwt_secret,
            service_envs,
            runtime,
            logs,
        }
    }

    /// The environment `service` runs with here (its secrets included).
    pub(crate) fn service_env(&self, service: &str) -> &[(&'static str, String)] {
        self.service_envs
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, env)| env.as_slice())
            .unwrap_or_else(|| panic!("{service} is not part of the system"))
    }

    /// Each service's port (`/metrics`, `/readyz`), by binary name.
    pub(crate) fn ports(&self) -> [(&'static str, SocketAddr); 4] {
        [
            ("gateway", self.gateway_addr),
            ("accept-svc", self.accept_addr),
            ("process-svc", self.process_addr),
            ("notify-svc", self.notify_addr),
        ]
    }

    /// grpcurl against accept-svc (catalog and orders).
    pub(crate) fn accept(&self) -> Client {
        Client::Grpc(self.accept_addr)
    }

    /// grpcurl against notify-svc (status streams).
    pub(crate) fn notify(&self) -> Client {
        Client::Grpc(self.notify_addr)
    }

    /// buf curl, grpc-web, against the gateway.
    pub(crate) fn gateway_web(&self) -> Client {
        Client::GrpcWeb(self.gateway_addr)
    }

    /// The gateway's REST API, through curl.
    pub(crate) fn rest(&self) -> RestClient {
        RestClient::new(self.gateway_addr)
    }

    /// A token for `user` from `contoso token`, configured like the services.
    pub(crate) fn token(&self, user: &str) -> String {
        issue_token(user, &self.jwt_secret)
    }

    /// A well-formed token for `user` signed with a secret the services do not know.
    pub(crate) fn forged_token(&self, user: &str) -> String {
        issue_token(user, &unique_name("a-secret-nobody-configured-anywhere-"))
    }

    /// A token for `user` signed with the right secret that expired ten minutes ago (beyond any
    /// clock-skew leeway). `contoso token` only issues live tokens, so this one is made here.
    pub(crate) fn expired_token(&self, user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let claims = json!({
            "sub": user, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now - 3600, "exp": now - 600,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )
        .expect("signing a token")
    }

    /// `contoso bench` pointed at this system: its endpoints, its JWT settings and, for `--raw`,
    /// its Postgres, Redis (with the key prefix) and NATS.
    pub(crate) fn bench(&self) -> Command {
        let mut command = bench_command(self.accept_addr, self.notify_addr, self.gateway_addr);
        command.envs(auth_env(&self.jwt_secret)).envs(
            self.service_env("process-svc")
                .iter()
                .filter(|(k, _)| {
                    ["DATABASE_URL", "NATS_URL", "REDIS_URL", "REDIS_KEY_PREFIX"].contains(k)
                })
                .map(|(k, v)| (*k, v.as_str())),
        );
        command
    }

    /// Kills notify-svc (SIGKILL: its streams end without a goodbye) and starts it again on the
    /// same address with the same environment; returns once it is ready.
    pub(crate) fn restart_notify(&mut self) {
        self.notify.kill();
        let env = self.service_env("notify-svc").to_vec();
        self.notify = Service::start(
            "notify-svc-restarted",
            &binary("notify-svc"),
            &[],
            &env,
            self.logs.path(),
        );
        self.notify.wait_ready(self.notify_addr);
    }

    /// notify-svc's process id (its memory is read from /proc).
    pub(crate) fn notify_pid(&self) -> u32 {
        self.notify.pid()
    }

    /// Kills the nats-server; its store stays for [`Self::restart_broker`].
    pub(crate) fn stop_broker(&mut self) {
        self.nats.stop();
    }

    pub(crate) fn restart_broker(&mut self) {
        self.nats.restart();
    }

    /// Waits until accept-svc reports ready again (its checks include the broker connection).
    pub(crate) fn wait_accept_ready(&mut self) {
        self.accept.wait_ready(self.accept_addr);
    }

    /// `SELECT count(*) AS n ...` against the test's database, with text parameters `$1...`.
    pub(crate) fn count(&self, sql: &str, params: &[&str]) -> i64 {
        count_in(&self.runtime, self.database.url(), sql, params)
    }

    /// Redis keys under this test's prefix matching `pattern` (e.g. `order:map:*`).
    pub(crate) fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = redis_connection();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{pattern}", self.redis_prefix))
            .query(&mut conn)
            .expect("KEYS on the test's prefix");
        keys.sort();
        keys
    }

    /// The fields of the Redis hash `key` under this test's prefix.
    pub(crate) fn redis_hash_fields(&self, key: &str) -> Vec<String> {
        let mut conn = redis_connection();
        redis::cmd("HKEYS")
            .arg(format!("{}{key}", self.redis_prefix))
            .query(&mut conn)
            .expect("HKEYS on the test's prefix")
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Workflow keys carry a TTL anyway; removing them keeps a shared Redis tidy.
        let keys = self.redis_keys("*");
        if !keys.is_empty() {
            let _ = redis::cmd("DEL")
                .arg(keys)
                .query::<i64>(&mut redis_connection());
        }
    }
}

/// `contoso dev`: all four services in one process on the embedded in-memory backends.
#[derive(Debug)]
pub(crate) struct DevSystem {
    service: Service,
    gateway_addr: SocketAddr,
    accept_addr: SocketAddr,
    notify_addr: SocketAddr,
    _logs: TempDir,
}

impl DevSystem {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`DevSystem::start`] with exactly `env` as its environment (e.g. `OTEL_*`).
    pub(crate) fn start_with(env: &[(&'static str, String)]) -> Self {
        let logs = tempfile::tempdir().expect("a temp dir for the dev log");
        let [gateway_addr, accept_addr, notify_addr] =
            [(); 3].map(|()| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let args = [
            "dev".to_owned(),
            format!("--gateway-addr={gateway_addr}"),
            format!("--accept-addr={accept_addr}"),
            format!("--notify-addr={notify_addr}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Nothing but `env`: the embedded defaults, whatever the developer's shell holds.
        let mut service =
            Service::start("contoso-dev", &binary("contoso"), &args, env, logs.path());
        for addr in [gateway_addr, accept_addr, notify_addr] {
            service.wait_ready(addr);
        }
        Self {
            service,
            gateway_addr,
            accept_addr,
            notify_addr,
            _logs: logs,
        }
    }

    /// `POST /dev/token` on the gateway with the seed's body shape.
    pub(crate) fn dev_token(&self, user: &str) -> String {
        let response = http::post_json(self.gateway_addr, "/dev/token", &json!({ "userId": user }))
            .unwrap_or_else(|e| panic!("POST /dev/token: {e}\n{}", self.service.log_tail()));
        assert_eq!(
            response.status, 200,
            "POST /dev/token answered {}: {}",
            response.status, response.body
        );
        let body: Value =
            serde_json::from_str(&response.body).expect("the dev token response is JSON");
        body["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no accessToken in {body}"))
            .to_owned()
    }

    pub(crate) fn accept(&self) -> Client {
        Client::Grpc(self.accept_addr)
    }

    /// The gateway's port: one process, so its `/metrics` shows every service's.
    pub(crate) fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    pub(crate) fn gateway_web(&self) -> Client {
        Client::GrpcWeb(self.gateway_addr)
    }

    /// `contoso bench` pointed at this `contoso dev` (its development JWT secret included).
    pub(crate) fn bench(&self) -> Command {
        bench_command(self.accept_addr, self.notify_addr, self.gateway_addr)
    }

    /// The gateway's REST API, through curl.
    pub(crate) fn rest(&self) -> RestClient {
        RestClient::new(self.gateway_addr)
    }
}

/// `contoso bench` against these endpoints, with a clean environment.
fn bench_command(accept: SocketAddr, notify: SocketAddr, gateway: SocketAddr) -> Command {
    let mut command = Command::new(binary("contoso"));
    command
        .arg("bench")
        .arg(format!("--accept-url=http://{accept}"))
        .arg(format!("--notify-url=http://{notify}"))
        .arg(format!("--gateway-url=http://{gateway}"))
        .env_clear()
        .env("RUST_LOG", "warn");
    command
}

pub(crate) fn auth_env(secret: &str) -> [(&'static str, String); 3] {
    [
        ("JWT_SECRET", secret.to_owned()),
        ("JWT_ISSUER", JWT_ISSUER.to_owned()),
        ("JWT_AUDIENCE", JWT_AUDIENCE.to_owned()),
    ]
}

pub(crate) fn issue_token(user: &str, secret: &str) -> String {
    let mut command = Command::new(binary("contoso"));
    command
        .args(["token", "--sub", user])
        .env_clear()
        .env("RUST_LOG", "off")
        .envs(auth_env(secret));
    let token = run_to_completion(&mut command).trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "`contoso token` printed something other than a JWT: {token}"
    );
    token
}

fn redis_connection() -> redis::Connection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|e| panic!("connecting to Redis at {url}: {e}"))
}

/// The scaled-out shape on one machine: a 3-node NATS JetStream cluster with the stream on all
/// three (R3), two accept-svc, two process-svc and two notify-svc on one Postgres and Redis, and the
/// gateway in front of the first accept-svc and notify-svc. Fields drop in order: services first.
#[derive(Debug)]
pub(crate) struct ScaledOut {
    pub(crate) accept: Vec<(Service, SocketAddr)>,
    pub(crate) process: Vec<Service>,
    pub(crate) notify: Vec<(Service, SocketAddr)>,
    _gateway: Service,
    pub(crate) gateway_addr: SocketAddr,
    pub(crate) nats: contoso_testkit::NatsCluster,
    database: TestDatabase,
    jwt_secret: String,
    runtime: tokio::runtime::Runtime,
    _logs: TempDir,
}

impl ScaledOut {
    pub(crate) fn start() -> Self {
        let logs = tempfile::tempdir().expect("a temp dir for service logs");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the Postgres fixture");
        let nats = contoso_testkit::NatsCluster::start();
        let database = runtime.block_on(TestDatabase::create());
        let jwt_secret = unique_name("e2e-jwt-secret-of-this-test-only-");
        run_to_completion(
            Command::new(binary("contoso"))
                .args(["migrate", "--database-url", database.url()])
                .env_clear()
                .env("RUST_LOG", "warn"),
        );
        let mut env: Vec<(&'static str, String)> = vec![
            ("SEAL_KEYS", SEAL_KEYS.to_owned()),
            ("DATABASE_URL", database.url().to_owned()),
            ("NATS_URL", nats.urls()),
            ("NATS_STREAM_REPLICAS", "3".to_owned()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", format!("{}:", unique_name("scale"))),
            ("HEARTBEAT_INTERVAL_SECS", "1".to_owned()),
        ];
        env.extend(auth_env(&jwt_secret));
        let start = |name: &'static str, n: usize, extra: &[(&'static str, String)]| {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut all = env.clone();
            all.push(("LISTEN_ADDR", addr.to_string()));
            all.extend(extra.iter().cloned());
            let service = Service::start(
                &format!("{name}-{n}"),
                &binary(name),
                &[],
                &all,
                logs.path(),
            );
            (service, addr)
        };
        // The first one creates the replicated streams; the others then find them in place
        // instead of all racing to create them on a cluster that has just formed.
        let mut first = start("process-svc", 1, &[]);
        first.0.wait_ready(first.1);
        let mut process = vec![first, start("process-svc", 2, &[])];
        let mut accept: Vec<_> = (1..=2).map(|n| start("accept-svc", n, &[])).collect();
        let mut notify: Vec<_> = (1..=2).map(|n| start("notify-svc", n, &[])).collect();
        let (mut gateway, gateway_addr) = start(
            "gateway",
            1,
            &[
                ("ACCEPT_GRPC_URL", format!("http://{}", accept[0].1)),
                ("NOTIFY_GRPC_URL", format!("http://{}", notify[0].1)),
            ],
        );
        for (service, addr) in process.iter_mut().chain(&mut accept).chain(&mut notify) {
            service.wait_ready(*addr);
        }
        gateway.wait_ready(gateway_addr);
        Self {
            accept,
            process: process.into_iter().map(|(s, _)| s).collect(),
            notify,
            _gateway: gateway,
            gateway_addr,
            nats,
            database,
            jwt_secret,
            runtime,
            _logs: logs,
        }
    }

    pub(crate) fn token(&self, user: &str) -> String {
        issue_token(user, &self.jwt_secret)
    }

    /// One number from `sql` (a query selecting `n`).
    pub(crate) fn count(&self, sql: &str) -> i64 {
        count_in(&self.runtime, self.database.url(), sql, &[])
    }
}

/// One number (a column `n`) from `sql` with `params` bound as text, on the database at `url`.
pub(crate) fn count_in(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    sql: &str,
    params: &[&str],
) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    runtime.block_on(async {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database {url}: {e}"));
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for param in params {
            query = query.bind::<diesel::sql_types::Text, _>(param.to_string());
        }
        let count: Count = query
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        count.n
    })
}
