//! Validated category fields. The description follows the product's rule ([`crate::product::Description`]).

use serde::{Deserialize, Serialize};

use crate::validation::{required_text, FieldViolation};

/// A category name: 1 to 100 characters after trimming, like a product name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryName(String);

impl CategoryName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        required_text("name", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The category's name in URLs: 1 to 100 characters, lower-case words of `a-z 0-9` joined by
/// single dashes (`desk-lamps`), so it needs no escaping and has one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slug(String);

impl Slug {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new("slug", "length", "slug must be 1 to 100 characters"));
        }
        let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !trimmed.split('-').all(word) {
            return Err(FieldViolation::new(
                "slug",
                "invalid",
                "slug must be words of a-z and 0-9 joined by single dashes, like desk-lamps",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs_are_dash_joined_lower_case_words() {
        for good in ["lamps", "desk-lamps", "a", "2024-sale", "x1-y2-z3"] {
            assert_eq!(Slug::parse(good).unwrap().as_str(), good);
        }
        for bad in ["Lamps", "desk_lamps", "-lamps", "lamps-", "desk--lamps", "desk lamps", "lämps"] {
            let err = Slug::parse(bad).unwrap_err();
            assert_eq!((err.field.as_str(), err.code.as_str()), ("slug", "invalid"), "{bad:?}");
        }
        assert_eq!(Slug::parse("").unwrap_err().code, "length");
        assert!(Slug::parse(&"a".repeat(100)).is_ok());
        assert_eq!(Slug::parse(&"a".repeat(101)).unwrap_err().code, "length");
    }

    #[test]
    fn names_follow_the_product_name_rule() {
        assert_eq!(CategoryName::parse(" Lamps ").unwrap().as_str(), "Lamps");
        assert_eq!(CategoryName::parse(" ").unwrap_err().code, "required");
        assert_eq!(CategoryName::parse(&"x".repeat(101)).unwrap_err().code, "too_long");
    }

    proptest! {
        #[test]
        fn slugs_are_accepted_exactly_when_they_match_the_pattern(slug in "[a-z0-9A-Z_-]{0,12}") {
            let matches = !slug.is_empty()
                && slug.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            prop_assert_eq!(Slug::parse(&slug).is_ok(), matches);
        }
    }
}
