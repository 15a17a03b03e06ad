use std::collections::BTreeMap;

use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ProductImage, ProductStatus};

/// What has happened to a product. Past tense; stored forever, so shapes only ever evolve
/// through a new `event_version` and an upcaster. One command records at most one event, so a
/// product's version goes up by exactly one per accepted command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    /// Version 2.0.0. 1.0.0 had only id, name, description and price (two fraction digits): its
    /// upcaster, outside the domain, adds the configured default `currency` and `"published"`;
    /// the fields with `serde(default)` may stay absent.
    ProductCreated {
        id: Uuid,
        name: String,
        description: String,
        /// Exactly the currency's fraction digits, serialised as a string so no reader turns it
        /// into a float: `"19.99"` EUR, `"1999"` JPY, `"1.500"` BHD.
        price: Decimal,
        /// ISO 4217 code. Kept as the plain string, so history never fails to load because the
        /// list of accepted currencies changed.
        currency: String,
        #[serde(default)]
        sku: Option<String>,
        status: ProductStatus,
        #[serde(default)]
        category_ids: Vec<Uuid>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        #[serde(default)]
        images: Vec<ProductImage>,
        #[serde(default)]
        on_hand: u64,
    },
    /// Only the fields that changed or were given; absent means unchanged. Version 1.0.0 still:
    /// every field added since is optional, so old payloads read as they are.
    ProductUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Present when a price was given, and when the currency changed: the current price
        /// rescaled to the new currency's digits, so readers never need currency tables.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Decimal>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
        /// Absent: unchanged; `null`: cleared; a string: set.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::tri_state")]
        sku: Option<Option<String>>,
        /// Absent also when the status asked for was the current one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<ProductStatus>,
        /// Replaces the whole list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category_ids: Option<Vec<Uuid>>,
        /// Replaces the whole map.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<BTreeMap<String, String>>,
        /// Replaces the whole list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        images: Option<Vec<ProductImage>>,
    },
    /// Stock moved by `delta` for `reason`; `on_hand` is the level after, so readers can set it
    /// instead of summing.
    ProductStockAdjusted {
        delta: i64,
        reason: String,
        on_hand: u64,
    },
    ProductDeleted {},
    /// `quantity` units held for a reservation; `reserved` is the product's total held after.
    ProductStockReserved {
        reservation_id: Uuid,
        quantity: u64,
        reserved: u64,
    },
    /// A reservation's hold freed (`quantity` 0: it was never held, and now never will be).
    ProductStockReleased {
        reservation_id: Uuid,
        quantity: u64,
        reserved: u64,
    },
    /// A reservation's held units taken out of stock: `on_hand` and `reserved` are the levels after.
    ProductStockCommitted {
        reservation_id: Uuid,
        quantity: u64,
        on_hand: u64,
        reserved: u64,
    },
}

impl ProductEvent {
    pub const CREATED_VERSION: &'static str = "2.0.0";
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductUpdated { .. } => "ProductUpdated",
            Self::ProductStockAdjusted { .. } => "ProductStockAdjusted",
            Self::ProductDeleted { .. } => "ProductDeleted",
            Self::ProductStockReserved { .. } => "ProductStockReserved",
            Self::ProductStockReleased { .. } => "ProductStockReleased",
            Self::ProductStockCommitted { .. } => "ProductStockCommitted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ProductCreated { .. } => Self::CREATED_VERSION,
            _ => "1.0.0",
        }
        .to_owned()
    }
}
