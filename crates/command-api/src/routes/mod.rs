//! The write API's routes, one module per resource.

mod accounts;
mod categories;
mod import;
pub(crate) mod products;
mod reservations;
mod tokens;
mod users;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_api::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, ServiceUnavailable, Unauthorized,
    UnprocessableEntity, UnsupportedMediaType,
};
use http_api::problem::ApiError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;

pub use products::Price;

/// Every write route, each registered with its OpenAPI operation (`routes!` takes the path and
/// method from the handler's `#[utoipa::path]`), so none can be served without being in the spec.
pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(document())
        .routes(routes!(users::register))
        .routes(routes!(accounts::change_email))
        .routes(routes!(accounts::change_password))
        .routes(routes!(accounts::grant_role, accounts::revoke_role))
        .routes(routes!(accounts::deactivate))
        .routes(routes!(tokens::issue))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(tokens::keys))
        .routes(routes!(products::create))
        .routes(routes!(products::update, products::delete))
        .routes(routes!(products::adjust_stock))
        .routes(routes!(import::import_products))
        .routes(routes!(categories::create))
        .routes(routes!(categories::update, categories::delete))
        .routes(routes!(reservations::create))
        .routes(routes!(reservations::confirm))
        .routes(routes!(reservations::cancel));
    require_a_change(router.get_openapi_mut(), &["UpdateProduct", "UpdateCategory"]);
    router
}

/// What a create or a change answers: the aggregate written and its version after the write
/// (also its `ETag`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "version": 2}))]
pub struct Written {
    id: Uuid,
    #[schema(minimum = 1)]
    version: u64,
}

/// A path segment that is not a UUID cannot name a `resource`: 404, like any unknown id.
fn parse_id(raw: &str, resource: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(resource))
}

/// A create's answer: 201 with the new resource's read-API address (`collection` is its path,
/// such as `/api/v1/products`), its version as the `ETag`, and `{id, version}`.
fn created(collection: &str, id: Uuid, version: u64) -> Response {
    let headers = [(header::LOCATION, format!("{collection}/{id}")), (header::ETAG, http_api::etag(version))];
    (StatusCode::CREATED, headers, Json(Written { id, version })).into_response()
}

/// A change's answer: 200 with the new version as the `ETag` and `{id, version}`.
fn changed(id: Uuid, version: u64) -> Response {
    ([(header::ETAG, http_api::etag(version))], Json(Written { id, version })).into_response()
}

/// The problems a create can answer besides its 201 (one list, so the operations cannot drift).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents responses; never built
enum CreateProblems {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    #[response(status = 409)]
    Conflict(#[ref_response] Conflict),
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    #[response(status = 422)]
    UnprocessableEntity(#[ref_response] UnprocessableEntity),
    #[response(status = 503)]
    ServiceUnavailable(#[ref_response] ServiceUnavailable),
}

/// The problems a change of an existing product or category can answer besides its 200.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents responses; never built
enum ChangeProblems {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    #[response(status = 404)]
    NotFound(#[ref_response] NotFound),
    #[response(status = 409)]
    Conflict(#[ref_response] Conflict),
    #[response(status = 412)]
    PreconditionFailed(#[ref_response] PreconditionFailed),
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    #[response(status = 422)]
    UnprocessableEntity(#[ref_response] UnprocessableEntity),
    #[response(status = 503)]
    ServiceUnavailable(#[ref_response] ServiceUnavailable),
}

/// Partial updates need at least one field (`{}` is a 422). Set here rather than with
/// `#[schema(min_properties = 1)]`, which utoipa-gen 5.5 renders as `maxProperties`.
fn require_a_change(document: &mut utoipa::openapi::OpenApi, schemas: &[&str]) {
    use utoipa::openapi::{RefOr, Schema};

    for name in schemas {
        let schema = document.components.as_mut().and_then(|c| c.schemas.get_mut(*name));
        match schema {
            Some(RefOr::T(Schema::Object(object))) => object.min_properties = Some(1),
            _ => panic!("the OpenAPI document has no object schema {name}"),
        }
    }
}

fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;

    #[derive(utoipa::OpenApi)]
    #[openapi(tags(
        (name = "users", description = "Registration (open; every new account is a customer), changes to your \
            own account (`/api/v1/users/me`), and roles and deactivation (admin only)"),
        (name = "auth", description = "Bearer tokens for a username and password, and the public keys \
            that verify them"),
        (name = "products", description = "Product writes (admin only), with `If-Match` and `Idempotency-Key`: \
            SKU, price in a currency, publication status, categories, attributes, images, and stock, which \
            changes only by adjustments; bulk import by SKU from NDJSON or CSV"),
        (name = "categories", description = "Category writes (admin only), with `If-Match` and \
            `Idempotency-Key`: the tree products are filed under. Slugs are unique; a category cannot move \
            under its own descendants, nor be deleted while it has child categories"),
        (name = "reservations", description = "Stock reservations (any signed-in user): hold stock of up to 50 \
            products at once, all or nothing, then confirm (the stock is taken) or cancel; holds not confirmed \
            in time are released"),
    ))]
    struct Tags;

    let mut document = http_api::openapi::base(
        "Catalog write API",
        "Commands for Catalog's products, categories and users. Errors are `application/problem+json` \
         (RFC 9457). Reads are served by the read API (query-api).",
    );
    document.merge(Tags::openapi());
    document
}
