//! Request extractors that turn malformed input into problem responses, never a 500.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use event_store::EventMetadata;
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};

use http_api::problem::ApiError;

/// `axum::Json`, but every rejection (wrong content type, bad syntax, wrong shape, too large)
/// becomes an [`ApiError`], and the body must be a JSON object: serde would otherwise also read
/// a struct from an array of its fields in order (`["Lamp", null, "19.99"]`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(ObjectBody(value)) = axum::Json::<ObjectBody<T>>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// `T`, read only from a JSON object.
struct ObjectBody<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectBody<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(deserializer)).map(ObjectBody)
    }
}

/// A deserializer that answers every request for a value (a struct, above all) with the inner
/// deserializer's map, so an array is "invalid type: sequence, expected struct ...". Only the
/// outermost value goes through it; fields are read by the inner deserializer as usual.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The `If-Match` precondition as an aggregate version. `*` (or no header) means "any version".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Version(u64),
    /// A tag that cannot be one of ours (not a quoted version): it can never match.
    Unmatchable,
}

impl IfMatch {
    pub fn expected_version(self) -> Result<Option<u64>, ApiError> {
        match self {
            IfMatch::Any => Ok(None),
            IfMatch::Version(v) => Ok(Some(v)),
            IfMatch::Unmatchable => Err(ApiError::PreconditionFailed),
        }
    }

    fn parse(value: &str) -> Self {
        let value = value.trim();
        if value == "*" {
            return IfMatch::Any;
        }
        // If-Match uses the strong comparison (RFC 9110 §13.1.1): a weak tag never matches.
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse().ok())
            .map_or(IfMatch::Unmatchable, IfMatch::Version)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.headers.get(header::IF_MATCH) {
            None => IfMatch::Any,
            Some(value) => value.to_str().map_or(IfMatch::Unmatchable, IfMatch::parse),
        })
    }
}

/// Which request asked, recorded in every event's metadata. (The trace it belongs to is the
/// request span's, which the edge layer continued from the caller's `traceparent`.)
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: Option<String>,
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self { request_id: get("x-request-id") }
    }

    /// The metadata stored with the events of a command `actor` made in this request. The
    /// `traceparent` names the current span (the request's, itself a child of the caller's
    /// traceparent if one came), so the publisher and projector continue the same trace.
    pub fn metadata(&self, actor: impl Into<String>) -> EventMetadata {
        EventMetadata {
            actor: actor.into(),
            request_id: self.request_id.clone(),
            traceparent: service_runtime::telemetry::current_traceparent(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let valid =
            value.to_str().ok().filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        match valid {
            Some(key) => Ok(IdempotencyKey(Some(key.to_owned()))),
            None => Err(ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IfMatch;

    #[test]
    fn if_match_accepts_quoted_versions_and_star_only() {
        assert_eq!(IfMatch::parse("\"3\""), IfMatch::Version(3));
        assert_eq!(IfMatch::parse("*"), IfMatch::Any);
        assert_eq!(IfMatch::parse("W/\"3\""), IfMatch::Unmatchable);
        assert_eq!(IfMatch::parse("3"), IfMatch::Unmatchable);
        assert_eq!(IfMatch::parse("\"x\""), IfMatch::Unmatchable);
    }
}
