//! The read API's routes, one module per resource, and the conditional-GET rule they share.

mod products;
pub mod schemas;
mod users;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
        .routes(routes!(users::detail))
}

fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;

    #[derive(utoipa::OpenApi)]
    #[openapi(tags(
        (name = "products", description = "Live products from the read model, cached, with `ETag` and read-your-writes"),
        (name = "users", description = "User profiles, for that user or an admin"),
    ))]
    struct Tags;

    let mut document = http_api::openapi::base(
        "Catalog read API",
        "Products and user profiles as the projector last wrote them. Errors are \
         `application/problem+json` (RFC 9457). Writes go to the write API (command-api).",
    );
    document.merge(Tags::openapi());
    document
}

/// `body` at `version` with its `ETag`, or 304 (tag, no body) when `If-None-Match` names it.
fn versioned<T: Serialize>(request: &HeaderMap, version: i64, body: &T) -> Response {
    let tag = http_api::etag(u64::try_from(version).unwrap_or_default());
    let etag = HeaderValue::from_str(&tag).expect("a quoted number is a valid header value");
    if none_match_names(request, &tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag)], Json(body)).into_response()
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/"3"` matches `"3"`; `*`
/// matches any current representation; the header may be a list, or repeated.
fn none_match_names(request: &HeaderMap, tag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        none_match_names(&headers, "\"2\"")
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
