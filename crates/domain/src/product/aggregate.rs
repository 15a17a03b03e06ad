use std::collections::{BTreeMap, BTreeSet};

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
    /// Open holds: units per reservation. What is available is `on_hand` minus their sum.
    pub holds: BTreeMap<Uuid, u64>,
    /// Reservations whose hold was released or committed (or released before it was ever
    /// held): a repeated step is a no-op and a late reserve cannot hold again.
    pub settled: BTreeSet<Uuid>,
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
    #[error(
        "{} {from} product can only be {}; allowed: {}",
        .from.article(),
        .from.successors_in_words(),
        ProductStatus::TRANSITIONS
    )]
    InvalidTransition { from: ProductStatus, to: ProductStatus },
    /// The adjustment would leave less than nothing on hand.
    #[error("stock cannot go below 0: {on_hand} on hand, adjustment of {delta}")]
    InsufficientStock { on_hand: u64, delta: i64 },
    /// The adjustment would leave fewer units on hand than reservations hold.
    #[error("available stock cannot go below 0: {on_hand} on hand, {reserved} reserved, adjustment of {delta}")]
    StockReserved { on_hand: u64, reserved: u64, delta: i64 },
    /// A reservation asked for more than is available.
    #[error("only {available} available, {requested} requested")]
    NotEnoughAvailable { available: u64, requested: u64 },
    /// Only published products can be reserved.
    #[error("a {} product cannot be reserved", .0.as_str())]
    NotForSale(ProductStatus),
    /// The reservation's hold on this product was already released or committed.
    #[error("reservation {0} is already settled on this product")]
    ReservationSettled(Uuid),
    /// Committing a reservation that holds nothing here.
    #[error("reservation {0} holds no stock of this product")]
    NotHeld(Uuid),
}

impl Product {
    /// The highest stock level: what a signed 64-bit column (and the `i64` of commands) can hold.
    pub const MAX_ON_HAND: u64 = i64::MAX as u64;

    /// Units held by open reservations.
    pub fn reserved(&self) -> u64 {
        self.holds.values().sum()
    }

    /// Units that can still be reserved or adjusted away.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// Folds a history into the product it describes: the same fold the event store performs,
    /// for readers that hold the events.
    pub fn replay(events: impl IntoIterator<Item = ProductEvent>) -> Self {
        crate::replay(events)
    }

    /// Rejects commands on products that do not exist or no longer exist, and stale versions.
    fn ensure_live(&self, expected_version: Option<u64>) -> Result<(), ProductError> {
        crate::ensure_live(self.id.is_some(), self.deleted, self.version, expected_version).map_err(|e| match e {
            crate::NotLive::NotFound => ProductError::NotFound,
            crate::NotLive::Deleted => ProductError::Deleted,
            crate::NotLive::VersionMismatch { expected, actual } => ProductError::VersionMismatch { expected, actual },
        })
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
                    format!(
                        "the product's currency is no longer accepted ({}); give a currency with the price",
                        reason.message
                    ),
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
                let description = violations.check(Description::parse(description.as_deref().unwrap_or("")));
                let currency = violations.check(Currency::parse(&currency));
                let price = price_in(&mut violations, price, currency);
                let sku = match sku {
                    None => Some(None),
                    Some(raw) => violations.check(Sku::parse(&raw)).map(|sku| Some(sku.into_string())),
                };
                let category_ids = violations.check(CategoryIds::parse(category_ids));
                let attributes = violations.check_all(Attributes::parse(attributes));
                let images = violations.check_all(Images::parse(images, allow_http_images));
                let on_hand = violations.check(
                    u64::try_from(on_hand)
                        .map_err(|_| FieldViolation::new("on_hand", "negative", "on_hand must be 0 or more")),
                );
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
                let description = description.and_then(|d| violations.check(Description::parse(&d)));
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
                let reserved = self.reserved();
                if on_hand < reserved {
                    return Err(ProductError::StockReserved { on_hand: self.on_hand, reserved, delta });
                }
                Ok(ProductEvent::ProductStockAdjusted { delta, reason: reason.unwrap().as_str().to_owned(), on_hand })
            }
            ProductCommand::Delete { expected_version } => {
                self.ensure_live(expected_version)?;
                Ok(ProductEvent::ProductDeleted {})
            }
            ProductCommand::ReserveStock { .. }
            | ProductCommand::ReleaseStock { .. }
            | ProductCommand::CommitStock { .. } => {
                unreachable!("stock steps are decided by Product::decide_step")
            }
        }
    }

    /// The reservation steps. `None`: a repeat of a step already taken, which records nothing.
    fn decide_step(&self, command: &ProductCommand) -> Result<Option<ProductEvent>, ProductError> {
        match *command {
            ProductCommand::ReserveStock { reservation_id, quantity } => {
                self.ensure_live(None)?;
                if self.holds.contains_key(&reservation_id) {
                    return Ok(None);
                }
                if self.settled.contains(&reservation_id) {
                    return Err(ProductError::ReservationSettled(reservation_id));
                }
                if quantity == 0 {
                    let mut violations = Violations::default();
                    violations.push(FieldViolation::new("quantity", "too_small", "quantity must be at least 1"));
                    return Err(ProductError::Invalid(violations));
                }
                if self.status != ProductStatus::Published {
                    return Err(ProductError::NotForSale(self.status));
                }
                if quantity > self.available() {
                    return Err(ProductError::NotEnoughAvailable { available: self.available(), requested: quantity });
                }
                Ok(Some(ProductEvent::ProductStockReserved {
                    reservation_id,
                    quantity,
                    reserved: self.reserved() + quantity,
                }))
            }
            // A deleted product holds nothing anyone can take: releasing or committing there
            // records nothing (the product's stream stays closed).
            ProductCommand::ReleaseStock { reservation_id } => {
                match self.ensure_live(None) {
                    Err(ProductError::Deleted) => return Ok(None),
                    other => other?,
                }
                if self.settled.contains(&reservation_id) {
                    return Ok(None);
                }
                let quantity = self.holds.get(&reservation_id).copied().unwrap_or(0);
                Ok(Some(ProductEvent::ProductStockReleased {
                    reservation_id,
                    quantity,
                    reserved: self.reserved() - quantity,
                }))
            }
            ProductCommand::CommitStock { reservation_id } => {
                match self.ensure_live(None) {
                    Err(ProductError::Deleted) => return Ok(None),
                    other => other?,
                }
                if self.settled.contains(&reservation_id) {
                    return Ok(None);
                }
                let quantity = *self.holds.get(&reservation_id).ok_or(ProductError::NotHeld(reservation_id))?;
                Ok(Some(ProductEvent::ProductStockCommitted {
                    reservation_id,
                    quantity,
                    on_hand: self.on_hand - quantity,
                    reserved: self.reserved() - quantity,
                }))
            }
            _ => unreachable!("only stock steps"),
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
        let event = match command {
            ProductCommand::ReserveStock { .. }
            | ProductCommand::ReleaseStock { .. }
            | ProductCommand::CommitStock { .. } => match self.decide_step(&command)? {
                Some(event) => event,
                None => return Ok(()),
            },
            command => self.decide(command)?,
        };
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
            ProductEvent::ProductStockReserved { reservation_id, quantity, .. } => {
                self.holds.insert(reservation_id, quantity);
            }
            ProductEvent::ProductStockReleased { reservation_id, .. } => {
                self.holds.remove(&reservation_id);
                self.settled.insert(reservation_id);
            }
            ProductEvent::ProductStockCommitted { reservation_id, on_hand, .. } => {
                self.holds.remove(&reservation_id);
                self.settled.insert(reservation_id);
                self.on_hand = on_hand;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent;
    use proptest::prelude::*;
    use serde_json::json;
    use std::str::FromStr;
    use ProductStatus::{Archived, Draft, Published};

    type ProductTest = TestFramework<Product>;

    fn id() -> Uuid {
        Uuid::from_u128(0x1234)
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn image(url: &str) -> ProductImage {
        ProductImage { url: url.into(), alt: None }
    }

    /// A create command, valid as it stands; tests change the fields they are about.
    struct Create {
        name: &'static str,
        description: Option<String>,
        price: &'static str,
        currency: &'static str,
        sku: Option<String>,
        status: Option<ProductStatus>,
        category_ids: Vec<Uuid>,
        attributes: BTreeMap<String, String>,
        images: Vec<ProductImage>,
        on_hand: i64,
        allow_http_images: bool,
    }

    impl Default for Create {
        fn default() -> Self {
            Self {
                name: "Lamp",
                description: Some("A desk lamp".into()),
                price: "19.99",
                currency: "EUR",
                sku: None,
                status: None,
                category_ids: vec![],
                attributes: BTreeMap::new(),
                images: vec![],
                on_hand: 0,
                allow_http_images: false,
            }
        }
    }

    impl Create {
        fn command(self) -> ProductCommand {
            ProductCommand::Create {
                id: id(),
                name: self.name.into(),
                description: self.description,
                price: dec(self.price),
                currency: self.currency.into(),
                sku: self.sku,
                status: self.status,
                category_ids: self.category_ids,
                attributes: self.attributes,
                images: self.images,
                on_hand: self.on_hand,
                allow_http_images: self.allow_http_images,
            }
        }
    }

    /// The event of `Create::default()`; tests change the fields they are about.
    struct Created {
        price: &'static str,
        currency: &'static str,
        sku: Option<&'static str>,
        status: ProductStatus,
        on_hand: u64,
    }

    impl Default for Created {
        fn default() -> Self {
            Self { price: "19.99", currency: "EUR", sku: None, status: Published, on_hand: 0 }
        }
    }

    impl Created {
        fn event(self) -> ProductEvent {
            ProductEvent::ProductCreated {
                id: id(),
                name: "Lamp".into(),
                description: "A desk lamp".into(),
                price: dec(self.price),
                currency: self.currency.into(),
                sku: self.sku.map(str::to_owned),
                status: self.status,
                category_ids: vec![],
                attributes: BTreeMap::new(),
                images: vec![],
                on_hand: self.on_hand,
            }
        }
    }

    fn created() -> ProductEvent {
        Created::default().event()
    }

    #[derive(Default)]
    struct Update {
        expected_version: Option<u64>,
        name: Option<&'static str>,
        price: Option<&'static str>,
        currency: Option<&'static str>,
        sku: Option<Option<String>>,
        status: Option<ProductStatus>,
        category_ids: Option<Vec<Uuid>>,
        attributes: Option<BTreeMap<String, String>>,
        images: Option<Vec<ProductImage>>,
        allow_http_images: bool,
    }

    impl Update {
        fn command(self) -> ProductCommand {
            ProductCommand::Update {
                expected_version: self.expected_version,
                name: self.name.map(str::to_owned),
                description: None,
                price: self.price.map(dec),
                currency: self.currency.map(str::to_owned),
                sku: self.sku,
                status: self.status,
                category_ids: self.category_ids,
                attributes: self.attributes,
                images: self.images,
                allow_http_images: self.allow_http_images,
            }
        }
    }

    #[derive(Default)]
    struct Updated {
        name: Option<&'static str>,
        price: Option<&'static str>,
        currency: Option<&'static str>,
        sku: Option<Option<&'static str>>,
        status: Option<ProductStatus>,
        category_ids: Option<Vec<Uuid>>,
        attributes: Option<BTreeMap<String, String>>,
        images: Option<Vec<ProductImage>>,
    }

    impl Updated {
        fn event(self) -> ProductEvent {
            ProductEvent::ProductUpdated {
                name: self.name.map(str::to_owned),
                description: None,
                price: self.price.map(dec),
                currency: self.currency.map(str::to_owned),
                sku: self.sku.map(|sku| sku.map(str::to_owned)),
                status: self.status,
                category_ids: self.category_ids,
                attributes: self.attributes,
                images: self.images,
            }
        }
    }

    fn rename(expected_version: Option<u64>) -> ProductCommand {
        Update { expected_version, name: Some("Big lamp"), ..Default::default() }.command()
    }

    fn renamed() -> ProductEvent {
        Updated { name: Some("Big lamp"), ..Default::default() }.event()
    }

    fn adjust(delta: i64) -> ProductCommand {
        ProductCommand::AdjustStock { delta, reason: "stocktake".into(), expected_version: None }
    }

    fn adjusted(delta: i64, on_hand: u64) -> ProductEvent {
        ProductEvent::ProductStockAdjusted { delta, reason: "stocktake".into(), on_hand }
    }

    fn violation_codes(error: ProductError) -> Vec<(String, String)> {
        match error {
            ProductError::Invalid(v) => v.0.into_iter().map(|v| (v.field, v.code)).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn rejected(given: Vec<ProductEvent>, command: ProductCommand) -> Vec<(String, String)> {
        violation_codes(ProductTest::with(()).given(given).when(command).inspect_result().unwrap_err())
    }

    // --- create -------------------------------------------------------------------------------

    #[test]
    fn creating_a_valid_product_records_it_with_a_canonical_price() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(Create { name: " Lamp ", price: "19.990", ..Default::default() }.command())
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_without_description_records_an_empty_one() {
        let ProductEvent::ProductCreated { description, price, .. } = ProductTest::with(())
            .given_no_previous_events()
            .when(Create { description: None, price: "5", ..Default::default() }.command())
            .inspect_result()
            .unwrap()
            .remove(0)
        else {
            panic!("expected ProductCreated")
        };
        assert_eq!((description.as_str(), price.to_string().as_str()), ("", "5.00"));
    }

    #[test]
    fn creating_records_every_catalog_field_normalised() {
        let (a, b) = (Uuid::from_u128(0xA), Uuid::from_u128(0xB));
        let attributes = BTreeMap::from([("colour".to_owned(), "red".to_owned())]);
        ProductTest::with(())
            .given_no_previous_events()
            .when(
                Create {
                    sku: Some(" LAMP-01 ".into()),
                    status: Some(Draft),
                    category_ids: vec![a, b, a],
                    attributes: attributes.clone(),
                    images: vec![ProductImage {
                        url: "https://EXAMPLE.com/lamp.png".into(),
                        alt: Some(" Lamp ".into()),
                    }],
                    on_hand: 7,
                    ..Default::default()
                }
                .command(),
            )
            .then_expect_events(vec![ProductEvent::ProductCreated {
                id: id(),
                name: "Lamp".into(),
                description: "A desk lamp".into(),
                price: dec("19.99"),
                currency: "EUR".into(),
                sku: Some("LAMP-01".into()),
                status: Draft,
                category_ids: vec![a, b],
                attributes,
                images: vec![ProductImage { url: "https://example.com/lamp.png".into(), alt: Some("Lamp".into()) }],
                on_hand: 7,
            }]);
    }

    #[test]
    fn a_new_product_is_published_unless_another_status_is_asked_for() {
        for (asked, recorded) in
            [(None, Published), (Some(Draft), Draft), (Some(Published), Published), (Some(Archived), Archived)]
        {
            ProductTest::with(())
                .given_no_previous_events()
                .when(Create { status: asked, ..Default::default() }.command())
                .then_expect_events(vec![Created { status: recorded, ..Default::default() }.event()]);
        }
    }

    #[test]
    fn prices_are_recorded_with_exactly_the_currencys_digits() {
        for (price, currency, recorded) in [("19.99", "EUR", "19.99"), ("1999", "JPY", "1999"), ("1.5", "BHD", "1.500")]
        {
            ProductTest::with(())
                .given_no_previous_events()
                .when(Create { price, currency, ..Default::default() }.command())
                .then_expect_events(vec![Created { price: recorded, currency, ..Default::default() }.event()]);
        }
    }

    #[test]
    fn a_price_with_more_digits_than_its_currency_has_is_refused() {
        for (price, currency) in [("19.99", "JPY"), ("19.999", "EUR"), ("1.0001", "BHD")] {
            assert_eq!(
                rejected(vec![], Create { price, currency, ..Default::default() }.command()),
                vec![("price".into(), "too_precise".into())],
                "{price} {currency}"
            );
        }
    }

    #[test]
    fn creating_with_every_field_wrong_reports_every_field() {
        let error = ProductTest::with(())
            .given_no_previous_events()
            .when(
                Create {
                    name: "",
                    description: Some("d".repeat(501)),
                    price: "-1",
                    currency: "EURO",
                    sku: Some("no spaces".into()),
                    category_ids: (0..51).map(Uuid::from_u128).collect(),
                    attributes: BTreeMap::from([("Colour".to_owned(), "red".to_owned())]),
                    images: vec![image("https://example.com/ok.png"), image("http://example.com/x.png")],
                    on_hand: -1,
                    ..Default::default()
                }
                .command(),
            )
            .inspect_result()
            .unwrap_err();
        assert_eq!(
            violation_codes(error),
            vec![
                ("name".into(), "required".into()),
                ("description".into(), "too_long".into()),
                ("currency".into(), "invalid".into()),
                ("price".into(), "not_positive".into()),
                ("sku".into(), "invalid".into()),
                ("category_ids".into(), "too_many".into()),
                ("attributes.Colour".into(), "invalid_key".into()),
                ("images[1].url".into(), "insecure".into()),
                ("on_hand".into(), "negative".into()),
            ]
        );
    }

    #[test]
    fn http_images_are_accepted_on_create_only_when_the_command_allows_them() {
        let images = vec![image("http://localhost/lamp.png")];
        assert_eq!(
            rejected(vec![], Create { images: images.clone(), ..Default::default() }.command()),
            vec![("images[0].url".into(), "insecure".into())]
        );
        let events = ProductTest::with(())
            .given_no_previous_events()
            .when(Create { images, allow_http_images: true, ..Default::default() }.command())
            .inspect_result();
        assert!(events.is_ok());
    }

    #[test]
    fn creating_an_existing_product_is_rejected() {
        ProductTest::with(())
            .given(vec![created()])
            .when(Create::default().command())
            .then_expect_error(ProductError::AlreadyExists(id()));
    }

    // --- update -------------------------------------------------------------------------------

    #[test]
    fn a_partial_update_records_only_the_given_fields() {
        ProductTest::with(()).given(vec![created()]).when(rename(None)).then_expect_events(vec![renamed()]);
    }

    #[test]
    fn an_update_at_the_expected_version_is_accepted() {
        ProductTest::with(()).given(vec![created()]).when(rename(Some(1))).then_expect_events(vec![renamed()]);
    }

    #[test]
    fn an_update_against_a_stale_version_is_rejected() {
        ProductTest::with(())
            .given(vec![created(), renamed()])
            .when(rename(Some(1)))
            .then_expect_error(ProductError::VersionMismatch { expected: 1, actual: 2 });
    }

    #[test]
    fn an_empty_update_is_rejected() {
        assert_eq!(
            rejected(vec![created()], Update::default().command()),
            vec![("body".into(), "empty_update".into())]
        );
    }

    #[test]
    fn a_new_price_alone_is_checked_against_the_products_currency() {
        assert_eq!(
            rejected(vec![created()], Update { price: Some("-3"), ..Default::default() }.command()),
            vec![("price".into(), "not_positive".into())]
        );
        let yen = Created { price: "1999", currency: "JPY", ..Default::default() }.event();
        assert_eq!(
            rejected(vec![yen.clone()], Update { price: Some("19.99"), ..Default::default() }.command()),
            vec![("price".into(), "too_precise".into())]
        );
        ProductTest::with(())
            .given(vec![yen])
            .when(Update { price: Some("2500.0"), ..Default::default() }.command())
            .then_expect_events(vec![Updated { price: Some("2500"), ..Default::default() }.event()]);
    }

    #[test]
    fn a_new_currency_alone_rechecks_the_current_price_against_its_digits() {
        // EUR 19.99 has cents; yen has none.
        assert_eq!(
            rejected(vec![created()], Update { currency: Some("JPY"), ..Default::default() }.command()),
            vec![("price".into(), "too_precise".into())]
        );
        // A price that fits is recorded rescaled to the new currency, so the event says it all.
        ProductTest::with(())
            .given(vec![Created { price: "20.00", ..Default::default() }.event()])
            .when(Update { currency: Some("JPY"), ..Default::default() }.command())
            .then_expect_events(vec![
                Updated { price: Some("20"), currency: Some("JPY"), ..Default::default() }.event()
            ]);
        ProductTest::with(())
            .given(vec![created()])
            .when(Update { currency: Some("BHD"), ..Default::default() }.command())
            .then_expect_events(vec![
                Updated { price: Some("19.990"), currency: Some("BHD"), ..Default::default() }.event()
            ]);
        // The same currency again changes no price.
        ProductTest::with(())
            .given(vec![created()])
            .when(Update { currency: Some("EUR"), ..Default::default() }.command())
            .then_expect_events(vec![Updated { currency: Some("EUR"), ..Default::default() }.event()]);
    }

    #[test]
    fn a_new_currency_with_a_new_price_checks_the_price_against_the_new_currency() {
        ProductTest::with(())
            .given(vec![created()])
            .when(Update { price: Some("1999"), currency: Some("JPY"), ..Default::default() }.command())
            .then_expect_events(vec![
                Updated { price: Some("1999"), currency: Some("JPY"), ..Default::default() }.event()
            ]);
        assert_eq!(
            rejected(
                vec![created()],
                Update { price: Some("0"), currency: Some("ABC"), ..Default::default() }.command()
            ),
            vec![("currency".into(), "unknown".into()), ("price".into(), "not_positive".into())]
        );
    }

    #[test]
    fn a_price_for_a_product_whose_currency_is_no_longer_accepted_needs_a_currency() {
        let kuna = Created { currency: "HRK", ..Default::default() }.event();
        assert_eq!(
            rejected(vec![kuna.clone()], Update { price: Some("5"), ..Default::default() }.command()),
            vec![("currency".into(), "required".into())]
        );
        ProductTest::with(())
            .given(vec![kuna])
            .when(Update { price: Some("5"), currency: Some("EUR"), ..Default::default() }.command())
            .then_expect_events(vec![
                Updated { price: Some("5.00"), currency: Some("EUR"), ..Default::default() }.event()
            ]);
    }

    #[test]
    fn the_sku_can_be_set_changed_and_cleared() {
        ProductTest::with(())
            .given(vec![created()])
            .when(Update { sku: Some(Some(" LAMP-01 ".into())), ..Default::default() }.command())
            .then_expect_events(vec![Updated { sku: Some(Some("LAMP-01")), ..Default::default() }.event()]);
        let with_sku = Created { sku: Some("LAMP-01"), ..Default::default() }.event();
        ProductTest::with(())
            .given(vec![with_sku.clone()])
            .when(Update { sku: Some(Some("LAMP-02".into())), ..Default::default() }.command())
            .then_expect_events(vec![Updated { sku: Some(Some("LAMP-02")), ..Default::default() }.event()]);
        ProductTest::with(())
            .given(vec![with_sku])
            .when(Update { sku: Some(None), ..Default::default() }.command())
            .then_expect_events(vec![Updated { sku: Some(None), ..Default::default() }.event()]);
    }

    #[test]
    fn an_invalid_sku_is_refused_on_create_and_update() {
        for sku in [String::new(), "S".repeat(65)] {
            assert_eq!(
                rejected(vec![], Create { sku: Some(sku.clone()), ..Default::default() }.command()),
                vec![("sku".into(), "length".into())]
            );
            assert_eq!(
                rejected(vec![created()], Update { sku: Some(Some(sku)), ..Default::default() }.command()),
                vec![("sku".into(), "length".into())]
            );
        }
    }

    #[test]
    fn every_status_change_is_allowed_or_refused_by_the_transition_rules() {
        let allowed = [(Draft, Published), (Draft, Archived), (Published, Archived), (Archived, Published)];
        for from in [Draft, Published, Archived] {
            for to in [Draft, Published, Archived] {
                let given = vec![Created { status: from, ..Default::default() }.event()];
                let when = Update { status: Some(to), ..Default::default() }.command();
                let test = ProductTest::with(()).given(given).when(when);
                if from == to {
                    // Not an error, and nothing to record for the field: one empty update event.
                    test.then_expect_events(vec![Updated::default().event()]);
                } else if allowed.contains(&(from, to)) {
                    test.then_expect_events(vec![Updated { status: Some(to), ..Default::default() }.event()]);
                } else {
                    test.then_expect_error(ProductError::InvalidTransition { from, to });
                }
            }
        }
    }

    #[test]
    fn a_refused_transition_states_the_rule() {
        assert_eq!(
            ProductError::InvalidTransition { from: Published, to: Draft }.to_string(),
            "a published product can only be archived; allowed: draft→published, draft→archived, \
             published→archived, archived→published"
        );
        assert_eq!(
            ProductError::InvalidTransition { from: Archived, to: Draft }.to_string(),
            "an archived product can only be published; allowed: draft→published, draft→archived, \
             published→archived, archived→published"
        );
    }

    #[test]
    fn collections_are_replaced_whole() {
        let a = Uuid::from_u128(0xA);
        let attributes = BTreeMap::from([("size".to_owned(), "XL".to_owned())]);
        ProductTest::with(())
            .given(vec![created()])
            .when(
                Update {
                    category_ids: Some(vec![a, a]),
                    attributes: Some(attributes.clone()),
                    images: Some(vec![image("https://example.com/a.png")]),
                    ..Default::default()
                }
                .command(),
            )
            .then_expect_events(vec![Updated {
                category_ids: Some(vec![a]),
                attributes: Some(attributes),
                images: Some(vec![image("https://example.com/a.png")]),
                ..Default::default()
            }
            .event()]);
        ProductTest::with(())
            .given(vec![created()])
            .when(
                Update {
                    category_ids: Some(vec![]),
                    attributes: Some(BTreeMap::new()),
                    images: Some(vec![]),
                    ..Default::default()
                }
                .command(),
            )
            .then_expect_events(vec![Updated {
                category_ids: Some(vec![]),
                attributes: Some(BTreeMap::new()),
                images: Some(vec![]),
                ..Default::default()
            }
            .event()]);
    }

    #[test]
    fn an_update_reports_bad_collection_entries_by_their_exact_field() {
        let too_long: String = "v".repeat(201);
        let mut images = vec![image("https://example.com/ok.png"); 3];
        images.push(ProductImage { url: "not a url".into(), alt: Some("a".repeat(201)) });
        assert_eq!(
            rejected(
                vec![created()],
                Update {
                    category_ids: Some((0..51).map(Uuid::from_u128).collect()),
                    attributes: Some(BTreeMap::from([("colour".to_owned(), too_long)])),
                    images: Some(images),
                    ..Default::default()
                }
                .command()
            ),
            vec![
                ("category_ids".into(), "too_many".into()),
                ("attributes.colour".into(), "too_long".into()),
                ("images[3].url".into(), "invalid".into()),
                ("images[3].alt".into(), "too_long".into()),
            ]
        );
        assert_eq!(
            rejected(
                vec![created()],
                Update { images: Some(vec![image("https://example.com/x.png"); 21]), ..Default::default() }.command()
            ),
            vec![("images".into(), "too_many".into())]
        );
        let fifty_one = (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            rejected(vec![created()], Update { attributes: Some(fifty_one), ..Default::default() }.command()),
            vec![("attributes".into(), "too_many".into())]
        );
    }

    #[test]
    fn http_images_are_accepted_on_update_only_when_the_command_allows_them() {
        let images = || Some(vec![image("http://localhost/lamp.png")]);
        assert_eq!(
            rejected(vec![created()], Update { images: images(), ..Default::default() }.command()),
            vec![("images[0].url".into(), "insecure".into())]
        );
        ProductTest::with(())
            .given(vec![created()])
            .when(Update { images: images(), allow_http_images: true, ..Default::default() }.command())
            .then_expect_events(vec![Updated { images: images(), ..Default::default() }.event()]);
    }

    #[test]
    fn field_violations_are_reported_before_a_refused_transition() {
        assert_eq!(
            rejected(vec![created()], Update { name: Some(""), status: Some(Draft), ..Default::default() }.command()),
            vec![("name".into(), "required".into())]
        );
    }

    #[test]
    fn updating_an_unknown_product_is_not_found() {
        ProductTest::with(()).given_no_previous_events().when(rename(None)).then_expect_error(ProductError::NotFound);
    }

    // --- stock --------------------------------------------------------------------------------

    #[test]
    fn stock_adjustments_record_the_delta_and_the_level_after() {
        ProductTest::with(()).given(vec![created()]).when(adjust(10)).then_expect_events(vec![adjusted(10, 10)]);
        ProductTest::with(())
            .given(vec![created(), adjusted(10, 10)])
            .when(adjust(-10))
            .then_expect_events(vec![adjusted(-10, 0)]);
    }

    #[test]
    fn stock_cannot_go_below_zero() {
        ProductTest::with(())
            .given(vec![Created { on_hand: 3, ..Default::default() }.event()])
            .when(adjust(-4))
            .then_expect_error(ProductError::InsufficientStock { on_hand: 3, delta: -4 });
        ProductTest::with(())
            .given(vec![created()])
            .when(adjust(i64::MIN))
            .then_expect_error(ProductError::InsufficientStock { on_hand: 0, delta: i64::MIN });
    }

    #[test]
    fn a_stock_adjustment_needs_a_non_zero_delta_and_a_reason() {
        assert_eq!(
            rejected(
                vec![created()],
                ProductCommand::AdjustStock { delta: 0, reason: " ".into(), expected_version: None }
            ),
            vec![("delta".into(), "zero".into()), ("reason".into(), "required".into())]
        );
        assert_eq!(
            rejected(
                vec![created()],
                ProductCommand::AdjustStock { delta: 1, reason: "r".repeat(201), expected_version: None }
            ),
            vec![("reason".into(), "too_long".into())]
        );
    }

    #[test]
    fn stock_cannot_exceed_what_a_signed_64_bit_column_holds() {
        assert_eq!(
            rejected(vec![Created { on_hand: Product::MAX_ON_HAND, ..Default::default() }.event()], adjust(1)),
            vec![("delta".into(), "too_large".into())]
        );
        ProductTest::with(())
            .given(vec![created()])
            .when(adjust(i64::MAX))
            .then_expect_events(vec![adjusted(i64::MAX, Product::MAX_ON_HAND)]);
    }

    #[test]
    fn stock_adjustments_check_the_version_and_that_the_product_lives() {
        ProductTest::with(())
            .given(vec![created(), renamed()])
            .when(ProductCommand::AdjustStock { delta: 1, reason: "count".into(), expected_version: Some(1) })
            .then_expect_error(ProductError::VersionMismatch { expected: 1, actual: 2 });
        ProductTest::with(()).given_no_previous_events().when(adjust(1)).then_expect_error(ProductError::NotFound);
        ProductTest::with(())
            .given(vec![created(), ProductEvent::ProductDeleted {}])
            .when(adjust(1))
            .then_expect_error(ProductError::Deleted);
    }

    // --- delete -------------------------------------------------------------------------------

    #[test]
    fn deleting_a_product_records_it() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Delete { expected_version: None })
            .then_expect_events(vec![ProductEvent::ProductDeleted {}]);
    }

    #[test]
    fn deleting_an_unknown_product_is_not_found() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Delete { expected_version: None })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn a_deleted_product_accepts_no_update() {
        ProductTest::with(())
            .given(vec![created(), ProductEvent::ProductDeleted {}])
            .when(rename(None))
            .then_expect_error(ProductError::Deleted);
    }

    #[test]
    fn a_deleted_product_cannot_be_deleted_again() {
        ProductTest::with(())
            .given(vec![created(), ProductEvent::ProductDeleted {}])
            .when(ProductCommand::Delete { expected_version: None })
            .then_expect_error(ProductError::Deleted);
    }

    #[test]
    fn a_deleted_product_cannot_be_created_again() {
        ProductTest::with(())
            .given(vec![created(), ProductEvent::ProductDeleted {}])
            .when(Create::default().command())
            .then_expect_error(ProductError::AlreadyExists(id()));
    }

    // --- fold and wire format -----------------------------------------------------------------

    #[test]
    fn replaying_applies_every_event_and_counts_the_version() {
        let a = Uuid::from_u128(0xA);
        let product = Product::replay(vec![
            Created { sku: Some("LAMP-01"), status: Draft, ..Default::default() }.event(),
            Updated { price: Some("20"), currency: Some("JPY"), status: Some(Published), ..Default::default() }.event(),
            Updated { sku: Some(None), category_ids: Some(vec![a]), ..Default::default() }.event(),
            adjusted(5, 5),
            adjusted(-2, 3),
        ]);
        assert_eq!(product.version, 5);
        assert_eq!((product.price, product.currency.as_str()), (dec("20"), "JPY"));
        assert_eq!(product.status, Published);
        assert_eq!(product.sku, None);
        assert_eq!(product.category_ids, vec![a]);
        assert_eq!(product.on_hand, 3);
        assert_eq!(product.name, "Lamp", "fields an update leaves out stay");
    }

    #[test]
    fn prices_are_stored_as_strings_with_the_currencys_digits_never_floats() {
        let json = serde_json::to_value(created()).unwrap();
        assert_eq!(json["ProductCreated"]["price"], json!("19.99"));
        assert_eq!(json["ProductCreated"]["status"], json!("published"));
        let yen =
            serde_json::to_value(Created { price: "1999", currency: "JPY", ..Default::default() }.event()).unwrap();
        assert_eq!(
            (&yen["ProductCreated"]["price"], &yen["ProductCreated"]["currency"]),
            (&json!("1999"), &json!("JPY"))
        );
        let dinar =
            serde_json::to_value(Created { price: "1.500", currency: "BHD", ..Default::default() }.event()).unwrap();
        assert_eq!(dinar["ProductCreated"]["price"], json!("1.500"));
    }

    #[test]
    fn a_1_0_0_created_event_reads_once_currency_and_status_are_added() {
        let v1 = json!({"ProductCreated": {
            "id": id().to_string(), "name": "Lamp", "description": "A desk lamp", "price": "19.99"}});
        assert!(serde_json::from_value::<ProductEvent>(v1.clone()).is_err(), "currency and status must be upcast in");
        let mut upcast = v1;
        upcast["ProductCreated"]["currency"] = json!("EUR");
        upcast["ProductCreated"]["status"] = json!("published");
        assert_eq!(serde_json::from_value::<ProductEvent>(upcast).unwrap(), created());
    }

    #[test]
    fn a_1_0_0_updated_event_still_reads() {
        let v1 = json!({"ProductUpdated": {"price": "2.00"}});
        assert_eq!(
            serde_json::from_value::<ProductEvent>(v1).unwrap(),
            Updated { price: Some("2.00"), ..Default::default() }.event()
        );
    }

    #[test]
    fn the_sku_keeps_its_three_states_on_the_wire() {
        for (event, wire) in [
            (Updated { name: Some("Lamp"), ..Default::default() }.event(), json!({"ProductUpdated": {"name": "Lamp"}})),
            (Updated { sku: Some(None), ..Default::default() }.event(), json!({"ProductUpdated": {"sku": null}})),
            (
                Updated { sku: Some(Some("LAMP-01")), ..Default::default() }.event(),
                json!({"ProductUpdated": {"sku": "LAMP-01"}}),
            ),
        ] {
            assert_eq!(serde_json::to_value(&event).unwrap(), wire);
            assert_eq!(serde_json::from_value::<ProductEvent>(wire).unwrap(), event);
        }
        // Commands carry the same three states.
        let clear = Update { sku: Some(None), ..Default::default() }.command();
        let wire = serde_json::to_value(&clear).unwrap();
        assert_eq!(wire["Update"]["sku"], json!(null));
        assert_eq!(serde_json::from_value::<ProductCommand>(wire).unwrap(), clear);
    }

    #[test]
    fn event_names_and_versions() {
        assert_eq!((created().event_type(), created().event_version()), ("ProductCreated".into(), "2.0.0".into()));
        assert_eq!((renamed().event_type(), renamed().event_version()), ("ProductUpdated".into(), "1.0.0".into()));
        let stock = adjusted(1, 1);
        assert_eq!((stock.event_type(), stock.event_version()), ("ProductStockAdjusted".into(), "1.0.0".into()));
        assert_eq!(ProductEvent::ProductDeleted {}.event_type(), "ProductDeleted");
    }

    #[test]
    fn a_snapshot_from_before_the_catalog_fields_does_not_load() {
        // The command side ignores snapshots that fail to load and rebuilds from events.
        let old = json!({"id": id().to_string(), "name": "Lamp", "description": "", "price": "19.99",
                         "deleted": false, "version": 3});
        assert!(serde_json::from_value::<Product>(old).is_err());
        let current = Product::replay(vec![created()]);
        let round_trip: Product = serde_json::from_value(serde_json::to_value(&current).unwrap()).unwrap();
        assert_eq!(round_trip, current);
    }

    proptest! {
        /// Whatever adjustments are asked for, the accepted ones keep stock at or above zero
        /// and the level equals the initial stock plus the accepted deltas; the refused ones are
        /// exactly those that would go below zero.
        #[test]
        fn accepted_stock_adjustments_keep_on_hand_non_negative_and_summed(
            initial in 0u64..1_000,
            deltas in prop::collection::vec(-600i64..600, 0..40),
        ) {
            let mut product = Product::replay(vec![Created { on_hand: initial, ..Default::default() }.event()]);
            let mut accepted_sum: i128 = 0;
            for delta in deltas {
                let before = product.on_hand;
                match product.decide(adjust(delta)) {
                    Ok(event) => {
                        accepted_sum += i128::from(delta);
                        product.apply(event);
                    }
                    Err(ProductError::InsufficientStock { on_hand, delta: refused }) => {
                        prop_assert_eq!((on_hand, refused), (before, delta));
                        prop_assert!(i128::from(before) + i128::from(delta) < 0);
                    }
                    Err(ProductError::Invalid(_)) => prop_assert_eq!(delta, 0),
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
                prop_assert_eq!(i128::from(product.on_hand), i128::from(initial) + accepted_sum);
            }
        }
    }

    mod stock_steps {
        //! Given/when/then for the reservation steps on a product's stock.

        use super::*;

        fn reservation(n: u128) -> Uuid {
            Uuid::from_u128(0x5000 + n)
        }

        fn with_stock(on_hand: u64) -> ProductEvent {
            Created { on_hand, ..Default::default() }.event()
        }

        fn reserve(n: u128, quantity: u64) -> ProductCommand {
            ProductCommand::ReserveStock { reservation_id: reservation(n), quantity }
        }

        fn reserved(n: u128, quantity: u64, total: u64) -> ProductEvent {
            ProductEvent::ProductStockReserved { reservation_id: reservation(n), quantity, reserved: total }
        }

        fn released(n: u128, quantity: u64, total: u64) -> ProductEvent {
            ProductEvent::ProductStockReleased { reservation_id: reservation(n), quantity, reserved: total }
        }

        #[test]
        fn reserving_holds_units_up_to_what_is_available() {
            ProductTest::with(())
                .given(vec![with_stock(5)])
                .when(reserve(1, 5))
                .then_expect_events(vec![reserved(1, 5, 5)]);
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(1, 3, 3)])
                .when(reserve(2, 3))
                .then_expect_error(ProductError::NotEnoughAvailable { available: 2, requested: 3 });
        }

        #[test]
        fn only_published_products_can_be_reserved() {
            for status in [Draft, Archived] {
                ProductTest::with(())
                    .given(vec![Created { on_hand: 5, status, ..Default::default() }.event()])
                    .when(reserve(1, 1))
                    .then_expect_error(ProductError::NotForSale(status));
            }
        }

        #[test]
        fn a_repeated_reserve_is_a_no_op() {
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(1, 3, 3)])
                .when(reserve(1, 3))
                .then_expect_events(vec![]);
        }

        #[test]
        fn a_reserve_after_the_release_is_refused_so_a_late_step_cannot_hold_again() {
            ProductTest::with(())
                .given(vec![with_stock(5), released(1, 0, 0)])
                .when(reserve(1, 1))
                .then_expect_error(ProductError::ReservationSettled(reservation(1)));
        }

        #[test]
        fn reserving_nothing_or_on_a_missing_or_deleted_product_is_refused() {
            assert_eq!(rejected(vec![with_stock(5)], reserve(1, 0)), [("quantity".into(), "too_small".into())]);
            ProductTest::with(())
                .given_no_previous_events()
                .when(reserve(1, 1))
                .then_expect_error(ProductError::NotFound);
            ProductTest::with(())
                .given(vec![with_stock(5), ProductEvent::ProductDeleted {}])
                .when(reserve(1, 1))
                .then_expect_error(ProductError::Deleted);
        }

        #[test]
        fn releasing_frees_the_hold_once() {
            let given = vec![with_stock(5), reserved(1, 3, 3), reserved(2, 1, 4)];
            ProductTest::with(())
                .given(given.clone())
                .when(ProductCommand::ReleaseStock { reservation_id: reservation(1) })
                .then_expect_events(vec![released(1, 3, 1)]);
            ProductTest::with(())
                .given([given, vec![released(1, 3, 1)]].concat())
                .when(ProductCommand::ReleaseStock { reservation_id: reservation(1) })
                .then_expect_events(vec![]);
        }

        #[test]
        fn releasing_what_was_never_reserved_records_a_release_of_nothing() {
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(2, 1, 1)])
                .when(ProductCommand::ReleaseStock { reservation_id: reservation(1) })
                .then_expect_events(vec![released(1, 0, 1)]);
        }

        #[test]
        fn committing_takes_the_held_units_out_of_stock_once() {
            let given = vec![with_stock(5), reserved(1, 3, 3), reserved(2, 1, 4)];
            let committed = ProductEvent::ProductStockCommitted {
                reservation_id: reservation(1),
                quantity: 3,
                on_hand: 2,
                reserved: 1,
            };
            ProductTest::with(())
                .given(given.clone())
                .when(ProductCommand::CommitStock { reservation_id: reservation(1) })
                .then_expect_events(vec![committed.clone()]);
            let after = Product::replay([given, vec![committed.clone()]].concat());
            assert_eq!((after.on_hand, after.reserved(), after.available()), (2, 1, 1));
            ProductTest::with(())
                .given([vec![with_stock(5), reserved(1, 3, 3)], vec![committed]].concat())
                .when(ProductCommand::CommitStock { reservation_id: reservation(1) })
                .then_expect_events(vec![]);
        }

        #[test]
        fn committing_after_a_release_or_without_a_hold_takes_nothing() {
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(1, 3, 3), released(1, 3, 0)])
                .when(ProductCommand::CommitStock { reservation_id: reservation(1) })
                .then_expect_events(vec![]);
            ProductTest::with(())
                .given(vec![with_stock(5)])
                .when(ProductCommand::CommitStock { reservation_id: reservation(1) })
                .then_expect_error(ProductError::NotHeld(reservation(1)));
        }

        #[test]
        fn releasing_or_committing_on_a_deleted_product_records_nothing() {
            let given = vec![with_stock(5), reserved(1, 3, 3), ProductEvent::ProductDeleted {}];
            for command in [
                ProductCommand::ReleaseStock { reservation_id: reservation(1) },
                ProductCommand::CommitStock { reservation_id: reservation(1) },
            ] {
                ProductTest::with(()).given(given.clone()).when(command).then_expect_events(vec![]);
            }
        }

        #[test]
        fn an_adjustment_cannot_take_what_reservations_hold() {
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(1, 3, 3)])
                .when(adjust(-3))
                .then_expect_error(ProductError::StockReserved { on_hand: 5, reserved: 3, delta: -3 });
            ProductTest::with(())
                .given(vec![with_stock(5), reserved(1, 3, 3)])
                .when(adjust(-2))
                .then_expect_events(vec![adjusted(-2, 3)]);
        }
    }
}
