//! The catalog data file, the one source of truth for products: `migrate` upserts it into Postgres
//! and [`MemoryStore`](crate::MemoryStore) serves it as is. Both go through [`products`], so a
//! malformed file fails the same way (and in the unit tests below) before it reaches either.

use std::collections::HashSet;

use contoso_domain::Product;

use crate::StoreError;

/// `store/data/products.json`, compiled into the binary.
pub const PRODUCTS_JSON: &str = include_str!("../data/products.json");

/// The catalog from [`PRODUCTS_JSON`], parsed and checked with [`validate`], in file order.
pub fn products() -> Result<Vec<Product>, StoreError> {
    let products: Vec<Product> = serde_json::from_str(PRODUCTS_JSON)
        .map_err(|e| StoreError::corrupt("store/data/products.json", e))?;
    validate(&products)?;
    Ok(products)
}

/// Checks what the `products` table's constraints would check, so the in-memory store rejects
/// the same catalogs Postgres would: unique non-empty ids, a name, a discount in 0..=100, a
/// non-negative price and a three-letter upper-case currency code.
pub fn validate(products: &[Product]) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(products.len());
    for p in products {
        let invalid = |what: &str| Err(StoreError::corrupt(format!("product {:?}", p.id), what));
        if p.id.trim().is_empty() {
            return invalid("empty id");
        }
        if !seen.insert(p.id.as_str()) {
            return invalid("duplicate id");
        }
        if p.name.trim().is_empty() {
            return invalid("empty name");
        }
        if !(0..=100).contains(&p.discount_percent) {
            return invalid("discount percent outside 0..=100");
        }
        if p.price_cents < 0 {
            return invalid("negative price");
        }
        if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return invalid("currency is not a three-letter code");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use contoso_domain::BillingPeriod;

    #[test]
    fn data_file_holds_145_unique_valid_products() {
        let products = products().expect("products.json parses and validates");
        assert_eq!(products.len(), 145);
        let ids: HashSet<_> = products.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 145, "ids are unique");
        for p in &products {
            assert!(
                !p.name.is_empty() && !p.category.is_empty(),
                "{} has a name and category",
                p.id
            );
            assert!((0..=100).contains(&p.discount_percent), "{} discount", p.id);
            assert!(p.price_cents > 0, "{} has a price", p.id);
            assert_eq!(p.currency, "USD", "{} currency", p.id);
            assert_eq!(
                p.image_url,
                format!("/images/products/{}.svg", p.id.to_lowercase()),
                "{} image url",
                p.id
            );
        }
    }

    #[test]
    fn data_file_covers_the_major_vendors() {
        let products = products().expect("products.json parses");
        let vendors: BTreeSet<_> = products.iter().map(|p| p.vendor.as_str()).collect();
        assert!(
            vendors.len() >= 6,
            "only {} vendors: {vendors:?}",
            vendors.len()
        );
        for vendor in ["Microsoft", "AWS", "Cisco", "CompTIA", "Google Cloud"] {
            assert!(
                vendors.contains(vendor),
                "{vendor} missing from {vendors:?}"
            );
        }
    }

    #[test]
    fn data_file_uses_one_category_scheme_and_both_billing_periods() {
        let products = products().expect("products.json parses");
        let categories: BTreeSet<_> = products.iter().map(|p| p.category.as_str()).collect();
        let expected: BTreeSet<_> = [
            "Bundle",
            "Lab",
            "Practice Exam",
            "Study Guide",
            "Video Course",
        ]
        .into();
        assert_eq!(categories, expected);
        assert!(
            products
                .iter()
                .any(|p| p.billing_period == BillingPeriod::Monthly)
        );
        assert!(
            products
                .iter()
                .any(|p| p.billing_period == BillingPeriod::Annual)
        );
        assert!(products.iter().any(|p| !p.subscription));
    }

    #[test]
    fn data_file_keeps_a_few_inactive_products_for_testing() {
        let inactive = products()
            .expect("products.json parses")
            .into_iter()
            .filter(|p| !p.active);
        assert!((2..=3).contains(&inactive.count()));
    }

    #[test]
    fn validate_rejects_duplicates_and_out_of_range_fields() {
        let good = products().expect("products.json parses").remove(0);
        let bad_catalogs = [
            vec![good.clone(), good.clone()],
            vec![Product {
                discount_percent: 101,
                ..good.clone()
            }],
            vec![Product {
                discount_percent: -1,
                ..good.clone()
            }],
            vec![Product {
                price_cents: -1,
                ..good.clone()
            }],
            vec![Product {
                currency: "usd".into(),
                ..good.clone()
            }],
            vec![Product {
                id: " ".into(),
                ..good.clone()
            }],
        ];
        for catalog in bad_catalogs {
            assert!(
                matches!(validate(&catalog), Err(StoreError::Corrupt { .. })),
                "accepted {catalog:?}"
            );
        }
        assert!(validate(&[good]).is_ok());
    }
}
