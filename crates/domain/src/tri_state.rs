//! Serde for `Option<Option<T>>` fields that distinguish "leave as is" from "clear".
//!
//! A partial update needs three states for a clearable field: absent (unchanged), `null`
//! (cleared) and a value (set). Plain serde folds absent and `null` into `None`, so such fields
//! are declared as
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Patch {
//!     #[serde(default, skip_serializing_if = "Option::is_none", with = "domain::tri_state")]
//!     sku: Option<Option<String>>,
//! }
//! ```
//!
//! `default` turns an absent field into `None`; this module turns `null` into `Some(None)` and a
//! value into `Some(Some(value))`; `skip_serializing_if` writes `None` back as an absent field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes `Some(None)` as `null` and `Some(Some(v))` as `v`. `None` is skipped by the field's
/// `skip_serializing_if`; should it get here anyway it is written as `null` too.
pub fn serialize<T, S>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Serialize,
    S: Serializer,
{
    match value {
        Some(Some(inner)) => serializer.serialize_some(inner),
        Some(None) | None => serializer.serialize_none(),
    }
}

/// Only called for a field that is present, so `null` means "cleared".
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Patch {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "super")]
        sku: Option<Option<String>>,
    }

    #[test]
    fn absent_null_and_value_survive_a_round_trip() {
        for (patch, wire) in [
            (Patch { sku: None }, json!({})),
            (Patch { sku: Some(None) }, json!({"sku": null})),
            (Patch { sku: Some(Some("LAMP-1".into())) }, json!({"sku": "LAMP-1"})),
        ] {
            assert_eq!(serde_json::to_value(&patch).unwrap(), wire);
            assert_eq!(serde_json::from_value::<Patch>(wire).unwrap(), patch);
        }
    }
}
