use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a client may ask of a product. Field values arrive raw; the aggregate validates them,
/// so every rule lives (and is tested) in one place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductCommand {
    Create {
        id: Uuid,
        name: String,
        description: Option<String>,
        price: Decimal,
    },
    /// A partial update: `None` leaves a field as it is.
    Update {
        /// The version the client last saw (`If-Match`); `None` means "whatever is current".
        expected_version: Option<u64>,
        name: Option<String>,
        description: Option<String>,
        price: Option<Decimal>,
    },
    Delete {
        expected_version: Option<u64>,
    },
}
