//! Readers of older event versions. Stored events are never rewritten; they are upcast into
//! today's shape as they are loaded: by the write path (cqrs-es applies [`upcasters`] when it
//! loads an aggregate) and by every read of this crate ([`upcast`], behind [`crate::CatalogEvent`]).

use std::sync::LazyLock;

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use domain::UserEvent;
use serde_json::Value;

/// Every upcaster, in the order they apply.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "UserRegistered",
        UserEvent::REGISTERED_VERSION,
        Box::new(user_registered_v1_to_v2),
    ))]
}

/// `event` in today's shape: every upcaster that accepts it applied in turn.
pub fn upcast(event: SerializedEvent) -> SerializedEvent {
    static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(upcasters);
    UPCASTERS.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// `UserRegistered` 1.0 stored the username as typed under `name`; 2.0 stores the normalised
/// form (trimmed, lower-case) under `username`, which is what the user's id was derived from.
fn user_registered_v1_to_v2(mut payload: Value) -> Value {
    if let Some(body) = payload.get_mut("UserRegistered").and_then(Value::as_object_mut) {
        if let Some(Value::String(name)) = body.remove("name") {
            body.insert("username".into(), Value::String(name.trim().to_lowercase()));
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            "id".into(),
            1,
            "User".into(),
            "UserRegistered".into(),
            version.into(),
            payload,
            Value::Object(Default::default()),
        )
    }

    #[test]
    fn a_v1_registration_is_read_into_todays_shape() {
        let v1 = stored(
            "1.0",
            json!({"UserRegistered": {"id": "6b1f0c3e-5a8d-4d2b-9f07-3c1ea4d27b90", "name": " Alice ",
                   "email": "alice@example.com", "password_hash": "$argon2id$stub"}}),
        );
        let upcast = upcast(v1);
        assert_eq!(upcast.event_version, UserEvent::REGISTERED_VERSION);
        let event: UserEvent = serde_json::from_value(upcast.payload).unwrap();
        let UserEvent::UserRegistered { username, .. } = event else { panic!("wrong event") };
        assert_eq!(username, "alice");
    }

    #[test]
    fn a_current_registration_is_left_alone() {
        let payload = json!({"UserRegistered": {"username": "bob"}});
        let event = stored(UserEvent::REGISTERED_VERSION, payload.clone());
        let upcast = upcast(event);
        assert_eq!(upcast.payload, payload);
    }
}
