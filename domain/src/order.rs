//! Orders: the quantity of a line, the line priced at intake, the order as accepted and as
//! recorded, and the rules a new order must satisfy ([`price_lines`]).

use std::{borrow::Borrow, collections::HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ids::{CorrelationId, OrderId, UserId},
    product::Product,
    status::OrderStatus,
};

/// Most lines one order may have.
pub const MAX_LINES: usize = 50;

/// Units of one product on one line: 1..=[`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Quantity(i32);

/// A quantity outside 1..=[`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and {max}, got {0}", max = Quantity::MAX)]
pub struct QuantityOutOfRange(pub i32);

impl Quantity {
    /// Most units of one product in one order (`order_items_quantity_check`).
    pub const MAX: i32 = 100;

    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i32> for Quantity {
    type Error = QuantityOutOfRange;
    fn try_from(raw: i32) -> Result<Self, Self::Error> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(QuantityOutOfRange(raw))
        }
    }
}

impl From<Quantity> for i32 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

/// An order line as accepted: the name and unit price are the snapshot taken at intake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product's exam code.
    pub product_id: String,
    /// Product name at intake.
    pub product_name: String,
    pub quantity: Quantity,
    /// Discounted unit price at intake, in minor units.
    pub unit_price_cents: i64,
}

impl OrderLine {
    /// Unit price times quantity; `None` on overflow.
    pub fn checked_total_cents(&self) -> Option<i64> {
        self.unit_price_cents
            .checked_mul(i64::from(self.quantity.get()))
    }

    /// Unit price times quantity, for lines priced from the catalog (which cannot overflow).
    pub fn total_cents(&self) -> i64 {
        self.unit_price_cents * i64::from(self.quantity.get())
    }
}

/// The sum of the line totals; `None` on overflow.
pub fn checked_order_total(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0i64, |sum, line| {
        line.checked_total_cents()
            .and_then(|total| sum.checked_add(total))
    })
}

/// An accepted order, as process-svc records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Id reserved at intake from a block of the orders sequence.
    pub order_id: OrderId,
    /// Workflow key; recording is idempotent on it.
    pub correlation_id: CorrelationId,
    /// The ordering user (JWT `sub`).
    pub customer: UserId,
    /// Lines in the order the customer gave them; stored as line numbers 1, 2, ...
    pub lines: Vec<OrderLine>,
    /// Sum of the line totals, in minor units.
    pub total_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When accept-svc accepted the order.
    pub accepted_at: DateTime<Utc>,
}

/// An order as the system of record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// Business id.
    pub order_id: OrderId,
    /// Workflow key.
    pub correlation_id: CorrelationId,
    /// Owner.
    pub customer: UserId,
    /// Current status; only moves forward.
    pub status: OrderStatus,
    /// Lines by line number.
    pub lines: Vec<OrderLine>,
    /// Order total, in minor units.
    pub total_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When accept-svc accepted the order: the customer's "placed at".
    pub accepted_at: DateTime<Utc>,
    /// When the order was recorded (orders list newest first by this).
    pub created_at: DateTime<Utc>,
    /// Last status change or deletion.
    pub updated_at: DateTime<Utc>,
    /// Soft-deleted: hidden from the owner's list, still readable by id.
    pub deleted: bool,
}

/// One line as the customer asked for it, before it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest<'a> {
    pub product_id: &'a str,
    pub quantity: i32,
}

/// Lines priced from the catalog at intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedOrder {
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub currency: String,
}

/// Why a requested order is not valid. [`OrderRuleViolation::field`] names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRuleViolation {
    #[error("an order needs at least one line")]
    NoLines,
    #[error("at most {MAX_LINES} lines per order")]
    TooManyLines,
    #[error("must not be empty")]
    EmptyProductId { line: usize },
    #[error("{source}")]
    Quantity {
        line: usize,
        source: QuantityOutOfRange,
    },
    /// Not in the catalog, or no longer for sale.
    #[error("product {product_id:?} is not in the catalog")]
    UnknownProduct { line: usize, product_id: String },
    #[error("{product_id} is already on lines[{first}]; raise its quantity instead")]
    DuplicateProduct {
        line: usize,
        first: usize,
        product_id: String,
    },
    #[error("products priced in different currencies")]
    MixedCurrencies { line: usize },
}

impl OrderRuleViolation {
    /// The request field at fault, e.g. `lines[2].quantity`.
    pub fn field(&self) -> String {
        match self {
            Self::NoLines | Self::TooManyLines => "lines".to_owned(),
            Self::Quantity { line, .. } => format!("lines[{line}].quantity"),
            Self::EmptyProductId { line }
            | Self::UnknownProduct { line, .. }
            | Self::DuplicateProduct { line, .. }
            | Self::MixedCurrencies { line } => format!("lines[{line}].product_id"),
        }
    }
}

/// Checks the requested lines against the catalog (`lookup` finds a product by id, active or
/// not) and snapshots each product's name and discounted unit price. An order has 1..=
/// [`MAX_LINES`] lines of distinct, active products in one currency, each of a valid
/// [`Quantity`]; the first line breaking a rule is reported.
pub fn price_lines<P: Borrow<Product>>(
    requests: &[LineRequest<'_>],
    lookup: impl Fn(&str) -> Option<P>,
) -> Result<PricedOrder, OrderRuleViolation> {
    if requests.is_empty() {
        return Err(OrderRuleViolation::NoLines);
    }
    if requests.len() > MAX_LINES {
        return Err(OrderRuleViolation::TooManyLines);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lines = Vec::with_capacity(requests.len());
    let mut currency: Option<String> = None;
    for (line, request) in requests.iter().enumerate() {
        let id = request.product_id.trim();
        if id.is_empty() {
            return Err(OrderRuleViolation::EmptyProductId { line });
        }
        let quantity = Quantity::try_from(request.quantity)
            .map_err(|source| OrderRuleViolation::Quantity { line, source })?;
        let found = lookup(id).filter(|p| p.borrow().active).ok_or_else(|| {
            OrderRuleViolation::UnknownProduct {
                line,
                product_id: id.to_owned(),
            }
        })?;
        let product = found.borrow();
        if let Some(first) = seen.insert(product.id.clone(), line) {
            return Err(OrderRuleViolation::DuplicateProduct {
                line,
                first,
                product_id: product.id.clone(),
            });
        }
        match &currency {
            None => currency = Some(product.currency.clone()),
            Some(c) if *c != product.currency => {
                return Err(OrderRuleViolation::MixedCurrencies { line });
            }
            Some(_) => {}
        }
        lines.push(OrderLine {
            product_id: product.id.clone(),
            product_name: product.name.clone(),
            quantity,
            unit_price_cents: product.effective_price_cents(),
        });
    }
    let total_cents = lines.iter().map(OrderLine::total_cents).sum();
    Ok(PricedOrder {
        lines,
        total_cents,
        currency: currency.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::BillingPeriod;

    fn product(id: &str, currency: &str, active: bool) -> Product {
        Product {
            id: id.to_owned(),
            name: format!("{id} practice"),
            category: "Practice Exam".to_owned(),
            vendor: "Microsoft".to_owned(),
            image_url: String::new(),
            discount_percent: 10,
            billing_period: BillingPeriod::Monthly,
            subscription: true,
            price_cents: 1000,
            currency: currency.to_owned(),
            active,
        }
    }

    fn catalog() -> Vec<Product> {
        vec![
            product("AZ-700", "USD", true),
            product("AZ-104", "USD", true),
            product("OLD-1", "USD", false),
            product("EU-1", "EUR", true),
        ]
    }

    fn price(requests: &[(&str, i32)]) -> Result<PricedOrder, OrderRuleViolation> {
        let catalog = catalog();
        let requests: Vec<_> = requests
            .iter()
            .map(|&(product_id, quantity)| LineRequest {
                product_id,
                quantity,
            })
            .collect();
        price_lines(&requests, |id| {
            catalog.iter().find(|p| p.id.eq_ignore_ascii_case(id))
        })
    }

    #[test]
    fn quantity_accepts_1_to_100_only() {
        assert_eq!(Quantity::try_from(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::try_from(100).map(Quantity::get), Ok(100));
        for bad in [0, -1, 101] {
            assert_eq!(Quantity::try_from(bad), Err(QuantityOutOfRange(bad)));
        }
    }

    #[test]
    fn lines_are_priced_with_the_discount_and_summed() {
        let order = price(&[("az-700", 3), ("AZ-104", 1)]).unwrap();
        assert_eq!(order.lines[0].product_id, "AZ-700");
        assert_eq!(order.lines[0].unit_price_cents, 900);
        assert_eq!(order.total_cents, 3 * 900 + 900);
        assert_eq!(order.currency, "USD");
        assert_eq!(checked_order_total(&order.lines), Some(order.total_cents));
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: [(&[(&str, i32)], &str); 7] = [
            (&[], "lines"),
            (&[("", 1)], "lines[0].product_id"),
            (&[("AZ-700", 1), ("AZ-104", 0)], "lines[1].quantity"),
            (&[("NOPE", 1)], "lines[0].product_id"),
            (&[("OLD-1", 1)], "lines[0].product_id"),
            (&[("AZ-700", 1), ("az-700", 1)], "lines[1].product_id"),
            (&[("AZ-700", 1), ("EU-1", 1)], "lines[1].product_id"),
        ];
        for (requests, field) in cases {
            assert_eq!(price(requests).unwrap_err().field(), field, "{requests:?}");
        }
        let too_many = vec![("AZ-700", 1); MAX_LINES + 1];
        assert_eq!(price(&too_many), Err(OrderRuleViolation::TooManyLines));
    }

    #[test]
    fn an_overflowing_total_is_detected() {
        let line = OrderLine {
            product_id: "X".into(),
            product_name: "X".into(),
            quantity: Quantity::try_from(2).unwrap(),
            unit_price_cents: i64::MAX / 2 + 1,
        };
        assert_eq!(checked_order_total(&[line]), None);
    }
}
