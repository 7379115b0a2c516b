//! A catalog product: what the shop sells.

use serde::{Deserialize, Serialize};

use crate::money;

/// How often a product is billed (subscriptions) or how long access lasts (one-time purchases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillingPeriod {
    /// Billed every month.
    Monthly,
    /// Billed, or granted, for a year.
    Annual,
}

/// One catalog product. Prices are in minor units (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Public id: the exam code, e.g. `AZ-700`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind of content: Practice Exam, Lab, Study Guide, Video Course or Bundle.
    pub category: String,
    /// Certification vendor, e.g. `Microsoft`.
    pub vendor: String,
    /// Path of the product image, served by the gateway.
    pub image_url: String,
    /// 0..=100.
    pub discount_percent: i32,
    /// Billing period, see [`BillingPeriod`].
    pub billing_period: BillingPeriod,
    /// True for recurring subscriptions, false for one-time purchases.
    pub subscription: bool,
    /// List price before the discount, in minor units.
    pub price_cents: i64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// Inactive products stay readable (old orders name them) but cannot be ordered.
    pub active: bool,
}

impl Product {
    /// What one unit costs after the discount, rounded half up to the cent.
    pub fn effective_price_cents(&self) -> i64 {
        money::discounted(self.price_cents, self.discount_percent)
    }
}
