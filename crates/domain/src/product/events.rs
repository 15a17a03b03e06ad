use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What has happened to a product. Past tense; stored forever, so shapes only ever evolve
/// through a new `event_version` and an upcaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated {
        id: Uuid,
        name: String,
        description: String,
        /// Always two fraction digits, serialized as a string so no reader turns it into a float.
        price: Decimal,
    },
    /// Only the fields that were given in the update.
    ProductUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Decimal>,
    },
    ProductDeleted {},
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductUpdated { .. } => "ProductUpdated",
            Self::ProductDeleted { .. } => "ProductDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0.0".to_owned()
    }
}
