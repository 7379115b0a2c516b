//! `contoso.orders.v1.OrderService`: intake (`PlaceOrder`), the workflow status, and the caller's
//! order history. Every call acts for the token's `sub`; nobody sees another user's orders.

//!
//! The module is split by job: [`intake`] places orders, [`idempotency`] remembers what a key
//! answers, [`history`] reads and deletes the caller's orders (recorded and in flight),
//! [`parse`] checks requests at the edge, [`mapping`] builds the wire messages, and this file
//! holds the handlers.

use std::{sync::Arc, time::Duration};

use contoso_bus::Bus;
use contoso_domain::{CorrelationId, OrderId, UserId};
use contoso_platform::{auth::caller, seal::CustomerSealer, telemetry::ServerSpan};
use contoso_proto::convert::to_timestamp;
use contoso_proto::orders::v1::{
    self as pb, DeleteOrderRequest, DeleteOrderResponse, GetOrderRequest, GetOrderResponse,
    GetOrderStatusRequest, GetOrderStatusResponse, ListOrdersRequest, ListOrdersResponse,
    PlaceOrderRequest, PlaceOrderResponse, order_service_server::OrderService,
};
use contoso_state::IntakeState;
use contoso_store::OrderReader;
use tonic::{Request, Response, Status};

use crate::{
    catalog::CatalogCache,
    error::{ApiError, Paging},
    ids::IdAllocator,
};

mod history;
mod idempotency;
mod intake;
mod mapping;
mod parse;

pub(crate) use intake::ORDERS_ACCEPTED;

/// The order API over its adapters. It reads orders but never writes them: recording is
/// process-svc's job, and [`OrderReader`] offers no write.
#[derive(Debug, Clone)]
pub struct OrdersApi {
    catalog: CatalogCache,
    ids: IdAllocator,
    orders: Arc<dyn OrderReader>,
    state: Arc<dyn IntakeState>,
    bus: Arc<dyn Bus>,
    sealer: CustomerSealer,
    id_wait: Duration,
}

impl OrdersApi {
    pub fn new(
        catalog: CatalogCache,
        ids: IdAllocator,
        orders: Arc<dyn OrderReader>,
        state: Arc<dyn IntakeState>,
        bus: Arc<dyn Bus>,
        sealer: CustomerSealer,
        id_wait: Duration,
    ) -> Self {
        Self {
            catalog,
            ids,
            orders,
            state,
            bus,
            sealer,
            id_wait,
        }
    }

    async fn status(
        &self,
        user: &UserId,
        raw_cid: &str,
    ) -> Result<GetOrderStatusResponse, ApiError> {
        let cid: CorrelationId = raw_cid
            .parse()
            .map_err(|_| ApiError::invalid("correlation_id", "must be a UUID"))?;
        let cached = match self.state.owner(cid).await? {
            Some(owner) if owner != *user => return Err(no_such_correlation(cid)),
            Some(_) => self.state.status(cid).await?,
            None => None,
        };
        // The system of record is asked too: the workflow keys may have expired, the workflow
        // state may lag behind a status Postgres already holds (a Redis write that failed), and a
        // soft-deleted order is gone for its owner whatever Redis says.
        let recorded = match self.orders.get_order_by_correlation(cid).await? {
            Some(order) if order.customer != *user || order.deleted => {
                return Err(no_such_correlation(cid));
            }
            other => other,
        };
        let (status, order_id, updated_at) = match (cached, recorded) {
            (Some(c), Some(r)) if !c.status.can_advance_to(r.status) => {
                (c.status, c.order_id.or(Some(r.order_id)), c.updated_at)
            }
            (_, Some(r)) => (r.status, Some(r.order_id), r.updated_at),
            (Some(c), None) => (c.status, c.order_id, c.updated_at),
            (None, None) => return Err(no_such_correlation(cid)),
        };
        Ok(GetOrderStatusResponse {
            correlation_id: cid.to_string(),
            status: pb::OrderStatus::from(status) as i32,
            order_id: order_id.map_or(0, OrderId::get),
            updated_at: Some(to_timestamp(updated_at)),
        })
    }
}

/// Unknown, expired and another user's correlation ids all answer the same.
fn no_such_correlation(cid: CorrelationId) -> ApiError {
    ApiError::NotFound(format!("no order with correlation id {cid}"))
}

#[tonic::async_trait]
impl OrderService for OrdersApi {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let user = caller(&request)?;
        let server = request.extensions().get::<ServerSpan>().cloned();
        let order = self.place(&user, request.into_inner()).await?;
        if let Some(server) = server {
            server.record_correlation_id(&order.correlation_id);
        }
        Ok(Response::new(PlaceOrderResponse { order: Some(order) }))
    }

    async fn get_order_status(
        &self,
        request: Request<GetOrderStatusRequest>,
    ) -> Result<Response<GetOrderStatusResponse>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(
            self.status(&user, &request.get_ref().correlation_id)
                .await?,
        ))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let paging = Paging::parse(req.offset, req.size)?;
        let (orders, total) = self.list(&user, paging).await?;
        Ok(Response::new(ListOrdersResponse {
            orders,
            total: i32::try_from(total).unwrap_or(i32::MAX),
            offset: req.offset,
            size: paging.size as i32,
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let user = caller(&request)?;
        let order = self.order(&user, request.get_ref().order_id).await?;
        Ok(Response::new(GetOrderResponse { order: Some(order) }))
    }

    async fn delete_order(
        &self,
        request: Request<DeleteOrderRequest>,
    ) -> Result<Response<DeleteOrderResponse>, Status> {
        let user = caller(&request)?;
        self.delete(&user, request.get_ref().order_id).await?;
        Ok(Response::new(DeleteOrderResponse {}))
    }
}
