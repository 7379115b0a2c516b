//! accept-svc: the catalog, order intake and order history, over gRPC.
//!
//! Intake answers in milliseconds: it validates the lines against an in-memory catalog, takes an
//! order id from a pre-fetched block, records the workflow state, and publishes `OrderAccepted`;
//! persisting the order is process-svc's job.

use std::{sync::Arc, time::Duration};

use contoso_platform::{
    auth::{AuthInterceptor, Authenticator},
    bus::Bus,
    seal::CustomerSealer,
    server::{GrpcHost, Readiness},
    state::WorkflowState,
};
use contoso_proto::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    orders::v1::order_service_server::OrderServiceServer,
};
use contoso_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod catalog;
mod error;
mod ids;
mod intake;
mod orders;

pub use catalog::{CatalogApi, CatalogCache};
pub use ids::IdAllocator;
pub use orders::OrdersApi;

/// The adapters accept-svc runs on.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Catalog, order id blocks and order history.
    pub store: Arc<dyn Store>,
    pub state: Arc<dyn WorkflowState>,
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            catalog_refresh: Duration::from_secs(60),
            id_wait: Duration::from_secs(5),
            id_buffer: 100,
        }
    }
}

/// Serves `CatalogService` and `OrderService` on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalog = CatalogCache::load(deps.store.clone()).await?;
    let refresher = catalog
        .clone()
        .spawn_refresh(settings.catalog_refresh, shutdown.clone());
    let ids = IdAllocator::spawn(deps.store.clone(), settings.id_buffer, shutdown.clone());

    let orders = OrdersApi::new(
        catalog.clone(),
        ids,
        deps.store.clone(),
        deps.state.clone(),
        deps.bus.clone(),
        deps.sealer.clone(),
        settings.id_wait,
    );
    let interceptor = AuthInterceptor::new(deps.auth.clone());
    let result = GrpcHost::new(deps.readiness)
        .add_service(CatalogServiceServer::new(CatalogApi::new(catalog)))
        .add_service(OrderServiceServer::with_interceptor(orders, interceptor))
        .serve(listener, shutdown)
        .await;
    refresher.abort();
    result
}
