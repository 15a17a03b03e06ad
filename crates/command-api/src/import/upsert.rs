//! One product line against the event store: find the product by SKU, then create it, change
//! what differs, or leave it alone.
//!
//! The SKU is looked up in `event_store::claims`, the event store's own record of which product
//! holds which SKU (kept by the append trigger, so it is exact as of the last commit); the product is
//! then loaded from its events and the line compared with it. The write is pinned to the version
//! compared against, so a product that changes in between is compared again, never overwritten
//! blindly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use domain::product::{Attributes, CategoryIds, Description, Images, ProductName, Sku};
use domain::{Currency, FieldViolation, Money, Product, ProductCommand, ProductError};
use event_store::{CommandBus, CommandError, EventMetadata};
use http_api::problem::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Outcome, ProductLine};
use crate::failures::{is_rolled_back, is_sku_taken, rule_violation, store_failure};

/// Lookups and writes of one line that met a concurrent change before it gives up.
const MAX_ATTEMPTS: u32 = 5;

/// What every line of one import shares.
pub(super) struct Shared {
    pub bus: CommandBus,
    pub pool: PgPool,
    pub default_currency: Currency,
    pub allow_http_images: bool,
    pub metadata: EventMetadata,
    /// Category slugs already resolved in this import (categories are few, lines many).
    pub slugs: Mutex<HashMap<String, Uuid>>,
}

/// Why a line wrote nothing.
pub(super) struct Failure {
    /// The product the line was for, when it was found.
    pub id: Option<Uuid>,
    pub errors: Vec<FieldViolation>,
}

impl Failure {
    fn invalid(errors: Vec<FieldViolation>) -> Self {
        Self { id: None, errors }
    }
}

/// What the attempt at a command says to do next.
pub(super) enum Next {
    /// Nothing was written because of a concurrent change: look the SKU up again.
    Retry,
    Fail(Vec<FieldViolation>),
}

/// Creates, changes or leaves alone the product with the line's SKU.
pub(super) async fn upsert(shared: &Shared, line: ProductLine) -> Result<(Outcome, Uuid), Failure> {
    let sku = Sku::parse(&line.sku).map_err(|violation| Failure::invalid(vec![violation]))?;
    let categories = categories(shared, &line).await?;
    let mut last_id = None;
    for attempt in 1..=MAX_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
        }
        let next = match holder(shared, sku.as_str()).await? {
            None => match create(shared, &line, &sku, categories.clone()).await {
                Ok(id) => return Ok((Outcome::Created, id)),
                Err(next) => next,
            },
            Some(id) => {
                last_id = Some(id);
                let product = shared
                    .bus
                    .load::<Product>(&id.to_string())
                    .await
                    .map_err(|e| Failure { id: Some(id), errors: unexpected(store_failure(e)) })?;
                let holds_it = product.id.is_some()
                    && !product.deleted
                    && product.sku.as_deref().is_some_and(|held| held.eq_ignore_ascii_case(sku.as_str()));
                if !holds_it {
                    // The claim moved on between the lookup and the load.
                    continue;
                }
                let Some(command) = changes(&product, &line, &sku, categories.clone(), shared.allow_http_images) else {
                    return Ok((Outcome::Unchanged, id));
                };
                match shared
                    .bus
                    .execute::<Product>(&id.to_string(), || command.clone(), shared.metadata.clone(), false)
                    .await
                {
                    Ok(_) => return Ok((Outcome::Updated, id)),
                    Err(error) => next_step(error),
                }
            }
        };
        if let Next::Fail(errors) = next {
            return Err(Failure { id: last_id, errors });
        }
    }
    Err(Failure {
        id: last_id,
        errors: vec![FieldViolation::new(
            "sku",
            "conflict",
            "the product with this SKU kept changing concurrently; import the line again",
        )],
    })
}

/// The product that holds `sku` (compared case-insensitively), as the event store last committed.
async fn holder(shared: &Shared, sku: &str) -> Result<Option<Uuid>, Failure> {
    let held = event_store::claims::sku_holder(&shared.pool, sku)
        .await
        .map_err(|e| Failure::invalid(unexpected(ApiError::from_database(e))))?;
    held.map(|id| Uuid::parse_str(&id).map_err(|e| Failure::invalid(unexpected(ApiError::Internal(e.into())))))
        .transpose()
}

/// The line's categories, ids first and then those its slugs name, or `None` when it gives
/// neither. A slug no category has is an error naming it.
pub(super) async fn categories(shared: &Shared, line: &ProductLine) -> Result<Option<Vec<Uuid>>, Failure> {
    if line.category_ids.is_none() && line.category_slugs.is_none() {
        return Ok(None);
    }
    let mut ids = line.category_ids.clone().unwrap_or_default();
    let Some(slugs) = &line.category_slugs else { return Ok(Some(ids)) };
    let mut wanted: Vec<String> = Vec::with_capacity(slugs.len());
    for slug in slugs {
        let slug = slug.trim().to_lowercase();
        if !wanted.contains(&slug) {
            wanted.push(slug);
        }
    }
    if wanted.len() > CategoryIds::MAX {
        return Err(Failure::invalid(vec![FieldViolation::new(
            "category_slugs",
            "too_many",
            format!("a product may be in at most {} categories", CategoryIds::MAX),
        )]));
    }
    let unresolved: Vec<String> = {
        let known = shared.slugs.lock().expect("slug cache");
        wanted.iter().filter(|slug| !known.contains_key(*slug)).cloned().collect()
    };
    if !unresolved.is_empty() {
        let found = event_store::claims::slug_holders(&shared.pool, &unresolved)
            .await
            .map_err(|e| Failure::invalid(unexpected(ApiError::from_database(e))))?;
        let mut known = shared.slugs.lock().expect("slug cache");
        for (slug, id) in found {
            if let Ok(id) = Uuid::parse_str(&id) {
                known.insert(slug, id);
            }
        }
    }
    let known = shared.slugs.lock().expect("slug cache");
    let mut unknown = Vec::new();
    for slug in &wanted {
        match known.get(slug) {
            Some(id) => ids.push(*id),
            None => unknown.push(FieldViolation::new(
                "category_slugs",
                "unknown_category",
                format!("no category has the slug \"{slug}\""),
            )),
        }
    }
    if unknown.is_empty() {
        Ok(Some(ids))
    } else {
        Err(Failure::invalid(unknown))
    }
}

/// Creates a product with a new id; a SKU taken meanwhile asks for another lookup.
async fn create(shared: &Shared, line: &ProductLine, sku: &Sku, categories: Option<Vec<Uuid>>) -> Result<Uuid, Next> {
    let command = create_command(shared, line, sku, categories).map_err(Next::Fail)?;
    let ProductCommand::Create { id, .. } = command else { unreachable!("a create command") };
    match shared.bus.execute::<Product>(&id.to_string(), || command.clone(), shared.metadata.clone(), false).await {
        Ok(_) => Ok(id),
        Err(error) => Err(next_step(error)),
    }
}

/// The command that creates the line's product under a new id; a line without a name or a
/// price cannot create one.
pub(super) fn create_command(
    shared: &Shared,
    line: &ProductLine,
    sku: &Sku,
    categories: Option<Vec<Uuid>>,
) -> Result<ProductCommand, Vec<FieldViolation>> {
    let Some(price) = line.price else {
        let mut missing = Vec::new();
        if line.name.as_deref().is_none_or(|name| name.trim().is_empty()) {
            missing.push(FieldViolation::new("name", "required", "name is required for a new product"));
        }
        missing.push(FieldViolation::new("price", "required", "price is required for a new product"));
        return Err(missing);
    };
    Ok(ProductCommand::Create {
        id: Uuid::new_v4(),
        name: line.name.clone().unwrap_or_default(),
        description: line.description.clone(),
        price,
        currency: line.currency.clone().unwrap_or_else(|| shared.default_currency.code().to_owned()),
        sku: Some(sku.as_str().to_owned()),
        status: line.status,
        category_ids: categories.unwrap_or_default(),
        attributes: line.attributes.clone().unwrap_or_default(),
        images: line.images.clone().unwrap_or_default(),
        on_hand: line.stock.unwrap_or(0),
        allow_http_images: shared.allow_http_images,
    })
}

/// The update that makes `product` what the line says, or `None` when it already is: only the
/// fields the line gives and that differ, each compared as the product stores it (names
/// trimmed, prices in the currency's digits, image URLs normalised...). A value the rules refuse
/// never equals a stored one, so it goes into the update, and the aggregate reports it.
pub(super) fn changes(
    product: &Product,
    line: &ProductLine,
    sku: &Sku,
    categories: Option<Vec<Uuid>>,
    allow_http_images: bool,
) -> Option<ProductCommand> {
    let name = line.name.clone().filter(|name| ProductName::parse(name).map_or(true, |n| n.as_str() != product.name));
    let description = line
        .description
        .clone()
        .filter(|text| Description::parse(text).map_or(true, |d| d.as_str() != product.description));
    let currency = line
        .currency
        .clone()
        .filter(|code| Currency::parse(code).map_or(true, |currency| currency.code() != product.currency));
    // A price is compared in the product's currency; with a new currency it goes with it.
    let price = line.price.filter(|amount| {
        currency.is_some()
            || Currency::parse(&product.currency)
                .and_then(|currency| Money::parse(*amount, currency))
                .map_or(true, |price| price.amount() != product.price)
    });
    let status = line.status.filter(|status| *status != product.status);
    let category_ids = categories
        .filter(|ids| CategoryIds::parse(ids.clone()).map_or(true, |ids| ids.into_vec() != product.category_ids));
    let attributes = line
        .attributes
        .clone()
        .filter(|map| Attributes::parse(map.clone()).map_or(true, |a| a.into_map() != product.attributes));
    let images = line.images.clone().filter(|images| {
        Images::parse(images.clone(), allow_http_images).map_or(true, |i| i.into_vec() != product.images)
    });
    // Found case-insensitively; a different case in the file is a change of the SKU.
    let sku = (product.sku.as_deref() != Some(sku.as_str())).then(|| Some(sku.as_str().to_owned()));
    let unchanged = name.is_none()
        && description.is_none()
        && currency.is_none()
        && price.is_none()
        && status.is_none()
        && category_ids.is_none()
        && attributes.is_none()
        && images.is_none()
        && sku.is_none();
    (!unchanged).then_some(ProductCommand::Update {
        expected_version: Some(product.version),
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
    })
}

/// What a command that did not commit means for the line.
pub(super) fn next_step(error: CommandError<ProductError>) -> Next {
    match error {
        CommandError::Rejected(ProductError::Invalid(violations)) => Next::Fail(
            violations
                .0
                .into_iter()
                .map(|mut violation| {
                    // The import calls a new product's stock `stock`.
                    if violation.field == "on_hand" {
                        violation.field = "stock".into();
                        violation.message = violation.message.replace("on_hand", "stock");
                    }
                    violation
                })
                .collect(),
        ),
        CommandError::Rejected(rule @ ProductError::InvalidTransition { .. }) => {
            Next::Fail(vec![FieldViolation::new("status", "invalid_transition", rule.to_string())])
        }
        // The product changed, went or appeared since it was looked up.
        CommandError::Rejected(
            ProductError::VersionMismatch { .. }
            | ProductError::NotFound
            | ProductError::Deleted
            | ProductError::AlreadyExists(_),
        )
        | CommandError::Conflict => Next::Retry,
        CommandError::Rejected(
            other @ (ProductError::InsufficientStock { .. }
            | ProductError::StockReserved { .. }
            | ProductError::NotEnoughAvailable { .. }
            | ProductError::NotForSale(_)
            | ProductError::ReservationSettled(_)
            | ProductError::NotHeld(_)),
        ) => Next::Fail(vec![FieldViolation::new("stock", "conflict", other.to_string())]),
        CommandError::Store(error) if is_sku_taken(&error) || is_rolled_back(&error) => Next::Retry,
        CommandError::Store(error) => match rule_violation(&error) {
            Some(violation) => Next::Fail(vec![violation]),
            None => Next::Fail(unexpected(store_failure(error))),
        },
    }
}

/// A failure that is not the line's fault (the database, a bug), as the line's error: the
/// problem's kind as the code, its detail as the message. Internal errors are logged here, as
/// the API logs them when it answers one.
pub(super) fn unexpected(error: ApiError) -> Vec<FieldViolation> {
    if let ApiError::Internal(cause) = &error {
        tracing::error!(error = ?cause, "an import line failed unexpectedly");
    }
    let problem = error.problem();
    let code = problem.kind.trim_start_matches("/problems/").to_owned();
    vec![FieldViolation::new("body", &code, problem.detail)]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::{ProductImage, ProductStatus};

    use super::*;

    fn lamp() -> Product {
        Product {
            id: Some(Uuid::from_u128(1)),
            name: "Lamp".into(),
            description: "Warm".into(),
            price: "19.90".parse().unwrap(),
            currency: "EUR".into(),
            sku: Some("LAMP-1".into()),
            status: ProductStatus::Published,
            category_ids: vec![Uuid::from_u128(7)],
            attributes: BTreeMap::from([("colour".into(), "red".into())]),
            images: vec![ProductImage { url: "https://img.example.com/a.jpg".into(), alt: Some("A".into()) }],
            on_hand: 3,
            holds: Default::default(),
            settled: Default::default(),
            deleted: false,
            version: 4,
        }
    }

    fn line() -> ProductLine {
        ProductLine {
            sku: " lamp-1 ".into(),
            name: Some(" Lamp ".into()),
            description: Some("Warm".into()),
            price: Some("19.9".parse().unwrap()),
            currency: Some("EUR".into()),
            status: Some(ProductStatus::Published),
            category_ids: None,
            category_slugs: None,
            attributes: Some(BTreeMap::from([("colour".into(), "red".into())])),
            images: Some(vec![ProductImage { url: "HTTPS://IMG.example.com/a.jpg".into(), alt: Some(" A ".into()) }]),
            stock: Some(99),
        }
    }

    #[test]
    fn a_line_equal_to_the_product_as_stored_changes_nothing() {
        let mut product = lamp();
        product.sku = Some("lamp-1".into());
        let sku = Sku::parse(&line().sku).unwrap();
        assert_eq!(changes(&product, &line(), &sku, Some(vec![Uuid::from_u128(7)]), false), None);
    }

    #[test]
    fn only_what_differs_is_changed_pinned_to_the_version_compared() {
        let sku = Sku::parse("LAMP-1").unwrap();
        let mut changed = line();
        changed.price = Some("21".parse().unwrap());
        changed.status = Some(ProductStatus::Archived);
        let Some(ProductCommand::Update { expected_version, name, price, status, sku, attributes, .. }) =
            changes(&lamp(), &changed, &sku, None, false)
        else {
            panic!("no update")
        };
        assert_eq!(expected_version, Some(4));
        assert_eq!((name, sku, attributes), (None, None, None));
        assert_eq!(price, Some("21".parse().unwrap()));
        assert_eq!(status, Some(ProductStatus::Archived));
    }

    #[test]
    fn a_new_currency_carries_the_price_and_an_invalid_value_is_left_to_the_aggregate() {
        let sku = Sku::parse("LAMP-1").unwrap();
        let mut changed = line();
        changed.currency = Some("USD".into());
        changed.name = Some(" ".into());
        let Some(ProductCommand::Update { currency, price, name, .. }) = changes(&lamp(), &changed, &sku, None, false)
        else {
            panic!("no update")
        };
        assert_eq!((currency.as_deref(), price.is_some(), name.as_deref()), (Some("USD"), true, Some(" ")));
    }
}
