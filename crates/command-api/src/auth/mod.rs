//! Authentication and authorisation: password hashing, bearer tokens, login rate limits, and
//! the [`Principal`] extractor that handlers use to learn who is calling.

mod passwords;
mod rate_limit;

pub use passwords::PasswordHasher;
pub use rate_limit::{LoginLimiter, LoginLimits};
pub use http_api::principal::Principal;
pub use http_api::tokens::{Claims, TokenKeys};
