//! The catalog, held in memory (145 products) and reloaded from the store periodically, and the
//! public `CatalogService` over it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use contoso_domain::{Product, Report};
use contoso_platform::grpc_status::invalid_argument;
use contoso_proto::catalog::v1::{
    self as pb, GetProductRequest, GetProductResponse, ListProductsRequest, ListProductsResponse,
    catalog_service_server::CatalogService,
};
use contoso_store::CatalogSource;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::Paging;

#[derive(Debug, Default)]
struct Snapshot {
    products: Vec<Arc<Product>>,
    by_id: HashMap<String, Arc<Product>>,
}

impl Snapshot {
    fn new(products: Vec<Product>) -> Self {
        let products: Vec<Arc<Product>> = products.into_iter().map(Arc::new).collect();
        let by_id = products
            .iter()
            .map(|p| (p.id.to_ascii_uppercase(), p.clone()))
            .collect();
        Self { products, by_id }
    }
}

/// The catalog in memory; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct CatalogCache {
    source: Arc<dyn CatalogSource>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
}

impl CatalogCache {
    /// Loads the catalog once; fails when the store cannot be read, so a service never starts
    /// with an empty catalog.
    pub async fn load(source: Arc<dyn CatalogSource>) -> anyhow::Result<Self> {
        let products = source.all_products().await.context("loading the catalog")?;
        Ok(Self {
            source,
            snapshot: Arc::new(RwLock::new(Arc::new(Snapshot::new(products)))),
        })
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads from the store; on failure the previous catalog stays in use.
    pub async fn refresh(&self) {
        match self.source.all_products().await {
            Ok(products) => {
                let fresh = Arc::new(Snapshot::new(products));
                match self.snapshot.write() {
                    Ok(mut guard) => *guard = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
            }
            Err(e) => {
                tracing::warn!(error = %Report(&e), "catalog refresh failed; keeping the previous catalog")
            }
        }
    }

    pub(crate) fn spawn_refresh(
        self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => self.refresh().await,
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// A product by id (case-insensitive), active or not.
    pub fn get(&self, id: &str) -> Option<Arc<Product>> {
        self.current()
            .by_id
            .get(&id.trim().to_ascii_uppercase())
            .cloned()
    }

    /// Active products matching the filter, in id order, and the number of matches.
    fn search(&self, filter: &Filter, paging: Paging) -> (Vec<Arc<Product>>, usize) {
        let snapshot = self.current();
        let matches: Vec<&Arc<Product>> = snapshot
            .products
            .iter()
            .filter(|p| filter.matches(p))
            .collect();
        let total = matches.len();
        let page = matches
            .into_iter()
            .skip(paging.offset)
            .take(paging.size)
            .cloned()
            .collect();
        (page, total)
    }
}

#[derive(Debug, Default)]
struct Filter {
    query: Option<String>,
    vendor: Option<String>,
    category: Option<String>,
}

impl Filter {
    fn from_request(req: &ListProductsRequest) -> Self {
        let norm = |s: &str| Some(s.trim().to_lowercase()).filter(|s| !s.is_empty());
        Self {
            query: norm(&req.query),
            vendor: norm(&req.vendor),
            category: norm(&req.category),
        }
    }

    fn matches(&self, p: &Product) -> bool {
        p.active
            && self
                .vendor
                .as_ref()
                .is_none_or(|v| p.vendor.to_lowercase() == *v)
            && self
                .category
                .as_ref()
                .is_none_or(|c| p.category.to_lowercase() == *c)
            && self.query.as_ref().is_none_or(|q| {
                p.id.to_lowercase().contains(q.as_str())
                    || p.name.to_lowercase().contains(q.as_str())
            })
    }
}

pub(crate) fn product_to_pb(p: &Product) -> pb::Product {
    pb::Product {
        id: p.id.clone(),
        name: p.name.clone(),
        category: p.category.clone(),
        vendor: p.vendor.clone(),
        image_url: p.image_url.clone(),
        discount_percent: p.discount_percent,
        billing_period: pb::BillingPeriod::from(p.billing_period) as i32,
        subscription: p.subscription,
        price_cents: p.price_cents,
        effective_price_cents: p.effective_price_cents(),
        currency: p.currency.clone(),
    }
}

/// `contoso.catalog.v1.CatalogService`: public, no token needed to browse.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    catalog: CatalogCache,
}

impl CatalogApi {
    pub fn new(catalog: CatalogCache) -> Self {
        Self { catalog }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let req = request.into_inner();
        let paging = Paging::parse(req.offset, req.size)?;
        let (page, total) = self.catalog.search(&Filter::from_request(&req), paging);
        Ok(Response::new(ListProductsResponse {
            products: page.iter().map(|p| product_to_pb(p)).collect(),
            total: i32::try_from(total).unwrap_or(i32::MAX),
            offset: req.offset,
            size: paging.size as i32,
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let id = request.into_inner().id;
        if id.trim().is_empty() {
            return Err(invalid_argument("id", "must not be empty"));
        }
        match self.catalog.get(&id) {
            Some(p) if p.active => Ok(Response::new(GetProductResponse {
                product: Some(product_to_pb(&p)),
            })),
            _ => Err(Status::not_found(format!(
                "product {:?} not found",
                id.trim()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contoso_store::MemoryStore;

    async fn api() -> CatalogApi {
        let store: Arc<dyn CatalogSource> = Arc::new(MemoryStore::new().unwrap());
        CatalogApi::new(CatalogCache::load(store).await.unwrap())
    }

    async fn list(api: &CatalogApi, req: ListProductsRequest) -> ListProductsResponse {
        api.list_products(Request::new(req))
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn list_products_pages_with_a_total() {
        let api = api().await;
        let first = list(
            &api,
            ListProductsRequest {
                size: 10,
                ..Default::default()
            },
        )
        .await;
        let second = list(
            &api,
            ListProductsRequest {
                offset: 10,
                size: 10,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(first.products.len(), 10);
        assert!(first.total >= 140, "active products: {}", first.total);
        assert_eq!(first.total, second.total);
        assert_ne!(first.products[0].id, second.products[0].id);
    }

    #[tokio::test]
    async fn list_products_searches_id_and_name_case_insensitively() {
        let api = api().await;
        let found = list(
            &api,
            ListProductsRequest {
                query: "az-70".into(),
                ..Default::default()
            },
        )
        .await;
        assert!(found.products.iter().any(|p| p.id == "AZ-700"));
        assert!(
            found
                .products
                .iter()
                .all(|p| p.id.to_lowercase().contains("az-70")
                    || p.name.to_lowercase().contains("az-70"))
        );
    }

    #[tokio::test]
    async fn list_products_filters_by_vendor() {
        let api = api().await;
        let found = list(
            &api,
            ListProductsRequest {
                vendor: "cisco".into(),
                size: 100,
                ..Default::default()
            },
        )
        .await;
        assert!(!found.products.is_empty());
        assert!(
            found
                .products
                .iter()
                .all(|p| p.vendor.eq_ignore_ascii_case("cisco"))
        );
        assert_eq!(found.total as usize, found.products.len());
    }

    #[tokio::test]
    async fn list_products_rejects_a_page_size_over_100() {
        let api = api().await;
        let err = api
            .list_products(Request::new(ListProductsRequest {
                size: 101,
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("size"));
    }

    #[tokio::test]
    async fn get_product_finds_an_exam_code_and_reports_unknown_ones() {
        let api = api().await;
        let p = api
            .get_product(Request::new(GetProductRequest {
                id: "az-700".into(),
            }))
            .await
            .unwrap();
        assert_eq!(p.into_inner().product.unwrap().id, "AZ-700");
        let err = api
            .get_product(Request::new(GetProductRequest {
                id: "NOPE-1".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
