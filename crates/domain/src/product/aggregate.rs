use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{Attributes, CategoryIds, Description, Images, ProductName, Sku, StockReason};
use super::{ProductCommand, ProductEvent, ProductImage, ProductStatus};
use crate::money::{Currency, Money};
use crate::validation::{FieldViolation, Violations};

/// A product as its own event history defines it.
///
/// Also the snapshot format. The fields added with the catalog (`currency`, `status`, ...) have
/// no serde defaults on purpose: a snapshot written before them fails to load and is rebuilt
/// from the events, instead of loading with a made-up currency.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// `None` until `ProductCreated`.
    pub id: Option<Uuid>,
    pub name: String,
    pub description: String,
    /// Exactly the currency's fraction digits.
    pub price: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    pub sku: Option<String>,
    pub status: ProductStatus,
    pub category_ids: Vec<Uuid>,
    pub attributes: BTreeMap<String, String>,
    pub images: Vec<ProductImage>,
    pub on_hand: u64,
    pub deleted: bool,
    /// Number of events applied: the aggregate's version, which clients see as the `ETag`.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProductError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("product {0} already exists")]
    AlreadyExists(Uuid),
    #[error("product not found")]
    NotFound,
    #[error("product has been deleted")]
    Deleted,
    #[error("product is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    /// A status change outside [`ProductStatus::TRANSITIONS`].
    #[error("a {from} product can only be {}; allowed: {}", .from.successors_in_words(), ProductStatus::TRANSITIONS)]
    InvalidTransition { from: ProductStatus, to: ProductStatus },
    /// The adjustment would leave less than nothing on hand.
    #[error("stock cannot go below 0: {on_hand} on hand, adjustment of {delta}")]
    InsufficientStock { on_hand: u64, delta: i64 },
}

impl Product {
    /// The highest stock level: what a signed 64-bit column (and the `i64` of commands) can hold.
    pub const MAX_ON_HAND: u64 = i64::MAX as u64;

    /// Folds a history into the product it describes: the same fold the event store performs,
    /// for readers that hold the events.
    pub fn replay(events: impl IntoIterator<Item = ProductEvent>) -> Self {
        let mut product = Self::default();
        for event in events {
            product.apply(event);
        }
        product
    }

    /// Rejects commands on products that do not exist or no longer exist, and stale versions.
    fn ensure_live(&self, expected_version: Option<u64>) -> Result<(), ProductError> {
        if self.id.is_none() {
            return Err(ProductError::NotFound);
        }
        if self.deleted {
            return Err(ProductError::Deleted);
        }
        match expected_version {
            Some(expected) if expected != self.version => {
                Err(ProductError::VersionMismatch { expected, actual: self.version })
            }
            _ => Ok(()),
        }
    }

    /// The product's own currency, for checking a new price against. It parsed when it was
    /// recorded, but today's rules may no longer accept it (a superseded code); then a new price
    /// needs a new currency with it.
    fn current_currency(&self, violations: &mut Violations) -> Option<Currency> {
        match Currency::parse(&self.currency) {
            Ok(currency) => Some(currency),
            Err(reason) => {
                violations.push(FieldViolation::new(
                    "currency",
                    "required",
                    format!("the product's currency is no longer accepted ({}); give a currency with the price", reason.message),
                ));
                None
            }
        }
    }

    fn decide(&self, command: ProductCommand) -> Result<ProductEvent, ProductError> {
        match command {
            ProductCommand::Create {
                id,
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
                on_hand,
                allow_http_images,
            } => {
                if self.id.is_some() {
                    return Err(ProductError::AlreadyExists(id));
                }
                let mut violations = Violations::default();
                let name = violations.check(ProductName::parse(&name));
                let description =
                    violations.check(Description::parse(description.as_deref().unwrap_or("")));
                let currency = violations.check(Currency::parse(&currency));
                let price = price_in(&mut violations, price, currency);
                let sku = match sku {
                    None => Some(None),
                    Some(raw) => violations.check(Sku::parse(&raw)).map(|sku| Some(sku.into_string())),
                };
                let category_ids = violations.check(CategoryIds::parse(category_ids));
                let attributes = violations.check_all(Attributes::parse(attributes));
                let images = violations.check_all(Images::parse(images, allow_http_images));
                let on_hand = violations.check(u64::try_from(on_hand).map_err(|_| {
                    FieldViolation::new("on_hand", "negative", "on_hand must be 0 or more")
                }));
                violations.into_result().map_err(ProductError::Invalid)?;
                // Every value is Some here: each None pushed a violation above.
                let price = price.unwrap();
                Ok(ProductEvent::ProductCreated {
                    id,
                    name: name.unwrap().as_str().to_owned(),
                    description: description.unwrap().as_str().to_owned(),
                    price: price.amount(),
                    currency: price.currency().code().to_owned(),
                    sku: sku.unwrap(),
                    status: status.unwrap_or_default(),
                    category_ids: category_ids.unwrap().into_vec(),
                    attributes: attributes.unwrap().into_map(),
                    images: images.unwrap().into_vec(),
                    on_hand: on_hand.unwrap(),
                })
            }
            ProductCommand::Update {
                expected_version,
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
                allow_http_images,
            } => {
                self.ensure_live(expected_version)?;
                let mut violations = Violations::default();
                let nothing_given = name.is_none()
                    && description.is_none()
                    && price.is_none()
                    && currency.is_none()
                    && sku.is_none()
                    && status.is_none()
                    && category_ids.is_none()
                    && attributes.is_none()
                    && images.is_none();
                if nothing_given {
                    violations.push(FieldViolation::new(
                        "body",
                        "empty_update",
                        "give at least one of name, description, price, currency, sku, status, category_ids, \
                         attributes, images",
                    ));
                }
                let name = name.and_then(|n| violations.check(ProductName::parse(&n)));
                let description =
                    description.and_then(|d| violations.check(Description::parse(&d)));
                // Outer None: no currency given; inner None: given but invalid (already reported).
                let new_currency = currency.map(|c| violations.check(Currency::parse(&c)));
                let price = match (price, new_currency) {
                    (Some(amount), Some(currency)) => price_in(&mut violations, amount, currency),
                    (Some(amount), None) => {
                        let currency = self.current_currency(&mut violations);
                        price_in(&mut violations, amount, currency)
                    }
                    // A new currency alone: the current price must fit its digits, and is recorded
                    // rescaled to them, so the event alone says what the price now is.
                    (None, Some(Some(currency))) if currency.code() != self.currency => {
                        violations.check(Money::parse(self.price, currency).map_err(|_| {
                            FieldViolation::new(
                                "price",
                                "too_precise",
                                format!(
                                    "the current price {} has more fraction digits than {currency} allows; \
                                     give a new price with the currency",
                                    self.price
                                ),
                            )
                        }))
                    }
                    (None, _) => None,
                };
                let sku = match sku {
                    None => None,
                    Some(None) => Some(None),
                    Some(Some(raw)) => violations.check(Sku::parse(&raw)).map(|sku| Some(sku.into_string())),
                };
                let category_ids = category_ids.and_then(|ids| violations.check(CategoryIds::parse(ids)));
                let attributes = attributes.and_then(|a| violations.check_all(Attributes::parse(a)));
                let images = images.and_then(|i| violations.check_all(Images::parse(i, allow_http_images)));
                violations.into_result().map_err(ProductError::Invalid)?;
                // Asking for the status the product already has is not a change, so not recorded.
                let status = status.filter(|to| *to != self.status);
                if let Some(to) = status {
                    if !self.status.can_change_to(to) {
                        return Err(ProductError::InvalidTransition { from: self.status, to });
                    }
                }
                Ok(ProductEvent::ProductUpdated {
                    name: name.map(|n| n.as_str().to_owned()),
                    description: description.map(|d| d.as_str().to_owned()),
                    price: price.map(|p| p.amount()),
                    currency: new_currency.flatten().map(|c| c.code().to_owned()),
                    sku,
                    status,
                    category_ids: category_ids.map(CategoryIds::into_vec),
                    attributes: attributes.map(Attributes::into_map),
                    images: images.map(Images::into_vec),
                })
            }
            ProductCommand::AdjustStock { delta, reason, expected_version } => {
                self.ensure_live(expected_version)?;
                let mut violations = Violations::default();
                if delta == 0 {
                    violations.push(FieldViolation::new("delta", "zero", "delta must not be 0"));
                }
                let reason = violations.check(StockReason::parse(&reason));
                // i128 holds any u64 plus any i64, so the sum itself cannot overflow.
                let after = i128::from(self.on_hand) + i128::from(delta);
                if after > i128::from(Self::MAX_ON_HAND) {
                    violations.push(FieldViolation::new(
                        "delta",
                        "too_large",
                        format!("on_hand may not exceed {}", Self::MAX_ON_HAND),
                    ));
                }
                violations.into_result().map_err(ProductError::Invalid)?;
                let on_hand = u64::try_from(after)
                    .map_err(|_| ProductError::InsufficientStock { on_hand: self.on_hand, delta })?;
                Ok(ProductEvent::ProductStockAdjusted {
                    delta,
                    reason: reason.unwrap().as_str().to_owned(),
                    on_hand,
                })
            }
            ProductCommand::Delete { expected_version } => {
                self.ensure_live(expected_version)?;
                Ok(ProductEvent::ProductDeleted {})
            }
        }
    }
}

/// Checks `amount` as a price in `currency`. Without a (valid) currency only the
/// currency-independent part is checked, so a bad price is still reported next to a bad currency.
fn price_in(violations: &mut Violations, amount: Decimal, currency: Option<Currency>) -> Option<Money> {
    match currency {
        Some(currency) => violations.check(Money::parse(amount, currency)),
        None => {
            violations.check(Money::check_range(amount));
            None
        }
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        match event {
            ProductEvent::ProductCreated {
                id,
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
                on_hand,
            } => {
                self.id = Some(id);
                self.name = name;
                self.description = description;
                self.price = price;
                self.currency = currency;
                self.sku = sku;
                self.status = status;
                self.category_ids = category_ids;
                self.attributes = attributes;
                self.images = images;
                self.on_hand = on_hand;
            }
            ProductEvent::ProductUpdated {
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
            } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(description) = description {
                    self.description = description;
                }
                if let Some(price) = price {
                    self.price = price;
                }
                if let Some(currency) = currency {
                    self.currency = currency;
                }
                if let Some(sku) = sku {
                    self.sku = sku;
                }
                if let Some(status) = status {
                    self.status = status;
                }
                if let Some(category_ids) = category_ids {
                    self.category_ids = category_ids;
                }
                if let Some(attributes) = attributes {
                    self.attributes = attributes;
                }
                if let Some(images) = images {
                    self.images = images;
                }
            }
            ProductEvent::ProductStockAdjusted { on_hand, .. } => self.on_hand = on_hand,
            ProductEvent::ProductDeleted {} => self.deleted = true,
        }
    }
}
