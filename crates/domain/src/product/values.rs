//! Validated product fields. Each `parse` is the only way to build one, so a value that exists is valid.
//!
//! Prices and currencies live in [`crate::money`].

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::{check_max_chars, check_no_control_chars, required_text, FieldViolation, Violations};

/// A product name: 1 to 100 characters after trimming surrounding white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        required_text("name", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 500 characters; empty means "no description". Line breaks are fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    /// Line breaks and tabs are text here; other control characters (NUL above all, which
    /// no Postgres text or jsonb value can hold) are refused.
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        check_max_chars("description", raw, Self::MAX_CHARS)?;
        if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(FieldViolation::new(
                "description",
                "invalid",
                "description must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock keeping unit: 1 to 64 characters of `A-Z a-z 0-9 . _ -` after trimming, kept in the
/// case given. Unique across products, which the event store enforces, not this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku(String);

impl Sku {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldViolation::new("sku", "length", "sku must be 1 to 64 characters"));
        }
        if !trimmed.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(FieldViolation::new(
                "sku",
                "invalid",
                "sku may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Where a product is in its life: drafts are being prepared, published ones are for sale,
/// archived ones are withdrawn but kept (orders and links still refer to them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductStatus {
    Draft,
    /// The default on create, and what products created before statuses existed are.
    #[default]
    Published,
    Archived,
}

impl ProductStatus {
    /// Every allowed change of status, in words, for error messages.
    pub const TRANSITIONS: &'static str = "draft→published, draft→archived, published→archived, archived→published";

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }

    /// The statuses this one may change to. A product never goes back to draft: once it has
    /// been for sale, links and orders point at it, and a draft is expected to be unseen.
    pub fn successors(self) -> &'static [ProductStatus] {
        match self {
            Self::Draft => &[Self::Published, Self::Archived],
            Self::Published => &[Self::Archived],
            Self::Archived => &[Self::Published],
        }
    }

    /// Staying put is always allowed (it changes nothing); otherwise only [`successors`](Self::successors).
    pub fn can_change_to(self, to: ProductStatus) -> bool {
        self == to || self.successors().contains(&to)
    }

    /// The indefinite article for the status as an adjective: "an archived product".
    pub fn article(self) -> &'static str {
        match self {
            Self::Archived => "an",
            Self::Draft | Self::Published => "a",
        }
    }

    /// `"published or archived"`: the successors as the tail of "a draft product can only be ...".
    pub fn successors_in_words(self) -> String {
        let words: Vec<&str> = self.successors().iter().map(ProductStatus::as_str).collect();
        words.join(" or ")
    }
}

impl std::fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProductStatus {
    type Err = FieldViolation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "draft" => Ok(Self::Draft),
            "published" => Ok(Self::Published),
            "archived" => Ok(Self::Archived),
            _ => Err(FieldViolation::new("status", "invalid", "status must be draft, published or archived")),
        }
    }
}

/// The categories a product is listed in: duplicates dropped (first occurrence kept), at most 50.
/// Whether they exist is the service's check: it needs other aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryIds(Vec<Uuid>);

impl CategoryIds {
    pub const MAX: usize = 50;

    pub fn parse(raw: Vec<Uuid>) -> Result<Self, FieldViolation> {
        let mut seen = HashSet::with_capacity(raw.len());
        let ids: Vec<Uuid> = raw.into_iter().filter(|id| seen.insert(*id)).collect();
        if ids.len() > Self::MAX {
            return Err(FieldViolation::new(
                "category_ids",
                "too_many",
                format!("a product may be in at most {} categories", Self::MAX),
            ));
        }
        Ok(Self(ids))
    }

    pub fn into_vec(self) -> Vec<Uuid> {
        self.0
    }
}

/// Free-form product attributes (`colour: "red"`): at most 50, keys `[a-z0-9_]{1,40}` so they
/// work as filter parameters, values at most 200 characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes(BTreeMap<String, String>);

impl Attributes {
    pub const MAX_KEYS: usize = 50;
    pub const MAX_KEY_CHARS: usize = 40;
    pub const MAX_VALUE_CHARS: usize = 200;

    /// Reports every bad entry, each under `attributes.<key>`.
    pub fn parse(raw: BTreeMap<String, String>) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        if raw.len() > Self::MAX_KEYS {
            violations.push(FieldViolation::new(
                "attributes",
                "too_many",
                format!("a product may have at most {} attributes", Self::MAX_KEYS),
            ));
        }
        for (key, value) in &raw {
            let field = format!("attributes.{key}");
            let key_ok = (1..=Self::MAX_KEY_CHARS).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok {
                violations.push(FieldViolation::new(
                    &field,
                    "invalid_key",
                    "attribute names must be 1 to 40 characters of a-z, 0-9 and '_'",
                ));
                continue;
            }
            violations.check(check_max_chars(&field, value, Self::MAX_VALUE_CHARS));
            violations.check(check_no_control_chars(&field, value));
        }
        violations.into_result().map(|()| Self(raw))
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// A product image as commands carry it and events record it: where it is and what it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductImage {
    /// Absolute `https` URL in normalised form (as the `url` crate writes it).
    pub url: String,
    /// Text alternative for people who cannot see the image. `None` when not given or blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

/// A product's images, in display order: at most 20.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images(Vec<ProductImage>);

impl Images {
    pub const MAX: usize = 20;
    pub const MAX_URL_CHARS: usize = 2_000;
    pub const MAX_ALT_CHARS: usize = 200;

    /// Reports every bad image field as `images[i].url` / `images[i].alt`. Plain `http` URLs
    /// pass only with `allow_http` (a development setting): a shop page served over https that
    /// embeds http images gets mixed-content warnings or broken images.
    pub fn parse(raw: Vec<ProductImage>, allow_http: bool) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        if raw.len() > Self::MAX {
            violations.push(FieldViolation::new(
                "images",
                "too_many",
                format!("a product may have at most {} images", Self::MAX),
            ));
        }
        let mut images = Vec::with_capacity(raw.len());
        for (index, image) in raw.into_iter().enumerate() {
            let url = violations.check(Self::parse_url(&format!("images[{index}].url"), &image.url, allow_http));
            let alt = violations.check(Self::parse_alt(&format!("images[{index}].alt"), image.alt));
            if let (Some(url), Some(alt)) = (url, alt) {
                images.push(ProductImage { url, alt });
            }
        }
        violations.into_result().map(|()| Self(images))
    }

    fn parse_url(field: &str, raw: &str, allow_http: bool) -> Result<String, FieldViolation> {
        check_max_chars(field, raw, Self::MAX_URL_CHARS)?;
        let not_absolute = || FieldViolation::new(field, "invalid", "url must be an absolute https URL");
        let url = url::Url::parse(raw).map_err(|_| not_absolute())?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err(FieldViolation::new(field, "insecure", "url must use https")),
            _ => return Err(not_absolute()),
        }
        // Credentials in a public image link would be published with the catalog.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FieldViolation::new(field, "invalid", "url must not contain a user name or password"));
        }
        // Normalising can percent-encode and so lengthen the URL; the limit is on what is stored.
        let normalized = String::from(url);
        check_max_chars(field, &normalized, Self::MAX_URL_CHARS)?;
        Ok(normalized)
    }

    fn parse_alt(field: &str, raw: Option<String>) -> Result<Option<String>, FieldViolation> {
        let Some(raw) = raw else { return Ok(None) };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        check_max_chars(field, trimmed, Self::MAX_ALT_CHARS)?;
        check_no_control_chars(field, trimmed)?;
        Ok(Some(trimmed.to_owned()))
    }

    pub fn into_vec(self) -> Vec<ProductImage> {
        self.0
    }
}

/// Why stock was adjusted ("goods received", "stocktake"): 1 to 200 characters, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReason(String);

impl StockReason {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        required_text("reason", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod description_tests {
    use super::*;

    #[test]
    fn a_description_keeps_line_breaks_and_refuses_other_control_characters() {
        assert!(Description::parse("two\nlines\tand a tab\r\n").is_ok());
        for bad in ["nul\u{0}", "bell\u{7}", "escape\u{1b}[0m"] {
            assert_eq!(Description::parse(bad).unwrap_err().code, "invalid", "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image(url: &str, alt: Option<&str>) -> ProductImage {
        ProductImage { url: url.into(), alt: alt.map(str::to_owned) }
    }

    fn fields_and_codes(violations: Violations) -> Vec<(String, String)> {
        violations.0.into_iter().map(|v| (v.field, v.code)).collect()
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(ProductName::parse("  Lamp ").unwrap().as_str(), "Lamp");
        assert_eq!(ProductName::parse("   ").unwrap_err().code, "required");
        assert_eq!(ProductName::parse(&"x".repeat(101)).unwrap_err().code, "too_long");
        assert_eq!(ProductName::parse("a\u{7}b").unwrap_err().code, "invalid");
        assert!(ProductName::parse(&"é".repeat(100)).is_ok(), "limit counts characters, not bytes");
    }

    #[test]
    fn sku_is_1_to_64_of_letters_digits_dot_underscore_dash() {
        assert_eq!(Sku::parse(" Lamp-01.b_2 ").unwrap().as_str(), "Lamp-01.b_2");
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
        assert_eq!(Sku::parse(&"A".repeat(65)).unwrap_err().code, "length");
        assert_eq!(Sku::parse("").unwrap_err().code, "length");
        for bad in ["LAMP 1", "LAMP/1", "lämp", "LAMP#1"] {
            let err = Sku::parse(bad).unwrap_err();
            assert_eq!((err.field.as_str(), err.code.as_str()), ("sku", "invalid"), "{bad:?}");
        }
    }

    #[test]
    fn status_serialises_lower_case() {
        assert_eq!(serde_json::to_value(ProductStatus::Draft).unwrap(), serde_json::json!("draft"));
        assert_eq!(serde_json::to_value(ProductStatus::Published).unwrap(), serde_json::json!("published"));
        assert_eq!(serde_json::to_value(ProductStatus::Archived).unwrap(), serde_json::json!("archived"));
        assert_eq!("archived".parse::<ProductStatus>().unwrap(), ProductStatus::Archived);
        assert_eq!("Archived".parse::<ProductStatus>().unwrap_err().field, "status");
    }

    #[test]
    fn status_transitions_are_exactly_the_four_allowed_plus_staying_put() {
        use ProductStatus::*;
        let allowed = [(Draft, Published), (Draft, Archived), (Published, Archived), (Archived, Published)];
        for from in [Draft, Published, Archived] {
            for to in [Draft, Published, Archived] {
                let expected = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_change_to(to), expected, "{from}→{to}");
            }
        }
        assert_eq!(Draft.successors_in_words(), "published or archived");
    }

    #[test]
    fn category_ids_are_deduplicated_in_order_and_bounded() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(CategoryIds::parse(vec![b, a, b, a]).unwrap().into_vec(), vec![b, a]);
        let fifty: Vec<Uuid> = (0..50).map(Uuid::from_u128).collect();
        let mut with_repeats = fifty.clone();
        with_repeats.extend(fifty.iter().copied());
        assert_eq!(CategoryIds::parse(with_repeats).unwrap().into_vec(), fifty, "the limit counts distinct ids");
        let err = CategoryIds::parse((0..51).map(Uuid::from_u128).collect()).unwrap_err();
        assert_eq!((err.field.as_str(), err.code.as_str()), ("category_ids", "too_many"));
    }

    #[test]
    fn attributes_report_each_bad_entry_under_its_key() {
        let raw = BTreeMap::from([
            ("colour".to_owned(), "red".to_owned()),
            ("Colour".to_owned(), "red".to_owned()),
            ("size".to_owned(), "x".repeat(201)),
            ("note".to_owned(), "a\nb".to_owned()),
            ("k".repeat(41), "v".to_owned()),
            (String::new(), "v".to_owned()),
        ]);
        let violations = Attributes::parse(raw).unwrap_err();
        assert_eq!(
            fields_and_codes(violations),
            vec![
                ("attributes.".into(), "invalid_key".into()),
                ("attributes.Colour".into(), "invalid_key".into()),
                (format!("attributes.{}", "k".repeat(41)), "invalid_key".into()),
                ("attributes.note".into(), "invalid".into()),
                ("attributes.size".into(), "too_long".into()),
            ]
        );
    }

    #[test]
    fn attributes_allow_50_keys_of_up_to_40_chars_and_200_char_values() {
        let fifty: BTreeMap<String, String> = (0..50).map(|i| (format!("{i:0>40}"), "é".repeat(200))).collect();
        assert!(Attributes::parse(fifty.clone()).is_ok());
        let mut fifty_one = fifty;
        fifty_one.insert("extra".into(), "v".into());
        assert_eq!(
            fields_and_codes(Attributes::parse(fifty_one).unwrap_err()),
            vec![("attributes".into(), "too_many".into())]
        );
    }

    #[test]
    fn image_urls_must_be_absolute_https_and_are_normalised() {
        let images = Images::parse(vec![image("HTTPS://Example.com/a b.png", Some("  A lamp "))], false).unwrap();
        assert_eq!(images.into_vec(), vec![image("https://example.com/a%20b.png", Some("A lamp"))]);
        let blank_alt = Images::parse(vec![image("https://example.com/", Some("  "))], false).unwrap();
        assert_eq!(blank_alt.into_vec()[0].alt, None);

        let violations = Images::parse(
            vec![
                image("https://example.com/ok.png", None),
                image("/relative.png", None),
                image("http://example.com/plain.png", None),
                image("ftp://example.com/x.png", Some(&"a".repeat(201))),
                image("https://user:secret@example.com/x.png", Some("a\u{0}b")),
            ],
            false,
        )
        .unwrap_err();
        assert_eq!(
            fields_and_codes(violations),
            vec![
                ("images[1].url".into(), "invalid".into()),
                ("images[2].url".into(), "insecure".into()),
                ("images[3].url".into(), "invalid".into()),
                ("images[3].alt".into(), "too_long".into()),
                ("images[4].url".into(), "invalid".into()),
                ("images[4].alt".into(), "invalid".into()),
            ]
        );
    }

    #[test]
    fn plain_http_images_pass_only_when_allowed() {
        let http = || vec![image("http://localhost:8080/lamp.png", None)];
        assert!(Images::parse(http(), false).is_err());
        assert_eq!(Images::parse(http(), true).unwrap().into_vec(), http());
    }

    #[test]
    fn images_are_limited_to_20_and_urls_to_2000_chars() {
        let twenty = vec![image("https://example.com/x.png", None); 20];
        assert!(Images::parse(twenty.clone(), false).is_ok());
        let mut twenty_one = twenty;
        twenty_one.push(image("https://example.com/x.png", None));
        assert_eq!(
            fields_and_codes(Images::parse(twenty_one, false).unwrap_err()),
            vec![("images".into(), "too_many".into())]
        );

        let prefix = "https://example.com/";
        let longest = format!("{prefix}{}", "a".repeat(2_000 - prefix.len()));
        assert!(Images::parse(vec![image(&longest, None)], false).is_ok());
        let too_long = format!("{longest}a");
        assert_eq!(
            fields_and_codes(Images::parse(vec![image(&too_long, None)], false).unwrap_err()),
            vec![("images[0].url".into(), "too_long".into())]
        );
    }

    #[test]
    fn stock_reason_is_required_and_bounded() {
        assert_eq!(StockReason::parse(" stocktake ").unwrap().as_str(), "stocktake");
        assert_eq!(StockReason::parse("").unwrap_err().code, "required");
        assert_eq!(StockReason::parse(&"r".repeat(201)).unwrap_err().code, "too_long");
        assert_eq!(StockReason::parse("  ").unwrap_err().field, "reason");
    }

    proptest! {
        #[test]
        fn names_are_accepted_exactly_when_trimmed_length_is_1_to_100(name in "\\PC{0,120}") {
            let trimmed_len = name.trim().chars().count();
            prop_assert_eq!(ProductName::parse(&name).is_ok(), (1..=100).contains(&trimmed_len));
        }

        #[test]
        fn descriptions_are_accepted_exactly_up_to_500_chars(text in "\\PC{0,600}") {
            prop_assert_eq!(Description::parse(&text).is_ok(), text.chars().count() <= 500);
        }

        #[test]
        fn skus_of_allowed_characters_and_length_are_kept_as_given(sku in "[A-Za-z0-9._-]{1,64}") {
            prop_assert_eq!(Sku::parse(&sku).unwrap().into_string(), sku);
        }

        #[test]
        fn attribute_keys_are_accepted_exactly_when_they_match_the_pattern(key in "[a-zA-Z0-9_ -]{0,45}") {
            let valid = (1..=40).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let parsed = Attributes::parse(BTreeMap::from([(key, "v".to_owned())]));
            prop_assert_eq!(parsed.is_ok(), valid);
        }
    }
}
