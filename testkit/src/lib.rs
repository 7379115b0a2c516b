//! Fixtures for tests that own their world. Each test gets its own `nats-server` (temp store, free
//! port, killed on drop), its own Postgres database (dropped on drop), and its own Redis key
//! prefix; a test that kills Redis connections or restarts Redis gets a private `redis-server`.
//! Nothing here sleeps to synchronise: readiness is polled with a deadline.
//!
//! Environment: `NATS_SERVER_BIN` (default: `nats-server` on `PATH`, must be 2.10 or newer),
//! `REDIS_SERVER_BIN` (default: `redis-server` on `PATH`),
//! `TEST_DATABASE_ADMIN_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Waits until something accepts TCP connections on `addr`, or panics after `deadline`.
pub fn wait_for_port(addr: SocketAddr, deadline: Duration) {
    let until = Instant::now() + deadline;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < until,
            "nothing listened on {addr} within {deadline:?}"
        );
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Polls `condition` until it holds, or panics naming `what` after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < until,
            "not true within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A unique prefix for Redis keys, channels and NATS subjects/streams of one test.
pub fn unique_name(label: &str) -> String {
    format!(
        "t{}{}",
        label,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The binary to run: the environment variable `var` if set, else `default` on `PATH`.
fn server_bin(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// The `nats-server` binary to run: `NATS_SERVER_BIN`, else the one on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    server_bin("NATS_SERVER_BIN", "nats-server")
}

/// The `redis-server` binary to run: `REDIS_SERVER_BIN`, else the one on `PATH`.
pub fn redis_server_bin() -> PathBuf {
    server_bin("REDIS_SERVER_BIN", "redis-server")
}

/// A server process of a test on a fixed free port: started and awaited, killed on drop.
#[derive(Debug)]
struct ServerProcess {
    child: Option<Child>,
    port: u16,
}

impl ServerProcess {
    fn new() -> Self {
        Self {
            child: None,
            port: free_port(),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops any running instance, runs `command`, and waits until it listens on the port.
    fn restart(&mut self, mut command: Command, install_hint: &str) {
        self.stop();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {:?} ({install_hint}): {e}", command.get_program())
            });
        self.child = Some(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(15),
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private JetStream-enabled `nats-server` on a free port with a temporary store.
#[derive(Debug)]
pub struct NatsServer {
    process: ServerProcess,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("creating a temp dir for JetStream");
        let mut server = Self {
            process: ServerProcess::new(),
            store,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.port)
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Kills the server (its store stays, so a restart keeps the streams).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port and store, and waits until it listens.
    pub fn restart(&mut self) {
        let mut command = Command::new(nats_server_bin());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.process.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path());
        self.process
            .restart(command, "set NATS_SERVER_BIN to a 2.10+ nats-server");
    }
}

/// Three JetStream `nats-server`s clustered on loopback (free client and cluster ports, one temp
/// store each, killed on drop): a stream with 3 replicas survives any one of them.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    name: String,
}

#[derive(Debug)]
struct ClusterNode {
    process: ServerProcess,
    cluster_port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes and waits until each knows the JetStream meta leader (so a replicated
    /// stream can be created).
    pub fn start() -> Self {
        let nodes = (0..3)
            .map(|_| ClusterNode {
                process: ServerProcess::new(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: tempfile::tempdir().expect("creating a temp dir for JetStream"),
            })
            .collect();
        let mut cluster = Self {
            nodes,
            name: unique_name("cluster"),
        };
        for i in 0..3 {
            cluster.restart(i);
        }
        for i in 0..3 {
            cluster.wait_healthy(i, Duration::from_secs(30));
        }
        cluster
    }

    /// Waits until node `i` knows the cluster's JetStream meta leader (its monitoring `/jsz`
    /// names one), so a replicated stream can be created through it, or panics after `deadline`.
    pub fn wait_healthy(&self, i: usize, deadline: Duration) {
        use std::io::{Read as _, Write as _};
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor_port));
        let until = Instant::now() + deadline;
        loop {
            let body = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).and_then(
                |mut stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                    stream.write_all(
                        b"GET /jsz HTTP/1.1\r\nHost: nats\r\nConnection: close\r\n\r\n",
                    )?;
                    let mut body = String::new();
                    stream.read_to_string(&mut body)?;
                    Ok(body)
                },
            );
            if body.is_ok_and(|b| b.contains("\"leader\":")) {
                return;
            }
            assert!(
                Instant::now() < until,
                "NATS node {i} knew no JetStream leader within {deadline:?}"
            );
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// Every node's client URL, comma-separated (what NATS_URL takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.process.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` (its store stays).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].process.stop();
    }

    /// Starts node `i` again on its ports and store, and waits until it listens.
    pub fn restart(&mut self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let mut command = Command::new(nats_server_bin());
        command
            .args(["-a", "127.0.0.1", "-p", &node.process.port.to_string()])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["--server_name", &format!("{}-n{i}", self.name)])
            .args(["--cluster_name", &self.name])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes])
            .args(["-js", "-sd"])
            .arg(node.store.path());
        self.nodes[i]
            .process
            .restart(command, "set NATS_SERVER_BIN to a 2.10+ nats-server");
    }
}

/// A private `redis-server` on a free port that persists nothing, for tests that kill its
/// connections or restart it and so must leave the shared Redis alone.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            process: ServerProcess::new(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port)
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// Kills the server; its data is gone.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts an empty server again on the same port, and waits until it listens.
    pub fn restart(&mut self) {
        let mut command = Command::new(redis_server_bin());
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.process.port.to_string(),
            ])
            .args(["--save", "", "--appendonly", "no"]);
        self.process
            .restart(command, "install redis-server, or set REDIS_SERVER_BIN");
    }
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty Postgres database for one test, dropped when this value drops.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = unique_name("db_");
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to {admin} to create a test database: {e}"));
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE for a test");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime, which cannot block on another; a plain thread can.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin_url()).await.ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
