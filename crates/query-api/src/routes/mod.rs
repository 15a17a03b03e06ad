//! The read API's routes, one module per resource, and what they share: who is reading
//! ([`Reader`]), the conditional-GET rule and query-parameter parsing.

mod categories;
mod products;
mod reservations;
pub mod schemas;
mod users;

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::Role;
use http_api::principal::Principal;
use http_api::problem::ApiError;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Every read route, each registered with its OpenAPI operation (`routes!` takes the path and
/// method from the handler's `#[utoipa::path]`), so none can be served without being in the spec.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(document())
        .routes(routes!(products::list))
        .routes(routes!(products::detail))
        .routes(routes!(products::history))
        .routes(routes!(categories::tree))
        .routes(routes!(categories::detail))
        .routes(routes!(users::list))
        .routes(routes!(users::me))
        .routes(routes!(users::detail))
        .routes(routes!(reservations::detail))
}

fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;

    // Described only as a parameter's value type, which utoipa does not collect by itself.
    #[derive(utoipa::OpenApi)]
    #[openapi(components(schemas(schemas::SortOrder)), tags(
        (name = "products", description = "Products from the read model, cached, with `ETag`, read-your-writes, \
            history and time travel. Shoppers (no token, or a customer's) see published products only; \
            admins see every status"),
        (name = "categories", description = "The category tree, with the number of published products in each"),
        (name = "users", description = "User profiles, for that user or an admin; the list of users, for admins"),
        (name = "reservations", description = "Stock reservations, for their owner or an admin"),
    ))]
    struct Tags;

    let mut document = http_api::openapi::base(
        "Catalog read API",
        "Products, categories and user profiles as the projector last wrote them, and each product's \
         history. Errors are `application/problem+json` (RFC 9457). Writes go to the write API (command-api).",
    );
    document.merge(Tags::openapi());
    document
}

/// Who is reading: anyone, or someone proven by a bearer token. Without an `Authorization`
/// header the reader is anonymous; a header with a token that does not verify is 401, never
/// silently anonymous (an admin with an expired token would otherwise see drafts vanish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// A valid token with the admin role: sees every status.
    pub admin: bool,
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Reader { admin: false });
        }
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Reader { admin: principal.role == Role::Admin })
    }
}

/// The query string as name → value, or a 400.
type Params = HashMap<String, String>;

fn query_params(query: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    query.map(|Query(params)| params).map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// An integer query parameter within `min..=max` (`None` when absent); anything else is a 400
/// naming it.
fn integer_param(params: &Params, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    raw.trim().parse::<i64>().ok().filter(|value| (min..=max).contains(value)).map(Some).ok_or_else(|| {
        let range = if max == i64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
        ApiError::BadRequest(format!("query parameter `{name}` must be an integer {range}, not {raw:?}"))
    })
}

/// `body` at `version` with its `ETag`, or 304 (tag, no body) when `If-None-Match` names it.
fn versioned<T: Serialize>(request: &IfNoneMatch, version: i64, body: &T) -> Response {
    let tag = http_api::etag(u64::try_from(version).unwrap_or_default());
    let etag = HeaderValue::from_str(&tag).expect("a quoted number is a valid header value");
    if request.names(&tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag)], Json(body)).into_response()
}

/// The request's `If-None-Match` values (none, usually): what a conditional GET needs of the
/// headers, without copying all of them as the `HeaderMap` extractor does.
#[derive(Debug, Default)]
pub struct IfNoneMatch(Vec<HeaderValue>);

impl<S: Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

impl IfNoneMatch {
    fn from_headers(headers: &HeaderMap) -> Self {
        IfNoneMatch(headers.get_all(header::IF_NONE_MATCH).iter().cloned().collect())
    }

    /// Uses the weak comparison (RFC 9110 §13.1.2): `W/"3"` matches `"3"`; `*` matches any
    /// current representation; the header may be a list, or repeated.
    fn names(&self, tag: &str) -> bool {
        self.0
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        IfNoneMatch::from_headers(&headers).names("\"2\"")
    }

    #[test]
    fn if_none_match_compares_weakly_and_reads_lists() {
        assert!(matches(&["\"2\""]));
        assert!(matches(&["W/\"2\""]));
        assert!(matches(&["*"]));
        assert!(matches(&["\"1\", \"2\""]));
        assert!(matches(&["\"1\"", "\"2\""]));
        assert!(!matches(&["\"1\""]));
        assert!(!matches(&["2"]));
        assert!(!matches(&[]));
    }
}
