//! accept-svc: the catalog, order intake, order history and entitlements, over gRPC.
//!
//! Intake answers in milliseconds: it validates the lines against an in-memory catalog, takes an
//! order id from a pre-fetched block, records the workflow state, and publishes `OrderAccepted`;
//! persisting the order is process-svc's job.

use std::{sync::Arc, time::Duration};

use contoso_bus::Bus;
use contoso_platform::{
    auth::{AuthInterceptor, Authenticator},
    seal::CustomerSealer,
    server::{GrpcHost, Readiness, ServerLimits},
};
use contoso_proto::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    entitlements::v1::entitlement_service_server::EntitlementServiceServer,
    orders::v1::order_service_server::OrderServiceServer,
};
use contoso_state::IntakeState;
use contoso_store::{CatalogSource, Entitlements, OrderIdSource, OrderReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

mod catalog;
mod entitlements;
mod error;
mod ids;
mod orders;

pub use catalog::{CatalogApi, CatalogCache};
pub use entitlements::EntitlementsApi;
pub use ids::IdAllocator;
pub use orders::OrdersApi;

/// The capabilities accept-svc runs on: it reads the catalog and the order history, reserves order
/// ids, soft-deletes orders, reads entitlements and changes their seat assignments, and writes
/// only workflow state; no order write, and no grant, is within its reach.
#[derive(Debug, Clone)]
pub struct Deps {
    pub catalog: Arc<dyn CatalogSource>,
    pub ids: Arc<dyn OrderIdSource>,
    /// Order history and soft delete.
    pub orders: Arc<dyn OrderReader>,
    /// Entitlement listings and seat assignments.
    pub entitlements: Arc<dyn Entitlements>,
    pub state: Arc<dyn IntakeState>,
    pub bus: Arc<dyn Bus>,
    pub auth: Arc<Authenticator>,
    pub sealer: CustomerSealer,
    pub readiness: Readiness,
}

/// Tunables; the defaults suit production.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the in-memory catalog is reloaded from the store.
    pub catalog_refresh: Duration,
    /// How long intake waits for an order id when the id source is slow or down.
    pub id_wait: Duration,
    /// Ids kept ready ahead of demand (a whole block is fetched when the buffer runs low).
    pub id_buffer: usize,
    pub server: ServerLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            catalog_refresh: Duration::from_secs(60),
            id_wait: Duration::from_secs(5),
            id_buffer: 100,
            server: ServerLimits::default(),
        }
    }
}

/// Serves `CatalogService`, `OrderService` and `EntitlementService` on `listener` until `shutdown`
/// fires.
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A scrape shows the counter at zero before the first order.
    let _ = orders::ORDERS_ACCEPTED.get_or_create(&Vec::new());
    contoso_bus::telemetry::register_metrics();
    let catalog = CatalogCache::load(deps.catalog).await?;
    let refresher = catalog
        .clone()
        .spawn_refresh(settings.catalog_refresh, shutdown.clone());
    let ids = IdAllocator::spawn(deps.ids, settings.id_buffer, shutdown.clone());

    let orders = OrdersApi::new(
        catalog.clone(),
        ids,
        deps.orders,
        deps.state,
        deps.bus,
        deps.sealer,
        settings.id_wait,
    );
    let interceptor = AuthInterceptor::new(deps.auth.clone());
    let max_message = settings.server.max_message_bytes;
    let result = GrpcHost::new(deps.readiness)
        .limits(settings.server)
        .add_service(
            CatalogServiceServer::new(CatalogApi::new(catalog))
                .max_decoding_message_size(max_message),
        )
        .add_service(InterceptedService::new(
            OrderServiceServer::new(orders).max_decoding_message_size(max_message),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            EntitlementServiceServer::new(EntitlementsApi::new(deps.entitlements))
                .max_decoding_message_size(max_message),
            interceptor,
        ))
        .serve(listener, shutdown)
        .await;
    refresher.abort();
    result
}
