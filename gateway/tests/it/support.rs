//! Starting a gateway on port 0, a stand-in notify-svc for it to forward to, and clients that speak
//! plain gRPC and grpc-web to it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use contoso_platform::{
    auth::{AuthArgs, Authenticator},
    server::Readiness,
};
use contoso_proto::{
    notify::v1::{
        OrderStatusUpdate, WatchOrderStatusRequest, WatchOrderStatusResponse,
        order_status_service_client::OrderStatusServiceClient,
        order_status_service_server::{OrderStatusService, OrderStatusServiceServer},
        watch_order_status_response::Event,
    },
    orders::v1::OrderStatus,
};
use gateway::{Deps, Settings};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap, transport::Channel};
use tonic_types::{ErrorDetails, StatusExt as _};
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

/// Generous bound for anything a test waits on; a healthy run takes milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Correlation id that makes the double refuse the stream.
pub(crate) const FORBIDDEN: &str = "forbidden";
/// Correlation id that makes the double keep the stream open after its three updates.
pub(crate) const ENDLESS: &str = "endless";

pub(crate) const DENIED_MESSAGE: &str = "order forbidden belongs to another user";
pub(crate) const DENIED_REASON: &str = "NOT_ORDER_OWNER";

pub(crate) fn authenticator() -> Arc<Authenticator> {
    Arc::new(Authenticator::new(&AuthArgs::dev()).expect("default auth args are valid"))
}

pub(crate) fn deps() -> Deps {
    Deps {
        auth: authenticator(),
        readiness: Readiness::new(),
    }
}

/// A stand-in for notify-svc: three updates (ACCEPTED, PROCESSING, COMPLETED) whose `reason` echoes
/// the `authorization` it received, then the end of the stream (or, for [`ENDLESS`], an open stream
/// until the caller goes away). Records every request's metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusDouble {
    pub(crate) seen: Arc<Mutex<Vec<MetadataMap>>>,
    /// Notified when the caller of an [`ENDLESS`] stream has gone away.
    pub(crate) caller_gone: Arc<Notify>,
}

#[tonic::async_trait]
impl OrderStatusService for StatusDouble {
    type WatchOrderStatusStream = ReceiverStream<Result<WatchOrderStatusResponse, Status>>;

    async fn watch_order_status(
        &self,
        request: Request<WatchOrderStatusRequest>,
    ) -> Result<Response<Self::WatchOrderStatusStream>, Status> {
        self.seen
            .lock()
            .expect("not poisoned")
            .push(request.metadata().clone());
        let first = request
            .get_ref()
            .correlation_ids
            .first()
            .cloned()
            .unwrap_or_default();
        if first == FORBIDDEN {
            return Err(Status::with_error_details(
                Code::PermissionDenied,
                DENIED_MESSAGE,
                ErrorDetails::with_error_info(
                    DENIED_REASON,
                    "contoso.orders",
                    std::collections::HashMap::new(),
                ),
            ));
        }
        let echo = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (tx, rx) = mpsc::channel(4);
        let caller_gone = self.caller_gone.clone();
        tokio::spawn(async move {
            let statuses = [
                OrderStatus::Accepted,
                OrderStatus::Processing,
                OrderStatus::Completed,
            ];
            for (n, status) in statuses.into_iter().enumerate() {
                let update = OrderStatusUpdate {
                    correlation_id: format!("cid-{n}"),
                    status: status.into(),
                    order_id: 42,
                    occurred_at: None,
                    reason: echo.clone(),
                };
                let item = WatchOrderStatusResponse {
                    event: Some(Event::Update(update)),
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if first == ENDLESS {
                tx.closed().await;
                caller_gone.notify_one();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves `double` on a free port until the test ends; returns its URL.
pub(crate) async fn start_double(double: StatusDouble) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind double");
    let addr = listener.local_addr().expect("double addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderStatusServiceServer::new(double))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// A URL nothing listens on: a port that was free a moment ago.
pub(crate) async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[derive(Debug)]
pub(crate) struct RunningGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<anyhow::Result<()>>,
}

impl RunningGateway {
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the gateway on port 0 with the given upstreams; accepting starts at once (the listener is
/// bound before `run`), so callers need not wait for it.
pub(crate) async fn start_gateway(
    accept_url: String,
    notify_url: String,
    web_dir: Option<PathBuf>,
) -> RunningGateway {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway addr");
    let settings = Settings {
        accept_url,
        notify_url,
        web_dir,
        ..Settings::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway::run(listener, deps(), settings, shutdown.clone()));
    RunningGateway {
        addr,
        shutdown,
        task,
    }
}

pub(crate) async fn grpc_channel(gateway: &RunningGateway) -> Channel {
    Channel::from_shared(gateway.url())
        .expect("valid url")
        .connect()
        .await
        .expect("gateway accepts connections")
}

pub(crate) type GrpcWebService =
    GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>;

/// A grpc-web client over HTTP/1.1, as a browser would talk to the gateway.
pub(crate) fn grpc_web(gateway: &RunningGateway) -> OrderStatusServiceClient<GrpcWebService> {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    OrderStatusServiceClient::with_origin(service, gateway.url().parse().expect("valid uri"))
}

pub(crate) type HttpClient = Client<HttpConnector, axum::body::Body>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpVersion {
    Http1,
    /// HTTP/2 without TLS, by prior knowledge (`curl --http2-prior-knowledge`).
    H2,
}

/// A plain HTTP client for the non-gRPC routes.
pub(crate) fn http_client(version: HttpVersion) -> HttpClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(version == HttpVersion::H2);
    builder.build_http()
}

pub(crate) fn bearer(request: &mut Request<WatchOrderStatusRequest>, token: &str) {
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
}

pub(crate) fn watch(ids: &[&str]) -> Request<WatchOrderStatusRequest> {
    Request::new(WatchOrderStatusRequest {
        correlation_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// The updates of a stream's items, as `(correlation id, status, echoed authorization)`.
pub(crate) fn update_of(item: &WatchOrderStatusResponse) -> (String, OrderStatus, String) {
    match &item.event {
        Some(Event::Update(u)) => (u.correlation_id.clone(), u.status(), u.reason.clone()),
        other => panic!("expected an update, got {other:?}"),
    }
}
