//! An event as the rest of the pipeline sees it.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use uuid::Uuid;

use crate::upcasting;

/// Fields removed from every payload before it leaves the event store. The write side needs the
/// password hash to authenticate; nothing downstream (Kafka, read models) may ever see it.
const CREDENTIAL_FIELDS: &[&str] = &["password_hash"];

/// One stored event, upcast to its current version and redacted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CatalogEvent {
    pub event_id: Uuid,
    /// `Product` or `User`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for the first).
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// Externally tagged: `{"ProductCreated": {...}}`.
    pub payload: Value,
    pub metadata: Value,
    /// Unique across the store; not commit order (see the event store migration).
    pub global_position: i64,
    pub recorded_at: DateTime<Utc>,
}

impl CatalogEvent {
    /// Builds the event from a stored row: applies the domain's upcasters, then strips
    /// credential fields. Everything downstream of the event store starts here.
    #[allow(clippy::too_many_arguments)]
    pub fn from_stored(
        event_id: Uuid,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: Value,
        metadata: Value,
        global_position: i64,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        let stored = SerializedEvent::new(
            aggregate_id,
            sequence as usize,
            aggregate_type,
            event_type,
            event_version,
            payload,
            metadata,
        );
        let upcast = upcasting::upcast(stored);
        let mut payload = upcast.payload;
        redact(&mut payload);
        Self {
            event_id,
            aggregate_type: upcast.aggregate_type,
            aggregate_id: upcast.aggregate_id,
            sequence,
            event_type: upcast.event_type,
            event_version: upcast.event_version,
            payload,
            metadata: upcast.metadata,
            global_position,
            recorded_at,
        }
    }

    /// The CloudEvents `type`: `catalog.<aggregate>.<what happened>.v<major>`, e.g.
    /// `catalog.product.created.v1` or `catalog.user.email_changed.v1`.
    pub fn cloud_event_type(&self) -> String {
        let what = self.event_type.strip_prefix(&self.aggregate_type).unwrap_or(&self.event_type);
        let major = self.event_version.split('.').next().unwrap_or("1");
        // Built in one buffer: the publisher calls this for every message.
        let mut out = String::with_capacity(16 + self.aggregate_type.len() + what.len() + major.len());
        out.push_str("catalog.");
        push_snake_case(&mut out, &self.aggregate_type);
        out.push('.');
        push_snake_case(&mut out, what);
        out.push_str(".v");
        out.push_str(major);
        out
    }

    /// The CloudEvents `source`: the collection the aggregate belongs to.
    pub fn cloud_event_source(&self) -> String {
        let mut out = String::with_capacity(16 + self.aggregate_type.len());
        out.push_str("/catalog/");
        push_snake_case(&mut out, &self.aggregate_type);
        out.push('s');
        out
    }

    /// The W3C trace context the command ran under, if the client sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.metadata.get("traceparent").and_then(Value::as_str)
    }
}

fn redact(payload: &mut Value) {
    if let Some(variants) = payload.as_object_mut() {
        for body in variants.values_mut().filter_map(Value::as_object_mut) {
            for field in CREDENTIAL_FIELDS {
                body.remove(*field);
            }
        }
    }
}

/// Appends `camel` in snake case to `out`.
fn push_snake_case(out: &mut String, camel: &str) {
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        // Names are ASCII; `to_lowercase` (a Unicode table lookup) only for anything else.
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(aggregate_type: &str, event_type: &str, version: &str, payload: Value) -> CatalogEvent {
        CatalogEvent::from_stored(
            Uuid::nil(),
            aggregate_type.into(),
            "id".into(),
            1,
            event_type.into(),
            version.into(),
            payload,
            json!({}),
            1,
            Utc::now(),
        )
    }

    #[test]
    fn cloud_event_types_name_aggregate_event_and_major_version() {
        let created = stored("Product", "ProductCreated", "1.0.0", json!({"ProductCreated": {}}));
        // A 1.0.0 `ProductCreated` is read as 2.0.0 (see `upcasting`), so it is published as v2.
        assert_eq!(created.cloud_event_type(), "catalog.product.created.v2");
        assert_eq!(created.cloud_event_source(), "/catalog/products");
        let changed = stored("User", "UserEmailChanged", "1.0.0", json!({"UserEmailChanged": {}}));
        assert_eq!(changed.cloud_event_type(), "catalog.user.email_changed.v1");
    }

    #[test]
    fn password_hashes_never_leave_the_event_store() {
        let registered = stored(
            "User",
            "UserRegistered",
            "2.0.0",
            json!({"UserRegistered": {"id": Uuid::nil(), "username": "ann", "email": "a@x.io", "password_hash": "$argon2id$x"}}),
        );
        assert_eq!(registered.payload["UserRegistered"].get("password_hash"), None);
        assert_eq!(registered.payload["UserRegistered"]["username"], "ann");
        let changed =
            stored("User", "UserPasswordChanged", "1.0.0", json!({"UserPasswordChanged": {"password_hash": "h"}}));
        assert_eq!(changed.payload, json!({"UserPasswordChanged": {}}));
    }

    #[test]
    fn old_versions_are_upcast_before_publication() {
        let v1 = stored(
            "User",
            "UserRegistered",
            "1.0",
            json!({"UserRegistered": {"id": Uuid::nil(), "name": " Ann ", "email": "a@x.io", "password_hash": "h"}}),
        );
        assert_eq!(v1.event_version, domain::UserEvent::REGISTERED_VERSION);
        assert_eq!(v1.cloud_event_type(), "catalog.user.registered.v2");
        assert_eq!(v1.payload["UserRegistered"]["username"], "ann");
    }
}
