//! `contoso.orders.v1.OrderService`, forwarded to accept-svc with the caller's token.

use contoso_platform::telemetry::ServerSpan;
use contoso_proto::orders::v1::{
    DeleteOrderRequest, DeleteOrderResponse, GetOrderRequest, GetOrderResponse,
    GetOrderStatusRequest, GetOrderStatusResponse, ListOrdersRequest, ListOrdersResponse,
    PlaceOrderRequest, PlaceOrderResponse, order_service_client::OrderServiceClient,
    order_service_server::OrderService,
};
use tonic::{Request, Response, Status, transport::Channel};

use super::unary;

const UPSTREAM: &str = "accept-svc";

#[derive(Debug, Clone)]
pub(crate) struct OrderForwarder {
    client: OrderServiceClient<Channel>,
}

impl OrderForwarder {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: OrderServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrderForwarder {
    #[tracing::instrument(skip_all, fields(rpc = "PlaceOrder", request_id, correlation_id))]
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let mut client = self.client.clone();
        let server = request.extensions().get::<ServerSpan>().cloned();
        let response = unary(UPSTREAM, request, move |r| async move {
            client.place_order(r).await
        })
        .await?;
        // The correlation id only exists once accept-svc has answered.
        if let Some(order) = &response.get_ref().order {
            tracing::Span::current().record("correlation_id", order.correlation_id.as_str());
            if let Some(server) = server {
                server.record_correlation_id(&order.correlation_id);
            }
            tracing::debug!(order_id = order.order_id, "order accepted");
        }
        Ok(response)
    }

    #[tracing::instrument(
        skip_all,
        fields(rpc = "GetOrderStatus", request_id, correlation_id = %request.get_ref().correlation_id),
    )]
    async fn get_order_status(
        &self,
        request: Request<GetOrderStatusRequest>,
    ) -> Result<Response<GetOrderStatusResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.get_order_status(r).await
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListOrders", request_id))]
    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.list_orders(r).await
        })
        .await
    }

    #[tracing::instrument(
        skip_all,
        fields(rpc = "GetOrder", request_id, order_id = request.get_ref().order_id),
    )]
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.get_order(r).await
        })
        .await
    }

    #[tracing::instrument(
        skip_all,
        fields(rpc = "DeleteOrder", request_id, order_id = request.get_ref().order_id),
    )]
    async fn delete_order(
        &self,
        request: Request<DeleteOrderRequest>,
    ) -> Result<Response<DeleteOrderResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.delete_order(r).await
        })
        .await
    }
}
