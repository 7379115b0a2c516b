//! `contoso.orders.v1.OrderService`: intake (`PlaceOrder`), the workflow status, and the caller's
//! order history. Every call acts for the token's `sub`; nobody sees another user's orders.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use contoso_platform::{
    auth::caller,
    bus::{Bus, Envelope, Topic},
    domain::{CorrelationId, OrderId, OrderStatus, UserId, to_timestamp},
    seal::CustomerSealer,
    state::{IdempotencyClaim, StateError, WorkflowState},
};
use contoso_proto::{
    events::v1::{OrderAccepted, OrderAcceptedLine},
    orders::v1::{
        self as pb, DeleteOrderRequest, DeleteOrderResponse, GetOrderRequest, GetOrderResponse,
        GetOrderStatusRequest, GetOrderStatusResponse, ListOrdersRequest, ListOrdersResponse,
        PlaceOrderRequest, PlaceOrderResponse, order_service_server::OrderService,
    },
};
use contoso_store::{OrderLine, OrderRecord, Store};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    catalog::CatalogCache,
    error::{ApiError, Paging},
    ids::IdAllocator,
    intake::{self, PricedOrder, line_to_pb},
};

/// The order API over its adapters.
#[derive(Debug, Clone)]
pub struct OrdersApi {
    catalog: CatalogCache,
    ids: IdAllocator,
    store: Arc<dyn Store>,
    state: Arc<dyn WorkflowState>,
    bus: Arc<dyn Bus>,
    sealer: CustomerSealer,
    id_wait: Duration,
}

impl OrdersApi {
    pub fn new(
        catalog: CatalogCache,
        ids: IdAllocator,
        store: Arc<dyn Store>,
        state: Arc<dyn WorkflowState>,
        bus: Arc<dyn Bus>,
        sealer: CustomerSealer,
        id_wait: Duration,
    ) -> Self {
        Self {
            catalog,
            ids,
            store,
            state,
            bus,
            sealer,
            id_wait,
        }
    }

    async fn place(&self, user: &UserId, req: PlaceOrderRequest) -> Result<pb::Order, ApiError> {
        let priced = intake::price(&req.lines, &self.catalog)?;
        let Some(key) = intake::idempotency_key(&req.idempotency_key)? else {
            let event = self.new_event(user, &priced).await?;
            return self.publish_accepted(user, &event).await;
        };
        let event = match self.state.claim_idempotency_key(user, &key).await? {
            IdempotencyClaim::Completed(stored) => match Remembered::decode(&stored)? {
                Remembered::Accepted(order) => return Ok(order),
                // The first attempt's publish was not confirmed, so its event may or may not be
                // in the stream: publish the very same event again. The broker drops it as a
                // duplicate inside its window, and process-svc records a correlation id once.
                Remembered::Unconfirmed(event) => event,
            },
            IdempotencyClaim::InFlight => return Err(ApiError::InFlight),
            IdempotencyClaim::Claimed => match self.new_event(user, &priced).await {
                Ok(event) => event,
                Err(e) => {
                    self.settle(user, &key, None).await;
                    return Err(e);
                }
            },
        };
        let result = self.publish_accepted(user, &event).await;
        let remembered = match &result {
            Ok(order) => Some(Remembered::Accepted(order.clone())),
            Err(ApiError::Bus(_)) => Some(Remembered::Unconfirmed(event)),
            // Nothing was published: a retry may start afresh.
            Err(_) => None,
        };
        self.settle(user, &key, remembered).await;
        result
    }

    /// Stores what the key should answer from now on, or frees it.
    async fn settle(&self, user: &UserId, key: &str, remembered: Option<Remembered>) {
        let settled = match remembered {
            Some(r) => {
                self.state
                    .complete_idempotency_key(user, key, &r.encode())
                    .await
            }
            None => self.state.release_idempotency_key(user, key).await,
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "settling the idempotency key failed; it expires with its TTL");
        }
    }

    /// A new intake: fresh correlation id, a reserved order id, the sealed customer and the
    /// priced lines.
    async fn new_event(
        &self,
        user: &UserId,
        priced: &PricedOrder,
    ) -> Result<OrderAccepted, ApiError> {
        let cid = CorrelationId::new();
        let order_id = self
            .ids
            .next(self.id_wait)
            .await
            .ok_or(ApiError::NoOrderId)?;
        Ok(OrderAccepted {
            correlation_id: cid.to_string(),
            order_id: order_id.get(),
            customer: Some(self.sealer.seal(cid, user)?),
            lines: priced
                .lines
                .iter()
                .map(|l| OrderAcceptedLine {
                    product_id: l.product_id.clone(),
                    product_name: l.product_name.clone(),
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents: priced.total_cents,
            currency: priced.currency.clone(),
            accepted_at: Some(to_timestamp(Utc::now())),
        })
    }

    /// Records the workflow state and publishes `OrderAccepted`, answering only once the broker
    /// confirmed it; if it did not, the workflow keys are removed again.
    async fn publish_accepted(
        &self,
        user: &UserId,
        event: &OrderAccepted,
    ) -> Result<pb::Order, ApiError> {
        let order = accepted_order(event)?;
        let cid: CorrelationId = order
            .correlation_id
            .parse()
            .map_err(|_| corrupt("correlation id"))?;
        let order_id = OrderId::new(order.order_id).ok_or_else(|| corrupt("order id"))?;
        let span =
            tracing::info_span!("accept_order", correlation_id = %cid, order_id = order_id.get());
        async {
            self.state.record_accepted(cid, user, order_id).await?;
            let envelope = Envelope {
                topic: Topic::OrderAccepted,
                message_id: cid.to_string(),
                payload: event.encode_to_vec().into(),
            };
            if let Err(e) = self.bus.publish(envelope).await {
                tracing::warn!(error = %e, "OrderAccepted not confirmed; rolling back the intake");
                if let Err(forget) = self.state.forget(cid).await {
                    tracing::warn!(error = %forget, "removing the workflow keys failed; they expire with their TTL");
                }
                return Err(e.into());
            }
            tracing::info!(lines = order.lines.len(), total_cents = order.total_cents, "order accepted");
            Ok(order)
        }
        .instrument(span)
        .await
    }

    async fn status(
        &self,
        user: &UserId,
        raw_cid: &str,
    ) -> Result<GetOrderStatusResponse, ApiError> {
        let cid: CorrelationId = raw_cid
            .parse()
            .map_err(|_| ApiError::invalid("correlation_id", "must be a UUID"))?;
        match self.state.owner(cid).await? {
            Some(owner) if owner != *user => return Err(not_yours()),
            Some(_) => {
                if let Some(record) = self.state.status(cid).await? {
                    return Ok(GetOrderStatusResponse {
                        correlation_id: cid.to_string(),
                        status: pb::OrderStatus::from(record.status) as i32,
                        order_id: record.order_id.map_or(0, OrderId::get),
                    });
                }
            }
            None => {}
        }
        // The workflow keys expired (or never existed): the system of record answers.
        match self.store.get_order_by_correlation(cid).await? {
            Some(order) if order.customer != *user => Err(not_yours()),
            Some(order) => Ok(GetOrderStatusResponse {
                correlation_id: cid.to_string(),
                status: pb::OrderStatus::from(order.status) as i32,
                order_id: order.order_id.get(),
            }),
            None => Err(ApiError::NotFound(format!(
                "no order with correlation id {cid}"
            ))),
        }
    }

    async fn owned_order(&self, user: &UserId, raw_id: i64) -> Result<OrderRecord, ApiError> {
        let id = OrderId::new(raw_id)
            .ok_or_else(|| ApiError::invalid("order_id", "must be a positive order id"))?;
        match self.store.get_order(id).await? {
            Some(order) if order.deleted => {
                Err(ApiError::NotFound(format!("order {id} not found")))
            }
            Some(order) if order.customer != *user => Err(not_yours()),
            Some(order) => Ok(order),
            None => Err(ApiError::NotFound(format!("order {id} not found"))),
        }
    }
}

fn corrupt(what: &str) -> ApiError {
    ApiError::State(StateError::Corrupt {
        key: "idempotency".into(),
        detail: format!("stored intake has a bad {what}"),
    })
}

/// What an idempotency key answers once its first request has settled.
#[derive(Debug, Clone, PartialEq)]
enum Remembered {
    /// The order was accepted: every retry gets this same answer.
    Accepted(pb::Order),
    /// The broker did not confirm the publish: a retry publishes this same event again.
    Unconfirmed(OrderAccepted),
}

impl Remembered {
    const ACCEPTED: u8 = b'A';
    const UNCONFIRMED: u8 = b'U';

    fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Self::Accepted(order) => (Self::ACCEPTED, order.encode_to_vec()),
            Self::Unconfirmed(event) => (Self::UNCONFIRMED, event.encode_to_vec()),
        };
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(tag);
        bytes.extend(body);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        let decoded = match bytes.split_first() {
            Some((&Self::ACCEPTED, body)) => pb::Order::decode(body).map(Self::Accepted),
            Some((&Self::UNCONFIRMED, body)) => OrderAccepted::decode(body).map(Self::Unconfirmed),
            _ => return Err(corrupt("tag")),
        };
        decoded.map_err(|_| corrupt("body"))
    }
}

/// The answer to `PlaceOrder`: the accepted order, as the event describes it.
fn accepted_order(event: &OrderAccepted) -> Result<pb::Order, ApiError> {
    let lines: Vec<OrderLine> = event
        .lines
        .iter()
        .map(|l| OrderLine {
            product_id: l.product_id.clone(),
            product_name: l.product_name.clone(),
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
        })
        .collect();
    Ok(pb::Order {
        order_id: event.order_id,
        correlation_id: event.correlation_id.clone(),
        status: pb::OrderStatus::Accepted as i32,
        created_at: Some(
            event
                .accepted_at
                .ok_or_else(|| corrupt("acceptance time"))?,
        ),
        lines: lines.iter().map(line_to_pb).collect(),
        total_cents: event.total_cents,
        currency: event.currency.clone(),
    })
}

fn not_yours() -> ApiError {
    ApiError::PermissionDenied("this order belongs to another user".into())
}

fn order_pb(
    order_id: OrderId,
    cid: CorrelationId,
    status: OrderStatus,
    created_at: DateTime<Utc>,
    priced: &PricedOrder,
) -> pb::Order {
    pb::Order {
        order_id: order_id.get(),
        correlation_id: cid.to_string(),
        status: pb::OrderStatus::from(status) as i32,
        created_at: Some(to_timestamp(created_at)),
        lines: priced.lines.iter().map(line_to_pb).collect(),
        total_cents: priced.total_cents,
        currency: priced.currency.clone(),
    }
}

fn record_pb(record: OrderRecord) -> pb::Order {
    let priced = PricedOrder {
        lines: record.lines,
        total_cents: record.total_cents,
        currency: record.currency,
    };
    order_pb(
        record.order_id,
        record.correlation_id,
        record.status,
        record.accepted_at,
        &priced,
    )
}

#[tonic::async_trait]
impl OrderService for OrdersApi {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let user = caller(&request)?;
        let order = self.place(&user, request.into_inner()).await?;
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
        let page = self
            .store
            .list_orders(&user, paging.offset as i64, paging.size as i64)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(ListOrdersResponse {
            orders: page.items.into_iter().map(record_pb).collect(),
            total: i32::try_from(page.total).unwrap_or(i32::MAX),
            offset: req.offset,
            size: paging.size as i32,
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let user = caller(&request)?;
        let order = self.owned_order(&user, request.get_ref().order_id).await?;
        Ok(Response::new(GetOrderResponse {
            order: Some(record_pb(order)),
        }))
    }

    async fn delete_order(
        &self,
        request: Request<DeleteOrderRequest>,
    ) -> Result<Response<DeleteOrderResponse>, Status> {
        let user = caller(&request)?;
        let order = self.owned_order(&user, request.get_ref().order_id).await?;
        let span = tracing::info_span!("delete_order", correlation_id = %order.correlation_id, order_id = order.order_id.get());
        async {
            if !self
                .store
                .soft_delete(&user, order.order_id)
                .await
                .map_err(ApiError::from)?
            {
                return Err(Status::from(ApiError::NotFound(format!(
                    "order {} not found",
                    order.order_id
                ))));
            }
            tracing::info!("order soft-deleted");
            Ok(Response::new(DeleteOrderResponse {}))
        }
        .instrument(span)
        .await
    }
}
