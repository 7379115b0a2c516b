//! `contoso.notify.v1.OrderStatusService`, forwarded to notify-svc. The upstream stream is relayed
//! item by item with no buffer of its own, so back-pressure reaches notify-svc. It ends when the
//! upstream ends it, when the caller goes away (dropping the relayed stream drops the upstream
//! call, which resets it), or when the gateway shuts down.

use contoso_proto::notify::v1::{
    WatchOrderStatusRequest, WatchOrderStatusResponse,
    order_status_service_client::OrderStatusServiceClient,
    order_status_service_server::OrderStatusService,
};
use futures::stream::{self, BoxStream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming, transport::Channel};
use tracing::Instrument as _;

use super::{outgoing, relay};

const UPSTREAM: &str = "notify-svc";

#[derive(Debug, Clone)]
pub(crate) struct StatusForwarder {
    client: OrderStatusServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl StatusForwarder {
    /// `shutdown` ends every open stream, so draining does not wait for streams that never end.
    pub(crate) fn new(channel: Channel, shutdown: CancellationToken) -> Self {
        Self {
            client: OrderStatusServiceClient::new(channel),
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl OrderStatusService for StatusForwarder {
    type WatchOrderStatusStream = BoxStream<'static, Result<WatchOrderStatusResponse, Status>>;

    #[tracing::instrument(
        skip_all,
        fields(rpc = "WatchOrderStatus", request_id, correlation_ids = request.get_ref().correlation_ids.len()),
    )]
    async fn watch_order_status(
        &self,
        request: Request<WatchOrderStatusRequest>,
    ) -> Result<Response<Self::WatchOrderStatusStream>, Status> {
        let mut client = self.client.clone();
        let upstream = match client.watch_order_status(outgoing(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(code = ?status.code(), "upstream refused the stream");
                return Err(relay(status, UPSTREAM));
            }
        };
        tracing::debug!("status stream opened");
        Ok(Response::new(relay_stream(upstream, self.shutdown.clone())))
    }
}

/// The relay's state between items; `None` once the stream has ended with an error.
type Relay = Option<(Streaming<WatchOrderStatusResponse>, CancellationToken)>;

/// The caller's side of an upstream stream: the upstream's items, then its end or its error; on
/// shutdown, UNAVAILABLE so the client reconnects (to another gateway instance).
fn relay_stream(
    upstream: Streaming<WatchOrderStatusResponse>,
    shutdown: CancellationToken,
) -> BoxStream<'static, Result<WatchOrderStatusResponse, Status>> {
    // Polled by the server after the handler returned: re-enter the call's span for its logs.
    let span = tracing::Span::current();
    stream::unfold(Some((upstream, shutdown)), move |state| {
        next_item(state).instrument(span.clone())
    })
    .boxed()
}

async fn next_item(state: Relay) -> Option<(Result<WatchOrderStatusResponse, Status>, Relay)> {
    let (mut upstream, shutdown) = state?;
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {
            tracing::debug!("status stream closed: gateway shutting down");
            Some((Err(Status::unavailable("the gateway is shutting down; reconnect")), None))
        }
        item = upstream.message() => match item {
            Ok(Some(item)) => Some((Ok(item), Some((upstream, shutdown)))),
            Ok(None) => {
                tracing::debug!("status stream ended by upstream");
                None
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), "status stream failed upstream");
                Some((Err(relay(status, UPSTREAM)), None))
            }
        },
    }
}
