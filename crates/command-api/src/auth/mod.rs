//! What the write side adds to authentication: password hashing and login rate limits. Bearer
//! tokens and the `Principal` extractor are shared with query-api, in `http_api`.

mod passwords;
mod rate_limit;

pub use passwords::PasswordHasher;
pub use rate_limit::{LoginLimiter, LoginLimits};
