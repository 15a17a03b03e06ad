use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{Description, Price, ProductName};
use super::{ProductCommand, ProductEvent};
use crate::validation::{FieldViolation, Violations};

/// A product as its own event history defines it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// `None` until `ProductCreated`.
    pub id: Option<Uuid>,
    pub name: String,
    pub description: String,
    pub price: Decimal,
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
}

impl Product {
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

    fn decide(&self, command: ProductCommand) -> Result<ProductEvent, ProductError> {
        match command {
            ProductCommand::Create { id, name, description, price } => {
                if self.id.is_some() {
                    return Err(ProductError::AlreadyExists(id));
                }
                let mut violations = Violations::default();
                let name = violations.check(ProductName::parse(&name));
                let description =
                    violations.check(Description::parse(description.as_deref().unwrap_or("")));
                let price = violations.check(Price::parse(price));
                violations.into_result().map_err(ProductError::Invalid)?;
                // All three are Some here: every None pushed a violation above.
                Ok(ProductEvent::ProductCreated {
                    id,
                    name: name.unwrap().as_str().to_owned(),
                    description: description.unwrap().as_str().to_owned(),
                    price: price.unwrap().amount(),
                })
            }
            ProductCommand::Update { expected_version, name, description, price } => {
                self.ensure_live(expected_version)?;
                let mut violations = Violations::default();
                if name.is_none() && description.is_none() && price.is_none() {
                    violations.push(FieldViolation::new(
                        "body",
                        "empty_update",
                        "give at least one of name, description, price",
                    ));
                }
                let name = name.and_then(|n| violations.check(ProductName::parse(&n)));
                let description =
                    description.and_then(|d| violations.check(Description::parse(&d)));
                let price = price.and_then(|p| violations.check(Price::parse(p)));
                violations.into_result().map_err(ProductError::Invalid)?;
                Ok(ProductEvent::ProductUpdated {
                    name: name.map(|n| n.as_str().to_owned()),
                    description: description.map(|d| d.as_str().to_owned()),
                    price: price.map(|p| p.amount()),
                })
            }
            ProductCommand::Delete { expected_version } => {
                self.ensure_live(expected_version)?;
                Ok(ProductEvent::ProductDeleted {})
            }
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
            ProductEvent::ProductCreated { id, name, description, price } => {
                self.id = Some(id);
                self.name = name;
                self.description = description;
                self.price = price;
            }
            ProductEvent::ProductUpdated { name, description, price } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(description) = description {
                    self.description = description;
                }
                if let Some(price) = price {
                    self.price = price;
                }
            }
            ProductEvent::ProductDeleted {} => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use std::str::FromStr;

    type ProductTest = TestFramework<Product>;

    fn id() -> Uuid {
        Uuid::from_u128(0x1234)
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn created() -> ProductEvent {
        ProductEvent::ProductCreated {
            id: id(),
            name: "Lamp".into(),
            description: "A desk lamp".into(),
            price: dec("19.99"),
        }
    }

    fn update(expected_version: Option<u64>) -> ProductCommand {
        ProductCommand::Update { expected_version, name: Some("Big lamp".into()), description: None, price: None }
    }

    fn violation_codes(error: ProductError) -> Vec<(String, String)> {
        match error {
            ProductError::Invalid(v) => v.0.into_iter().map(|v| (v.field, v.code)).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn creating_a_valid_product_records_it_with_a_canonical_price() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create {
                id: id(),
                name: " Lamp ".into(),
                description: Some("A desk lamp".into()),
                price: dec("19.990"),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_without_description_records_an_empty_one() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create { id: id(), name: "Lamp".into(), description: None, price: dec("5") })
            .then_expect_events(vec![ProductEvent::ProductCreated {
                id: id(),
                name: "Lamp".into(),
                description: String::new(),
                price: dec("5.00"),
            }]);
    }

    #[test]
    fn creating_with_every_field_wrong_reports_every_field() {
        let error = ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create {
                id: id(),
                name: "".into(),
                description: Some("d".repeat(501)),
                price: dec("0.001"),
            })
            .inspect_result()
            .unwrap_err();
        assert_eq!(
            violation_codes(error),
            vec![
                ("name".into(), "required".into()),
                ("description".into(), "too_long".into()),
                ("price".into(), "too_precise".into()),
            ]
        );
    }

    #[test]
    fn creating_an_existing_product_is_rejected() {
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Create { id: id(), name: "Lamp".into(), description: None, price: dec("1") })
            .then_expect_error(ProductError::AlreadyExists(id()));
    }

    #[test]
    fn a_partial_update_records_only_the_given_fields() {
        ProductTest::with(())
            .given(vec![created()])
            .when(update(None))
            .then_expect_events(vec![ProductEvent::ProductUpdated {
                name: Some("Big lamp".into()),
                description: None,
                price: None,
            }]);
    }

    #[test]
    fn an_update_at_the_expected_version_is_accepted() {
        ProductTest::with(())
            .given(vec![created()])
            .when(update(Some(1)))
            .then_expect_events(vec![ProductEvent::ProductUpdated {
                name: Some("Big lamp".into()),
                description: None,
                price: None,
            }]);
    }

    #[test]
    fn an_update_against_a_stale_version_is_rejected() {
        ProductTest::with(())
            .given(vec![created(), ProductEvent::ProductUpdated { name: None, description: None, price: Some(dec("2.00")) }])
            .when(update(Some(1)))
            .then_expect_error(ProductError::VersionMismatch { expected: 1, actual: 2 });
    }

    #[test]
    fn an_empty_update_is_rejected() {
        let error = ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Update { expected_version: None, name: None, description: None, price: None })
            .inspect_result()
            .unwrap_err();
        assert_eq!(violation_codes(error), vec![("body".into(), "empty_update".into())]);
    }

    #[test]
    fn an_update_with_an_invalid_price_is_rejected() {
        let error = ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Update { expected_version: None, name: None, description: None, price: Some(dec("-3")) })
            .inspect_result()
            .unwrap_err();
        assert_eq!(violation_codes(error), vec![("price".into(), "not_positive".into())]);
    }

    #[test]
    fn updating_an_unknown_product_is_not_found() {
        ProductTest::with(()).given_no_previous_events().when(update(None)).then_expect_error(ProductError::NotFound);
    }

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
            .when(update(None))
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
            .when(ProductCommand::Create { id: id(), name: "Lamp".into(), description: None, price: dec("1") })
            .then_expect_error(ProductError::AlreadyExists(id()));
    }

    #[test]
    fn applying_events_counts_the_version() {
        let mut product = Product::default();
        product.apply(created());
        product.apply(ProductEvent::ProductUpdated { name: None, description: None, price: Some(dec("3.00")) });
        assert_eq!(product.version, 2);
        assert_eq!(product.price, dec("3.00"));
        assert_eq!(product.name, "Lamp");
    }

    #[test]
    fn price_is_stored_as_a_string_never_a_float() {
        let json = serde_json::to_value(created()).unwrap();
        assert_eq!(json["ProductCreated"]["price"], serde_json::json!("19.99"));
    }
}
