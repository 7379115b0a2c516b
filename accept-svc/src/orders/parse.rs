//! Parsing a `PlaceOrder` request at the edge: lines checked against the catalog and priced from
//! it, the idempotency key checked. Past this point nothing is re-validated.

use contoso_domain::{LineRequest, OrderRuleViolation, PricedOrder, price_lines};
use contoso_proto::orders::v1::OrderLineRequest;

use crate::{catalog::CatalogCache, error::ApiError};

/// Longest idempotency key accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Checks `lines` against the catalog's rules ([`price_lines`]) and snapshots each product's name
/// and discounted unit price. An unknown or retired product is NOT_FOUND; any other broken rule is
/// INVALID_ARGUMENT naming its field.
pub(crate) fn price(
    lines: &[OrderLineRequest],
    catalog: &CatalogCache,
) -> Result<PricedOrder, ApiError> {
    let requests: Vec<LineRequest<'_>> = lines
        .iter()
        .map(|l| LineRequest {
            product_id: &l.product_id,
            quantity: l.quantity,
        })
        .collect();
    price_lines(&requests, |id| catalog.get(id)).map_err(|violation| match violation {
        OrderRuleViolation::UnknownProduct { .. } => ApiError::UnknownReference {
            field: violation.field(),
            message: violation.to_string(),
        },
        other => ApiError::invalid(other.field(), other.to_string()),
    })
}

/// The optional idempotency key: empty means none.
pub(crate) fn idempotency_key(raw: &str) -> Result<Option<String>, ApiError> {
    let key = raw.trim();
    if key.is_empty() {
        Ok(None)
    } else if key.len() > MAX_IDEMPOTENCY_KEY_LEN
        // No `:`, so `{user}:{key}` names one (user, key) pair only.
        || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Err(ApiError::invalid(
            "idempotency_key",
            format!("at most {MAX_IDEMPOTENCY_KEY_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.'"),
        ))
    } else {
        Ok(Some(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use contoso_store::{CatalogSource, MemoryStore};

    async fn catalog() -> CatalogCache {
        let store: Arc<dyn CatalogSource> = Arc::new(MemoryStore::new().unwrap());
        CatalogCache::load(store).await.unwrap()
    }

    fn line(id: &str, quantity: i32) -> OrderLineRequest {
        OrderLineRequest {
            product_id: id.into(),
            quantity,
        }
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn lines_are_priced_from_the_catalog_with_the_discount() {
        let catalog = catalog().await;
        let product = catalog.get("AZ-700").unwrap();
        let order = price(&[line("az-700", 3)], &catalog).unwrap();
        assert_eq!(order.lines[0].product_id, "AZ-700");
        assert_eq!(order.lines[0].product_name, product.name);
        assert_eq!(
            order.lines[0].unit_price_cents,
            product.effective_price_cents()
        );
        assert_eq!(order.total_cents, 3 * product.effective_price_cents());
    }

    #[tokio::test]
    async fn an_empty_order_is_refused() {
        assert_eq!(field_of(price(&[], &catalog().await).unwrap_err()), "lines");
    }

    #[tokio::test]
    async fn quantities_outside_1_to_100_name_the_line() {
        let catalog = catalog().await;
        for bad in [0, -1, 101] {
            let err = price(&[line("AZ-700", 1), line("AZ-104", bad)], &catalog).unwrap_err();
            assert_eq!(field_of(err), "lines[1].quantity");
        }
    }

    #[tokio::test]
    async fn more_than_50_lines_are_refused() {
        let catalog = catalog().await;
        let lines: Vec<_> = (0..51).map(|_| line("AZ-700", 1)).collect();
        assert_eq!(field_of(price(&lines, &catalog).unwrap_err()), "lines");
    }

    #[tokio::test]
    async fn an_unknown_product_is_not_found() {
        let err = price(&[line("NOPE-000", 1)], &catalog().await).unwrap_err();
        assert!(
            matches!(err, ApiError::UnknownReference { field, .. } if field == "lines[0].product_id")
        );
    }

    #[tokio::test]
    async fn an_inactive_product_is_not_for_sale() {
        let catalog = catalog().await;
        let store = MemoryStore::new().unwrap();
        let inactive = store
            .all_products()
            .await
            .unwrap()
            .into_iter()
            .find(|p| !p.active)
            .expect("the catalog has inactive products");
        let err = price(&[line(&inactive.id, 1)], &catalog).unwrap_err();
        assert!(matches!(err, ApiError::UnknownReference { .. }));
    }

    #[tokio::test]
    async fn a_product_twice_is_refused() {
        let err = price(&[line("AZ-700", 1), line("az-700", 2)], &catalog().await).unwrap_err();
        assert_eq!(field_of(err), "lines[1].product_id");
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert_eq!(idempotency_key("  ").unwrap(), None);
        assert_eq!(idempotency_key("k-1").unwrap().as_deref(), Some("k-1"));
        assert!(idempotency_key(&"k".repeat(129)).is_err());
        assert!(idempotency_key("a\nb").is_err());
        assert!(idempotency_key("b:c").is_err());
    }
}
