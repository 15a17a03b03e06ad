//! The Kafka wire format of a [`CatalogEvent`], independent of any Kafka client.
//!
//! CloudEvents 1.0 binary mode: the value is the JSON payload, the attributes are headers
//! (`ce_*`), plus Catalog's own (`catalog_*`) and the W3C `traceparent`. The key is the
//! aggregate id, so one aggregate's events share a partition and stay in order.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;

use event_store::CatalogEvent;

pub const AGGREGATE_TYPE: &str = "catalog_aggregate_type";
pub const SEQUENCE: &str = "catalog_sequence";
pub const POSITION: &str = "catalog_position";
pub const EVENT_TYPE: &str = "catalog_event_type";
pub const EVENT_VERSION: &str = "catalog_event_version";
pub const TRACEPARENT: &str = "traceparent";
/// Who caused the event (its metadata's `actor`), for the product history read model.
pub const ACTOR: &str = "catalog_actor";
/// Added to a dead letter: why it could not be projected.
pub const DLQ_REASON: &str = "catalog_dlq_reason";

/// The headers of `event`, in a stable order. Values that are already strings in the event are
/// borrowed, not copied: the publisher builds these for every message.
pub fn headers(event: &CatalogEvent) -> Vec<(&'static str, Cow<'_, str>)> {
    let mut headers = Vec::with_capacity(14);
    headers.extend([
        ("ce_specversion", Cow::Borrowed("1.0")),
        ("ce_id", Cow::Owned(event.event_id.to_string())),
        ("ce_type", Cow::Owned(event.cloud_event_type())),
        ("ce_source", Cow::Owned(event.cloud_event_source())),
        ("ce_subject", Cow::Borrowed(event.aggregate_id.as_str())),
        ("ce_time", Cow::Owned(event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))),
        ("content-type", Cow::Borrowed("application/json")),
        (AGGREGATE_TYPE, Cow::Borrowed(event.aggregate_type.as_str())),
        (SEQUENCE, Cow::Owned(event.sequence.to_string())),
        (POSITION, Cow::Owned(event.global_position.to_string())),
        (EVENT_TYPE, Cow::Borrowed(event.event_type.as_str())),
        (EVENT_VERSION, Cow::Borrowed(event.event_version.as_str())),
    ]);
    if let Some(traceparent) = event.traceparent() {
        headers.push((TRACEPARENT, Cow::Borrowed(traceparent)));
    }
    if let Some(actor) = event.metadata.get("actor").and_then(Value::as_str) {
        headers.push((ACTOR, Cow::Borrowed(actor)));
    }
    headers
}

/// The value of `event`'s message.
pub fn value(event: &CatalogEvent) -> Vec<u8> {
    let mut value = Vec::new();
    write_value(event, &mut value);
    value
}

/// Replaces `buffer`'s contents with the value of `event`'s message (the publisher reuses one
/// buffer for every message: the Kafka client copies it).
pub fn write_value(event: &CatalogEvent, buffer: &mut Vec<u8>) {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, &event.payload).expect("a JSON value always serializes");
}

/// Reads an event back from a message. `header` looks a header up by name.
pub fn decode<'a>(
    key: Option<&[u8]>,
    header: impl Fn(&str) -> Option<&'a [u8]>,
    value: Option<&[u8]>,
) -> Result<CatalogEvent, String> {
    let text = |name: &str| -> Result<String, String> {
        let raw = header(name).ok_or_else(|| format!("header {name} is missing"))?;
        String::from_utf8(raw.to_vec()).map_err(|_| format!("header {name} is not UTF-8"))
    };
    let number = |name: &str| -> Result<i64, String> {
        text(name)?.parse().map_err(|_| format!("header {name} is not an integer"))
    };
    let aggregate_id = std::str::from_utf8(key.ok_or("the message has no key")?)
        .map_err(|_| "the key is not UTF-8".to_owned())?
        .to_owned();
    let payload: Value = serde_json::from_slice(value.ok_or("the message has no value")?)
        .map_err(|e| format!("the value is not JSON: {e}"))?;
    let recorded_at = DateTime::parse_from_rfc3339(&text("ce_time")?)
        .map_err(|e| format!("header ce_time: {e}"))?
        .with_timezone(&Utc);
    let mut metadata = serde_json::Map::new();
    for name in [TRACEPARENT, ACTOR] {
        if let Some(value) = header(name).and_then(|v| std::str::from_utf8(v).ok()) {
            let key = if name == ACTOR { "actor" } else { name };
            metadata.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    let metadata = Value::Object(metadata);
    Ok(CatalogEvent {
        event_id: text("ce_id")?.parse().map_err(|_| "header ce_id is not a UUID".to_owned())?,
        aggregate_type: text(AGGREGATE_TYPE)?,
        aggregate_id,
        sequence: number(SEQUENCE)?,
        event_type: text(EVENT_TYPE)?,
        event_version: text(EVENT_VERSION)?,
        payload,
        metadata,
        global_position: number(POSITION)?,
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn an_event_survives_the_round_trip_through_a_message() {
        let event = CatalogEvent::from_stored(
            Uuid::new_v4(),
            "Product".into(),
            Uuid::new_v4().to_string(),
            3,
            "ProductUpdated".into(),
            "1.0.0".into(),
            json!({"ProductUpdated": {"price": "1.50"}}),
            json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "actor": "x"}),
            42,
            DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456Z").unwrap().with_timezone(&Utc),
        );
        let headers = headers(&event);
        let find = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_bytes());
        let decoded = decode(Some(event.aggregate_id.as_bytes()), find, Some(&value(&event))).unwrap();
        assert_eq!(decoded.payload, event.payload);
        assert_eq!(
            (decoded.event_id, decoded.sequence, decoded.global_position, decoded.recorded_at),
            (event.event_id, 3, 42, event.recorded_at)
        );
        assert_eq!(decoded.traceparent(), event.traceparent());
        assert_eq!(decoded.metadata["actor"], "x");
        assert_eq!(find("ce_type"), Some(&b"catalog.product.updated.v1"[..]));
    }

    #[test]
    fn a_message_without_its_headers_is_refused_with_the_reason() {
        let error = decode(Some(b"id"), |_| None, Some(b"{}")).unwrap_err();
        assert!(error.contains("ce_time"), "{error}");
        assert!(decode(Some(b"id"), |_| None, Some(b"not json")).unwrap_err().contains("not JSON"));
    }
}
