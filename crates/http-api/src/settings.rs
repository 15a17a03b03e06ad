//! The HTTP settings both APIs take, flattened into each one's `Settings` (as
//! `service_runtime`'s `DatabaseSettings` is). Each flag also reads an environment variable.

use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// HMAC secret that signs bearer tokens (at least 32 bytes). Required in production.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `production` refuses to start without a real JWT_SECRET.
    #[arg(long, env = "CATALOG_ENV", default_value = "development")]
    pub environment: String,

    /// Longest time one request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 10)]
    pub request_timeout_seconds: u64,

    /// API requests served at once; beyond it a request is answered 503 with `Retry-After`
    /// at once instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Proxies (CIDRs or addresses, comma-separated) whose `X-Forwarded-For` is believed: only
    /// when the TCP peer is one of them is the right-most untrusted forwarded address taken as the
    /// client. None by default (the peer is the client).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
}

impl HttpSettings {
    /// The token secret: see [`crate::tokens::resolve_secret`] (refused when too short, or
    /// missing in production; the development secret otherwise).
    pub fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        crate::tokens::resolve_secret(self.jwt_secret.as_deref(), &self.environment)
    }

    /// `CATALOG_ENV=development` (the default), where plain `http` image URLs are accepted.
    pub fn is_development(&self) -> bool {
        self.environment == "development"
    }

    /// `TRUSTED_PROXIES`, parsed; an unreadable entry refuses to start.
    pub fn trusted_proxies(&self) -> anyhow::Result<crate::client::TrustedProxies> {
        crate::client::TrustedProxies::parse(&self.trusted_proxies)
    }

    /// Longest time one request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}
