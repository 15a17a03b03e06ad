//! The write API's routes, one module per resource.

mod products;
mod tokens;
mod users;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub use products::Price;

/// Every write route, each registered with its OpenAPI operation (`routes!` takes the path and
/// method from the handler's `#[utoipa::path]`), so none can be served without being in the spec.
pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(document())
        .routes(routes!(users::register))
        .routes(routes!(tokens::issue))
        .routes(routes!(products::create))
        .routes(routes!(products::update, products::delete));
    require_a_change(router.get_openapi_mut());
    router
}

/// `UpdateProduct` needs at least one field (`{}` is a 422). Set here rather than with
/// `#[schema(min_properties = 1)]`, which utoipa-gen 5.5 renders as `maxProperties`.
fn require_a_change(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Schema};

    let schema = document.components.as_mut().and_then(|c| c.schemas.get_mut("UpdateProduct"));
    if let Some(RefOr::T(Schema::Object(object))) = schema {
        object.min_properties = Some(1);
    }
}

fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;

    #[derive(utoipa::OpenApi)]
    #[openapi(tags(
        (name = "users", description = "Registration (open; every new account is a customer)"),
        (name = "auth", description = "Bearer tokens for a username and password"),
        (name = "products", description = "Product writes (admin only), with `If-Match` and `Idempotency-Key`"),
    ))]
    struct Tags;

    let mut document = http_api::openapi::base(
        "Catalog write API",
        "Commands for Catalog's products and users. Errors are `application/problem+json` (RFC 9457). \
         Reads are served by the read API (query-api).",
    );
    document.merge(Tags::openapi());
    document
}
