//! Money is an integer count of minor units (cents) of one ISO 4217 currency inside the system;
//! only the edges (REST, the SPA) render decimals.

/// What a unit costs after `discount_percent` (0..=100) off `price_cents`, rounded half up to the
/// cent.
pub fn discounted(price_cents: i64, discount_percent: i32) -> i64 {
    (price_cents * i64::from(100 - discount_percent) + 50) / 100
}

/// True for a three-letter upper-case code such as `USD`.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discounts_round_half_up_to_the_cent() {
        assert_eq!(discounted(1000, 0), 1000);
        assert_eq!(discounted(1000, 100), 0);
        assert_eq!(discounted(999, 15), 849); // 849.15
        assert_eq!(discounted(1001, 50), 501); // 500.5
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(is_currency_code("USD"));
        assert!(!is_currency_code("usd"));
        assert!(!is_currency_code("US"));
    }
}
