//! The HTTP conventions both Catalog APIs share, so a client sees one API, not two.
//!
//! # Layout
//! - [`client`]: the client address behind `TRUSTED_PROXIES` (rate limits key on it).
//! - [`problem`]: [`ApiError`](problem::ApiError), every error as `application/problem+json`.
//! - [`tokens`]: EdDSA bearer tokens (signed by command-api with its private key, verified by
//!   both APIs with public keys), the signing and verification keys and their JWKS form.
//! - [`middleware`]: fallbacks, time limit, request id, trace span, CORS and metrics layers,
//!   and [`middleware::service`], which assembles an API with its operational routes and docs.
//! - [`openapi`]: the OpenAPI pieces both APIs share (problem responses, bearer scheme, the
//!   documented operational routes, `/openapi.json`).
//! - [`resilience`]: load shedding (concurrency limit) and the database circuit breaker.
//! - [`principal`]: the extractor that turns a bearer token into the caller's id and role.
//! - [`settings`]: [`HttpSettings`], the flags both APIs take (token verification keys, environment,
//!   time limit, concurrency limit, CORS origins).
//! - [`etag`]: entity tags are the aggregate version, quoted.

pub mod client;
pub mod middleware;
pub mod openapi;
pub mod principal;
pub mod problem;
pub mod resilience;
pub mod settings;
pub mod tokens;

pub use settings::HttpSettings;

/// The largest request body either API reads.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// The entity tag of a resource at aggregate `version`: `"3"`. Both APIs use the same tag,
/// so a client can send command-api's `ETag` as `If-None-Match` to query-api.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}
