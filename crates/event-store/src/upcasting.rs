//! Readers of older event versions. Stored events are never rewritten; they are upcast into
//! today's shape as they are loaded: by the write path (cqrs-es applies [`upcasters`] when it
//! loads an aggregate) and by every read of this crate ([`upcast`], behind [`crate::CatalogEvent`]).

use std::sync::{LazyLock, OnceLock};

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster, SerializedEvent};
use domain::{Currency, ProductEvent, UserEvent};
use serde_json::Value;

/// The currency given to products created before prices had one, when nothing was configured.
pub const FALLBACK_DEFAULT_CURRENCY: &str = "EUR";

static DEFAULT_CURRENCY: OnceLock<Currency> = OnceLock::new();

/// Sets the currency that `ProductCreated` 1.0 events (which had none) are read with: the
/// catalog's default currency, `CATALOG_DEFAULT_CURRENCY`. Every process that reads events
/// calls this once at start-up, before the first read; all of them must agree, and the value
/// must not change once such events exist, or old prices would silently change currency.
/// A second call with a different currency is refused.
pub fn set_default_currency(currency: Currency) -> Result<(), String> {
    let set = DEFAULT_CURRENCY.get_or_init(|| currency);
    if *set == currency {
        Ok(())
    } else {
        Err(format!("the default currency is already {set}, not {currency}"))
    }
}

/// `CATALOG_DEFAULT_CURRENCY`, for every binary that reads or writes events.
#[derive(Debug, Clone, clap::Args)]
pub struct CurrencySettings {
    /// The catalog's default currency (ISO 4217): what a new product is priced in when the
    /// request names none, and what products created before prices had a currency are read
    /// in. Must be the same for every service and must not change once products exist.
    #[arg(long, env = "CATALOG_DEFAULT_CURRENCY", default_value = FALLBACK_DEFAULT_CURRENCY)]
    pub default_currency: String,
}

impl CurrencySettings {
    /// Parses the setting and makes it the process's default currency.
    pub fn apply(&self) -> Result<Currency, String> {
        let currency = Currency::parse(&self.default_currency)
            .map_err(|v| format!("CATALOG_DEFAULT_CURRENCY={:?}: {}", self.default_currency, v.message))?;
        set_default_currency(currency)?;
        Ok(currency)
    }
}

/// The catalog's default currency (see [`set_default_currency`]).
pub fn default_currency() -> Currency {
    *DEFAULT_CURRENCY.get_or_init(|| Currency::parse(FALLBACK_DEFAULT_CURRENCY).expect("EUR is an ISO 4217 currency"))
}

/// Every upcaster, in the order they apply.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SemanticVersionEventUpcaster::new(
            "UserRegistered",
            UserEvent::REGISTERED_VERSION,
            Box::new(user_registered_v1_to_v2),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "ProductCreated",
            ProductEvent::CREATED_VERSION,
            Box::new(product_created_v1_to_v2),
        )),
    ]
}

static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(upcasters);

/// Whether an upcaster changes events of this type and version (most are in today's shape and
/// can be read straight from their JSON).
pub fn needs_upcast(event_type: &str, event_version: &str) -> bool {
    UPCASTERS.iter().any(|upcaster| upcaster.can_upcast(event_type, event_version))
}

/// `event` in today's shape: every upcaster that accepts it applied in turn.
pub fn upcast(event: SerializedEvent) -> SerializedEvent {
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

/// `ProductCreated` 1.0 had a bare price and no status: it was a published product priced in
/// the catalog's default currency, with no SKU, categories, attributes, images or stock.
fn product_created_v1_to_v2(mut payload: Value) -> Value {
    if let Some(body) = payload.get_mut("ProductCreated").and_then(Value::as_object_mut) {
        body.entry("currency").or_insert_with(|| Value::String(default_currency().code().to_owned()));
        body.entry("status").or_insert_with(|| Value::String("published".to_owned()));
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(version: &str, payload: Value) -> SerializedEvent {
        stored_event("User", "UserRegistered", version, payload)
    }

    fn stored_event(aggregate_type: &str, event_type: &str, version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            "id".into(),
            1,
            aggregate_type.into(),
            event_type.into(),
            version.into(),
            payload,
            Value::Object(Default::default()),
        )
    }

    #[test]
    fn a_v1_product_is_a_published_product_in_the_default_currency() {
        let v1 = stored_event(
            "Product",
            "ProductCreated",
            "1.0.0",
            json!({"ProductCreated": {"id": "6b1f0c3e-5a8d-4d2b-9f07-3c1ea4d27b90", "name": "Lamp",
                   "description": "", "price": "19.99"}}),
        );
        let upcast = upcast(v1);
        assert_eq!(upcast.event_version, ProductEvent::CREATED_VERSION);
        let event: ProductEvent = serde_json::from_value(upcast.payload).unwrap();
        let ProductEvent::ProductCreated { currency, status, sku, on_hand, category_ids, price, .. } = event else {
            panic!("wrong event")
        };
        assert_eq!(currency, default_currency().code());
        assert_eq!(status, domain::ProductStatus::Published);
        assert_eq!((sku, on_hand, category_ids.len()), (None, 0, 0));
        assert_eq!(price.to_string(), "19.99");
    }

    #[test]
    fn a_current_product_keeps_its_currency_and_status() {
        let payload = json!({"ProductCreated": {"currency": "JPY", "status": "draft"}});
        let upcast = upcast(stored_event("Product", "ProductCreated", ProductEvent::CREATED_VERSION, payload.clone()));
        assert_eq!(upcast.payload, payload);
    }

    #[test]
    fn the_default_currency_is_set_once() {
        let current = default_currency();
        assert!(set_default_currency(current).is_ok());
        let other = Currency::parse(if current.code() == "JPY" { "EUR" } else { "JPY" }).unwrap();
        assert!(set_default_currency(other).is_err());
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
