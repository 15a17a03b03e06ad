use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ProductImage, ProductStatus};

/// What a client may ask of a product. Field values arrive raw; the aggregate validates them,
/// so every rule lives (and is tested) in one place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductCommand {
    Create {
        id: Uuid,
        name: String,
        description: Option<String>,
        price: Decimal,
        /// ISO 4217 code. Always given: the API fills in its configured default, the domain has none.
        currency: String,
        sku: Option<String>,
        /// `None`: published.
        status: Option<ProductStatus>,
        #[serde(default)]
        category_ids: Vec<Uuid>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        #[serde(default)]
        images: Vec<ProductImage>,
        /// Initial stock. Signed so a negative input is a field violation, not a decoding error.
        #[serde(default)]
        on_hand: i64,
        /// Accept plain `http` image URLs; the service sets it from its environment.
        #[serde(default)]
        allow_http_images: bool,
    },
    /// A partial update: `None` leaves a field as it is. Collections are replaced whole.
    Update {
        /// The version the client last saw (`If-Match`); `None` means "whatever is current".
        expected_version: Option<u64>,
        name: Option<String>,
        description: Option<String>,
        price: Option<Decimal>,
        /// A new currency alone re-checks the current price against the new currency's digits.
        currency: Option<String>,
        /// `Some(None)` clears the sku.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::tri_state")]
        sku: Option<Option<String>>,
        status: Option<ProductStatus>,
        category_ids: Option<Vec<Uuid>>,
        attributes: Option<BTreeMap<String, String>>,
        images: Option<Vec<ProductImage>>,
        #[serde(default)]
        allow_http_images: bool,
    },
    /// The only way stock changes: by a signed amount, with a reason for the audit trail.
    AdjustStock {
        delta: i64,
        reason: String,
        expected_version: Option<u64>,
    },
    Delete {
        expected_version: Option<u64>,
    },
}
