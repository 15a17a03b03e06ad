//! Currencies and amounts of money.
//!
//! ISO 4217 data (codes and minor-unit digits) comes from the `iso_currency` crate, so the list
//! is kept up to date upstream instead of in a table here. An amount always carries exactly its
//! currency's fraction digits: EUR `19.99`, JPY `1999`, BHD `1.500`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::validation::FieldViolation;

/// An ISO 4217 currency a price may be given in.
///
/// Serialised as its code (`"EUR"`). Accepted: codes in ISO 4217 with defined minor units. Refused:
/// the "special" codes (precious metals, SDR, the test and no-currency codes), which have no
/// fraction digits to check against, and codes superseded by another currency (`HRK` by `EUR`):
/// a shop should not start pricing in money that is being withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldViolation::new(
                "currency",
                "invalid",
                "currency must be an ISO 4217 code of three upper-case letters, like EUR",
            ));
        }
        let Some(currency) = iso_currency::Currency::from_code(raw) else {
            return Err(FieldViolation::new("currency", "unknown", format!("{raw} is not an ISO 4217 currency code")));
        };
        if let Some(successor) = currency.is_superseded() {
            return Err(FieldViolation::new(
                "currency",
                "unsupported",
                format!("{raw} has been replaced by {}", successor.code()),
            ));
        }
        if currency.is_special() || currency.exponent().is_none() {
            return Err(FieldViolation::new(
                "currency",
                "unsupported",
                format!("{raw} is not a currency products can be priced in"),
            ));
        }
        Ok(Self(currency))
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in this currency's amounts (EUR 2, JPY 0, BHD 3).
    pub fn fraction_digits(&self) -> u32 {
        // `parse` admits only currencies with an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }

    /// `amount` written with exactly this currency's fraction digits: `"19.99"`, `"1999"` for
    /// JPY, `"1.500"` for BHD. Amounts with more digits (never a validated price) are rounded.
    pub fn render(&self, amount: Decimal) -> String {
        let mut scaled = amount.round_dp(self.fraction_digits());
        scaled.rescale(self.fraction_digits());
        scaled.to_string()
    }
}

impl TryFrom<String> for Currency {
    type Error = String;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code).map_err(|v| v.message)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.code().to_owned()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A price: an exact amount greater than zero in a currency, with at most that currency's
/// fraction digits.
///
/// Trailing zeros do not count as fraction digits (`19.990` EUR is `19.99`); the stored form is
/// rescaled to exactly the currency's digits (`20` EUR is `20.00`, `1.5` BHD is `1.500`), which is
/// how prices leave the system: as decimal strings, never floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// A ceiling well inside any `NUMERIC` column with 4 fraction digits (`NUMERIC(14,4)`), the
    /// most any accepted currency has, so every accepted price fits the read store.
    pub const MAX: Decimal = Decimal::from_parts(2_147_483_647, 0, 0, false, 0);

    pub fn parse(amount: Decimal, currency: Currency) -> Result<Self, FieldViolation> {
        let normalized = Self::check_range(amount)?;
        let digits = currency.fraction_digits();
        if normalized.scale() > digits {
            return Err(FieldViolation::new(
                "price",
                "too_precise",
                format!("price must have at most {digits} fraction digits in {currency}"),
            ));
        }
        let mut canonical = normalized;
        canonical.rescale(digits);
        Ok(Self { amount: canonical, currency })
    }

    /// The currency-independent part of the rule: greater than zero and at most [`MAX`](Self::MAX).
    /// Checked on its own when the currency is itself invalid, so both problems are reported.
    pub fn check_range(amount: Decimal) -> Result<Decimal, FieldViolation> {
        let normalized = amount.normalize();
        if normalized <= Decimal::ZERO {
            return Err(FieldViolation::new("price", "not_positive", "price must be greater than 0"));
        }
        if normalized > Self::MAX {
            return Err(FieldViolation::new("price", "too_large", format!("price must be at most {}", Self::MAX)));
        }
        Ok(normalized)
    }

    /// Exactly the currency's fraction digits.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount alone, with exactly the currency's digits (`"19.99"`).
    pub fn amount_string(&self) -> String {
        self.currency.render(self.amount)
    }
}

/// `"19.99 EUR"`.
impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount_string(), self.currency)
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

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn money(amount: &str, code: &str) -> Result<Money, FieldViolation> {
        Money::parse(dec(amount), currency(code))
    }

    #[test]
    fn fraction_digits_follow_the_currency() {
        assert_eq!(currency("EUR").fraction_digits(), 2);
        assert_eq!(currency("JPY").fraction_digits(), 0);
        assert_eq!(currency("BHD").fraction_digits(), 3);
        assert_eq!(currency("CLF").fraction_digits(), 4);
    }

    #[test]
    fn currency_codes_must_be_known_upper_case_and_usable() {
        assert_eq!(Currency::parse("eur").unwrap_err().code, "invalid");
        assert_eq!(Currency::parse("EURO").unwrap_err().code, "invalid");
        assert_eq!(Currency::parse("").unwrap_err().code, "invalid");
        assert_eq!(Currency::parse("ABC").unwrap_err().code, "unknown");
        assert_eq!(Currency::parse("XAU").unwrap_err().code, "unsupported");
        assert_eq!(Currency::parse("XXX").unwrap_err().code, "unsupported");
        let superseded = Currency::parse("HRK").unwrap_err();
        assert_eq!((superseded.field.as_str(), superseded.code.as_str()), ("currency", "unsupported"));
        assert!(superseded.message.contains("EUR"), "{}", superseded.message);
    }

    #[test]
    fn currency_serialises_as_its_code_and_rejects_unknown_codes_on_the_way_in() {
        assert_eq!(serde_json::to_value(currency("JPY")).unwrap(), serde_json::json!("JPY"));
        assert_eq!(serde_json::from_value::<Currency>(serde_json::json!("BHD")).unwrap(), currency("BHD"));
        assert!(serde_json::from_value::<Currency>(serde_json::json!("ABC")).is_err());
    }

    #[test]
    fn amounts_render_with_exactly_the_currencys_digits() {
        assert_eq!(money("19.99", "EUR").unwrap().amount_string(), "19.99");
        assert_eq!(money("20", "EUR").unwrap().amount_string(), "20.00");
        assert_eq!(money("19.990", "EUR").unwrap().amount_string(), "19.99");
        assert_eq!(money("1999", "JPY").unwrap().amount_string(), "1999");
        assert_eq!(money("1999.000", "JPY").unwrap().amount_string(), "1999");
        assert_eq!(money("1.5", "BHD").unwrap().amount_string(), "1.500");
        assert_eq!(money("1.5", "BHD").unwrap().to_string(), "1.500 BHD");
        assert_eq!(currency("JPY").render(dec("1999.00")), "1999");
        assert_eq!(currency("EUR").render(dec("5")), "5.00");
    }

    #[test]
    fn stored_amounts_carry_the_currencys_scale() {
        assert_eq!(money("20", "EUR").unwrap().amount().scale(), 2);
        assert_eq!(money("20", "JPY").unwrap().amount().scale(), 0);
        assert_eq!(money("20", "BHD").unwrap().amount().scale(), 3);
    }

    #[test]
    fn more_digits_than_the_currency_has_are_refused() {
        assert_eq!(money("19.99", "JPY").unwrap_err().code, "too_precise");
        assert_eq!(money("1.001", "EUR").unwrap_err().code, "too_precise");
        assert_eq!(money("1.0001", "BHD").unwrap_err().code, "too_precise");
        assert!(money("1.001", "BHD").is_ok());
    }

    #[test]
    fn zero_negative_and_huge_prices_are_refused() {
        assert_eq!(money("0", "EUR").unwrap_err().code, "not_positive");
        assert_eq!(money("-1.00", "EUR").unwrap_err().code, "not_positive");
        assert_eq!(money("3000000000", "JPY").unwrap_err().code, "too_large");
        assert_eq!(money("0.001", "EUR").unwrap_err().field, "price");
    }

    proptest! {
        #[test]
        fn any_whole_minor_unit_amount_in_range_is_accepted(
            units in 1i64..=2_147_483_647,
            code in prop::sample::select(vec!["JPY", "EUR", "BHD"]),
        ) {
            let currency = currency(code);
            let digits = currency.fraction_digits();
            let amount = Decimal::new(units, digits);
            let price = Money::parse(amount, currency).unwrap();
            prop_assert_eq!(price.amount(), amount);
            prop_assert_eq!(price.amount().scale(), digits);
        }

        #[test]
        fn any_amount_with_one_digit_too_many_is_rejected(
            units in 1i64..10_000_000,
            code in prop::sample::select(vec!["JPY", "EUR", "BHD"]),
        ) {
            prop_assume!(units % 10 != 0);
            let currency = currency(code);
            let err = Money::parse(Decimal::new(units, currency.fraction_digits() + 1), currency).unwrap_err();
            prop_assert_eq!(err.code, "too_precise");
        }

        #[test]
        fn non_positive_amounts_are_rejected(cents in i64::MIN / 2..=0) {
            prop_assert!(Money::parse(Decimal::new(cents, 2), currency("EUR")).is_err());
        }
    }
}
