use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a client may ask of a category. Raw values; the aggregate validates them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CategoryCommand {
    Create {
        id: Uuid,
        name: String,
        slug: String,
        /// `None`: a root category. That the parent exists is the service's check.
        parent_id: Option<Uuid>,
        description: Option<String>,
    },
    /// A partial update: `None` leaves a field as it is.
    Update {
        /// The version the client last saw (`If-Match`); `None` means "whatever is current".
        expected_version: Option<u64>,
        name: Option<String>,
        slug: Option<String>,
        description: Option<String>,
        /// `Some(Some(id))` moves the category under `id`, `Some(None)` to the root.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::tri_state")]
        parent: Option<Option<Uuid>>,
    },
    Delete {
        expected_version: Option<u64>,
    },
}
