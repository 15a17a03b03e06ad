//! What the write side adds to authentication: password hashing (bounded by a memory budget)
//! and the login and registration rate limits. Bearer tokens and the `Principal` extractor are
//! shared with query-api, in `http_api`.

mod passwords;
mod rate_limit;

pub use passwords::{HashError, PasswordHasher, DEFAULT_HASH_CONCURRENCY, DEFAULT_HASH_QUEUE};
pub use rate_limit::{LoginLimiter, LoginLimits, RegistrationLimiter, ReservationLimiter};
