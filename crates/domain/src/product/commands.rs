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
    /// Holds `quantity` units for a reservation (the process manager's step). A repeat for a
    /// reservation already held is a no-op; one already released or committed is refused.
    ReserveStock {
        reservation_id: Uuid,
        quantity: u64,
    },
    /// Frees a reservation's hold. Releasing what was never held still records the release,
    /// so a reserve that arrives later (a slow second process manager) cannot hold it again.
    ReleaseStock {
        reservation_id: Uuid,
    },
    /// Takes a held reservation's units out of stock for good (the reservation was confirmed).
    CommitStock {
        reservation_id: Uuid,
    },
}

impl ProductCommand {
    /// A published product with only a name, a description and a price, and nothing else (no
    /// SKU, categories, attributes, images or stock): what tools and tests need.
    pub fn create_basic(
        id: Uuid,
        name: impl Into<String>,
        description: Option<String>,
        price: Decimal,
        currency: impl Into<String>,
    ) -> Self {
        Self::Create {
            id,
            name: name.into(),
            description,
            price,
            currency: currency.into(),
            sku: None,
            status: None,
            category_ids: Vec::new(),
            attributes: BTreeMap::new(),
            images: Vec::new(),
            on_hand: 0,
            allow_http_images: false,
        }
    }

    /// An update of any of name, description and price, leaving the rest as it is.
    pub fn edit_basics(
        expected_version: Option<u64>,
        name: Option<String>,
        description: Option<String>,
        price: Option<Decimal>,
    ) -> Self {
        Self::Update {
            expected_version,
            name,
            description,
            price,
            currency: None,
            sku: None,
            status: None,
            category_ids: None,
            attributes: None,
            images: None,
            allow_http_images: false,
        }
    }
}
