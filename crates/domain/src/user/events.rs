use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Role;

/// What has happened to a user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Version 2.0.0; 1.0 named the field `name` and kept it as typed (see the event store's `upcasting`).
    UserRegistered {
        id: Uuid,
        username: String,
        email: String,
        password_hash: String,
    },
    UserEmailChanged {
        email: String,
    },
    UserPasswordChanged {
        password_hash: String,
    },
    UserRoleGranted {
        role: Role,
    },
    UserRoleRevoked {
        role: Role,
    },
    UserDeactivated {},
}

impl UserEvent {
    pub const REGISTERED_VERSION: &'static str = "2.0.0";
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::UserEmailChanged { .. } => "UserEmailChanged",
            Self::UserPasswordChanged { .. } => "UserPasswordChanged",
            Self::UserRoleGranted { .. } => "UserRoleGranted",
            Self::UserRoleRevoked { .. } => "UserRoleRevoked",
            Self::UserDeactivated { .. } => "UserDeactivated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::UserRegistered { .. } => Self::REGISTERED_VERSION,
            _ => "1.0.0",
        }
        .to_owned()
    }
}
