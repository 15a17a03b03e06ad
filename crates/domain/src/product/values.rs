//! Validated product fields. Each `parse` is the only way to build one, so a value that exists is valid.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::validation::FieldViolation;

/// A product name: 1 to 100 characters after trimming surrounding white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new("name", "required", "name must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "name",
                "too_long",
                format!("name must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldViolation::new("name", "invalid", "name must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product description: at most 500 characters; empty means "no description".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new(
                "description",
                "too_long",
                format!("description must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price: an exact decimal greater than zero with at most two fraction digits.
///
/// Trailing zeros do not count as fraction digits (`19.990` is `19.99`); the canonical form
/// always carries two (`"20.00"`), which is how prices leave the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price(Decimal);

impl Price {
    pub const MAX_FRACTION_DIGITS: u32 = 2;
    /// A ceiling well inside `NUMERIC(14,2)`, so every accepted price fits the read store.
    pub const MAX: Decimal = Decimal::from_parts(2_147_483_647, 0, 0, false, 0);

    pub fn parse(raw: Decimal) -> Result<Self, FieldViolation> {
        let normalized = raw.normalize();
        if normalized <= Decimal::ZERO {
            return Err(FieldViolation::new("price", "not_positive", "price must be greater than 0"));
        }
        if normalized.scale() > Self::MAX_FRACTION_DIGITS {
            return Err(FieldViolation::new(
                "price",
                "too_precise",
                "price must have at most 2 fraction digits",
            ));
        }
        if normalized > Self::MAX {
            return Err(FieldViolation::new(
                "price",
                "too_large",
                format!("price must be at most {}", Self::MAX),
            ));
        }
        let mut canonical = normalized;
        canonical.rescale(Self::MAX_FRACTION_DIGITS);
        Ok(Self(canonical))
    }

    pub fn amount(&self) -> Decimal {
        self.0
    }
}

impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn price_keeps_exact_cents_and_renders_two_digits() {
        assert_eq!(Price::parse(dec("19.99")).unwrap().to_string(), "19.99");
        assert_eq!(Price::parse(dec("20")).unwrap().to_string(), "20.00");
        assert_eq!(Price::parse(dec("0.01")).unwrap().to_string(), "0.01");
        assert_eq!(Price::parse(dec("19.990")).unwrap().to_string(), "19.99");
    }

    #[test]
    fn price_rejects_zero_negative_and_sub_cent() {
        assert_eq!(Price::parse(dec("0")).unwrap_err().code, "not_positive");
        assert_eq!(Price::parse(dec("-1.00")).unwrap_err().code, "not_positive");
        assert_eq!(Price::parse(dec("1.001")).unwrap_err().code, "too_precise");
        assert_eq!(Price::parse(dec("3000000000")).unwrap_err().code, "too_large");
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(ProductName::parse("  Lamp ").unwrap().as_str(), "Lamp");
        assert_eq!(ProductName::parse("   ").unwrap_err().code, "required");
        assert_eq!(ProductName::parse(&"x".repeat(101)).unwrap_err().code, "too_long");
        assert!(ProductName::parse(&"é".repeat(100)).is_ok(), "limit counts characters, not bytes");
    }

    proptest! {
        #[test]
        fn any_whole_cent_amount_in_range_is_accepted(cents in 1i64..=214_748_364_700) {
            let price = Price::parse(Decimal::new(cents, 2)).unwrap();
            prop_assert_eq!(price.amount(), Decimal::new(cents, 2));
            prop_assert_eq!(price.amount().scale(), 2);
        }

        #[test]
        fn any_amount_with_a_third_significant_digit_is_rejected(mills in 1i64..10_000_000) {
            prop_assume!(mills % 10 != 0);
            let err = Price::parse(Decimal::new(mills, 3)).unwrap_err();
            prop_assert_eq!(err.code, "too_precise");
        }

        #[test]
        fn non_positive_amounts_are_rejected(cents in i64::MIN / 2..=0) {
            prop_assert!(Price::parse(Decimal::new(cents, 2)).is_err());
        }

        #[test]
        fn names_are_accepted_exactly_when_trimmed_length_is_1_to_100(name in "\\PC{0,120}") {
            let trimmed_len = name.trim().chars().count();
            prop_assert_eq!(ProductName::parse(&name).is_ok(), (1..=100).contains(&trimmed_len));
        }

        #[test]
        fn descriptions_are_accepted_exactly_up_to_500_chars(text in "\\PC{0,600}") {
            prop_assert_eq!(Description::parse(&text).is_ok(), text.chars().count() <= 500);
        }
    }
}
