//! `GET /api/products` and `GET /api/products/{id}`: the public catalog, forwarded to accept-svc's
//! `CatalogService`. A token is accepted (and checked) but not needed.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use contoso_proto::catalog::v1::{self as pb, GetProductRequest, ListProductsRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Caller, Rest, decimal, paging, query, upstream_problem};
use crate::problem::Problem;

const UPSTREAM: &str = "accept-svc";
/// Page size when the request names none (the original contract's).
const DEFAULT_SIZE: i32 = 12;

/// One product as the original contract shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "externalProductId": "AZ-104", "name": "Azure Administrator Associate (AZ-104) Bundle",
    "category": "Bundle", "vendor": "Microsoft", "imageUrl": "/images/products/az-104.svg",
    "discount": 10, "billingPeriod": "Annual", "isSubscription": true, "price": 134.99,
    "listPrice": 149.99, "currency": "USD"
}))]
pub(crate) struct Product {
    /// The public id: the exam code.
    external_product_id: String,
    name: String,
    category: String,
    vendor: String,
    /// Served by this gateway (a path on the same origin).
    image_url: String,
    /// Discount in percent, 0..=100.
    discount: i32,
    billing_period: BillingPeriod,
    is_subscription: bool,
    /// What the customer pays per unit, after the discount, as a decimal number.
    price: f64,
    /// The price before the discount.
    list_price: f64,
    /// ISO 4217 code.
    currency: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) enum BillingPeriod {
    Monthly,
    Annual,
}

impl From<pb::Product> for Product {
    fn from(p: pb::Product) -> Self {
        let billing_period = match p.billing_period() {
            pb::BillingPeriod::Annual => BillingPeriod::Annual,
            pb::BillingPeriod::Monthly | pb::BillingPeriod::Unspecified => BillingPeriod::Monthly,
        };
        Self {
            external_product_id: p.id,
            name: p.name,
            category: p.category,
            vendor: p.vendor,
            image_url: p.image_url,
            discount: p.discount_percent,
            billing_period,
            is_subscription: p.subscription,
            price: decimal(p.effective_price_cents),
            list_price: decimal(p.price_cents),
            currency: p.currency,
        }
    }
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProductPage {
    offset: i32,
    size: i32,
    /// Products matching the filters, over all pages.
    total: i32,
    items: Vec<Product>,
}

/// Filters and paging of `GET /api/products`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProductsQuery {
    /// Items to skip, 0 or more (default 0).
    #[param(value_type = Option<i32>, minimum = 0)]
    offset: Option<String>,
    /// Page size, 1..=100 (default 12).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    size: Option<String>,
    /// Case-insensitive text matched against the id and the name.
    q: Option<String>,
    /// Exact vendor name, case-insensitive.
    vendor: Option<String>,
    /// Exact category name, case-insensitive.
    category: Option<String>,
}

/// Pages through the catalog.
#[utoipa::path(
    get, path = "/api/products", tag = "catalog",
    params(ProductsQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 400, description = "A paging parameter is out of range or not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The token given is forged, expired or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(rest): State<Rest>,
    caller: Caller,
    params: Result<Query<ProductsQuery>, QueryRejection>,
) -> Result<Json<ProductPage>, Problem> {
    let params = query(params)?;
    let (offset, size) = paging(
        params.offset.as_deref(),
        params.size.as_deref(),
        DEFAULT_SIZE,
    )?;
    let request = caller.request(ListProductsRequest {
        offset,
        size,
        query: params.q.unwrap_or_default(),
        vendor: params.vendor.unwrap_or_default(),
        category: params.category.unwrap_or_default(),
    });
    let page = rest
        .catalog
        .clone()
        .list_products(request)
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner();
    Ok(Json(ProductPage {
        offset,
        size,
        total: page.total,
        items: page.products.into_iter().map(Product::from).collect(),
    }))
}

/// One product by its exam code.
#[utoipa::path(
    get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "The exam code, e.g. AZ-104")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "The id is blank (named under `errors`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The token given is forged, expired or malformed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product has this id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn get(
    State(rest): State<Rest>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Product>, Problem> {
    let product = fetch(&rest, &caller, id).await?;
    Ok(Json(Product::from(product)))
}

/// The product `id` from accept-svc; 404 when there is none.
pub(super) async fn fetch(
    rest: &Rest,
    caller: &Caller,
    id: String,
) -> Result<pb::Product, Problem> {
    rest.catalog
        .clone()
        .get_product(caller.request(GetProductRequest { id }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner()
        .product
        .ok_or_else(Problem::not_found)
}
