use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What has happened to a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CategoryEvent {
    CategoryCreated {
        id: Uuid,
        name: String,
        slug: String,
        parent_id: Option<Uuid>,
        /// Empty when none was given.
        description: String,
    },
    /// Only the fields that were given in the update.
    CategoryUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slug: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Absent: not moved; `null`: moved to the root; an id: moved under that category.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::tri_state")]
        parent_id: Option<Option<Uuid>>,
    },
    CategoryDeleted {},
}

impl DomainEvent for CategoryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CategoryCreated { .. } => "CategoryCreated",
            Self::CategoryUpdated { .. } => "CategoryUpdated",
            Self::CategoryDeleted { .. } => "CategoryDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0.0".to_owned()
    }
}
