//! `contoso.catalog.v1.CatalogService`, forwarded to accept-svc. The catalog is public there, so
//! calls without a token go through as they are.

use contoso_proto::catalog::v1::{
    GetProductRequest, GetProductResponse, ListProductsRequest, ListProductsResponse,
    catalog_service_client::CatalogServiceClient, catalog_service_server::CatalogService,
};
use tonic::{Request, Response, Status, transport::Channel};

use super::unary;

const UPSTREAM: &str = "accept-svc";

#[derive(Debug, Clone)]
pub(crate) struct CatalogForwarder {
    client: CatalogServiceClient<Channel>,
}

impl CatalogForwarder {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: CatalogServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogForwarder {
    #[tracing::instrument(skip_all, fields(rpc = "ListProducts", request_id))]
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.list_products(r).await
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetProduct", request_id))]
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let mut client = self.client.clone();
        unary(UPSTREAM, request, move |r| async move {
            client.get_product(r).await
        })
        .await
    }
}
