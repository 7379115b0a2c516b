//! The scaffolding every gRPC server shares: the standard health service, server reflection (v1 and
//! v1alpha, so grpcurl 1.8 and buf curl both work), grpc-web, `/healthz`, `/readyz` and `/metrics`
//! on the same port, a server span and RED metrics per call, bounded request handling, and a drain
//! with a deadline when shutdown fires.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
};
use tonic_health::ServingStatus;
use tonic_web::GrpcWebLayer;
use tower::Layer;

type Check = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// What `/readyz` reports: every named dependency check passes and the server is not draining.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("draining", &self.draining)
            .finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency check, e.g. `("redis", || state.is_ready())`.
    pub fn with_check<F>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, bool> + Send + Sync + 'static,
    {
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Adds a check that asks a shared adapter, e.g.
    /// `.probe("redis", state.clone(), |s| async move { s.is_ready().await })`.
    pub fn probe<T, F, Fut>(self, name: &'static str, target: T, probe: F) -> Self
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        self.with_check(name, move || Box::pin(probe(target.clone())))
    }

    /// Runs every check at once, each bounded by [`CHECK_TIMEOUT`] (a hanging dependency counts
    /// as not ready), so the report comes within about that long; `(all ready, per-check results)`.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        let results =
            futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
                let ok = tokio::time::timeout(CHECK_TIMEOUT, check())
                    .await
                    .unwrap_or(false);
                (*name, ok)
            }))
            .await;
        let mut all = !self.draining.load(Ordering::Relaxed);
        let mut details = serde_json::Map::new();
        for (name, ok) in results {
            all &= ok;
            details.insert(name.to_owned(), serde_json::Value::Bool(ok));
        }
        details.insert(
            "draining".into(),
            self.draining.load(Ordering::Relaxed).into(),
        );
        (all, serde_json::Value::Object(details))
    }

    /// Reports not-ready from now on (shutdown has begun); `serve` calls it when shutdown fires.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Server limits from the environment (12-factor), shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Calls in flight on one HTTP/2 connection.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Largest gRPC message a service decodes, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Deadline of a unary call, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// HTTP/2 keepalive ping interval, in seconds.
    #[arg(long, env = "KEEPALIVE_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_interval_secs: u64,
    /// How long a keepalive ping may go unanswered before the connection is closed, in seconds.
    #[arg(long, env = "KEEPALIVE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_timeout_secs: u64,
    /// How long in-flight calls may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "DRAIN_DEADLINE_SECS", default_value_t = 10)]
    pub drain_deadline_secs: u64,
    /// Instead of serving: ask the service running on LISTEN_ADDR whether it is ready and exit 0
    /// (ready) or 1 (not). The container health check of images without a shell or curl.
    #[arg(long)]
    pub probe: bool,
}

impl ServerArgs {
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_message_bytes: self.max_message_bytes,
            keepalive_interval: Duration::from_secs(self.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs),
            drain_deadline: Duration::from_secs(self.drain_deadline_secs),
        }
    }
}

/// Limits and deadlines of one server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Deadline for a unary call (a stream's deadline covers only its start).
    pub request_timeout: Duration,
    /// Calls in flight on one HTTP/2 connection. There is deliberately no per-connection limit on
    /// top of this: the gateway multiplexes every user's status stream onto one connection per
    /// upstream, so such a limit would queue the streams of unrelated users behind each other.
    pub max_concurrent_streams: u32,
    /// Largest gRPC message a service decodes; each service applies it to its generated servers
    /// (`max_decoding_message_size`), since tonic sets it per service.
    pub max_message_bytes: usize,
    /// HTTP/2 keepalive: a ping this often, and the connection closed when one goes unanswered
    /// for `keepalive_timeout`.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How long in-flight calls may take to finish after shutdown fires.
    pub drain_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            drain_deadline: Duration::from_secs(10),
        }
    }
}

/// One listening server: the service's gRPC services plus the shared extras.
#[derive(Debug, Default)]
pub struct GrpcHost {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    http: Option<Router>,
    readiness: Readiness,
    limits: ServerLimits,
}

impl GrpcHost {
    pub fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            ..Self::default()
        }
    }

    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a gRPC service; the health service reports it by name.
    pub fn add_service<S, B>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        // grpc-web per service, not around the whole server: tonic-web answers 400 to any other
        // HTTP/1.1 request, which would break `/healthz` probes and plain HTTP routes.
        self.routes.add_service(GrpcWebLayer::new().layer(service));
        self.names.push(S::NAME);
        self
    }

    /// Plain HTTP routes served beside gRPC on the same port (REST, static files, dev login).
    pub fn merge_http(mut self, router: Router) -> Self {
        self.http = Some(match self.http.take() {
            Some(existing) => existing.merge(router),
            None => router,
        });
        self
    }

    /// Serves until `shutdown` fires, then stops accepting, reports NOT_SERVING, and lets in-flight
    /// calls finish within the drain deadline.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &self.names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;

        let mut routes = self.routes;
        let web = GrpcWebLayer::new();
        routes.add_service(web.layer(health_service));
        routes.add_service(web.layer(reflection_v1()?));
        routes.add_service(web.layer(reflection_v1alpha()?));
        let mut router = routes
            .routes()
            .into_axum_router()
            .merge(probe_router(self.readiness.clone()));
        if let Some(http) = self.http {
            router = router.merge(http);
        }
        // After every merge: a route layer sees the matched route, and wraps every route.
        crate::telemetry::register_server_metrics();
        let router = router.layer(axum::middleware::from_fn(crate::telemetry::server_layer));

        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .timeout(self.limits.request_timeout)
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(self.limits.keepalive_interval))
            .http2_keepalive_timeout(Some(self.limits.keepalive_timeout))
            .add_routes(Routes::from(router));

        let readiness = self.readiness;
        let names = self.names;
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                readiness.start_draining();
                for name in &names {
                    health
                        .set_service_status(*name, ServingStatus::NotServing)
                        .await;
                }
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                tracing::info!(%addr, "server draining");
            }
        };
        tracing::info!(%addr, "server listening");
        let serving = server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.limits.drain_deadline).await;
        };
        tokio::select! {
            result = serving => result?,
            () = deadline => tracing::warn!(%addr, "drain deadline passed; closing remaining connections"),
        }
        tracing::info!(%addr, "server stopped");
        Ok(())
    }
}

/// How long `--probe` waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz` on the service listening on `listen` (an unspecified address is asked on
/// loopback): 0 when it answers 200, 1 otherwise. Blocking, for `--probe` before any runtime work.
pub fn probe_readiness(listen: SocketAddr) -> i32 {
    use std::io::{Read as _, Write as _};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut head = [0u8; 16];
        let n = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    })();
    match answer {
        Ok(line) if line.starts_with("HTTP/1.1 200") => 0,
        Ok(line) => {
            eprintln!("not ready: {}", line.lines().next().unwrap_or_default());
            1
        }
        Err(e) => {
            eprintln!("not ready: {addr}: {e}");
            1
        }
    }
}

/// Binds `addr`; port 0 picks a free port (read it back with `local_addr`).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}

fn reflection_v1() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(contoso_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

fn reflection_v1alpha() -> anyhow::Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(contoso_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?)
}

/// `/healthz` (the process is up), `/readyz` (dependencies reachable, not draining) and
/// `/metrics` (Prometheus).
pub fn probe_router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::telemetry::metrics_handler))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, checks) = readiness.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks });
    (status, Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_runs_its_checks_at_once_and_counts_a_hanging_one_as_not_ready() {
        let hang = || -> BoxFuture<'static, bool> { Box::pin(futures::future::pending()) };
        let readiness = Readiness::new()
            .with_check("postgres", hang)
            .with_check("redis", hang)
            .with_check("nats", || Box::pin(async { true }));
        let started = tokio::time::Instant::now();
        let (ready, checks) = readiness.report().await;
        // Paused time: the report waited one check timeout in all, not one per hanging check.
        assert_eq!(started.elapsed(), CHECK_TIMEOUT);
        assert!(!ready);
        assert_eq!(checks["postgres"], false);
        assert_eq!(checks["redis"], false);
        assert_eq!(checks["nats"], true);
    }
}

#[cfg(test)]
mod probe_tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
    };

    use super::*;

    /// A one-shot HTTP server answering `status_line`; returns its address.
    fn answering(status_line: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut socket, _)) = listener.accept() {
                let mut request = [0u8; 256];
                let _ = socket.read(&mut request);
                let _ = socket
                    .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        addr
    }

    #[test]
    fn a_ready_service_probes_zero_and_anything_else_one() {
        assert_eq!(probe_readiness(answering("HTTP/1.1 200 OK")), 0);
        assert_eq!(
            probe_readiness(answering("HTTP/1.1 503 Service Unavailable")),
            1
        );
        let nothing = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(probe_readiness(nothing), 1);
    }

    #[test]
    fn an_unspecified_listen_address_is_probed_on_loopback() {
        let ready = answering("HTTP/1.1 200 OK");
        let unspecified = SocketAddr::from(([0, 0, 0, 0], ready.port()));
        assert_eq!(probe_readiness(unspecified), 0);
    }
}
