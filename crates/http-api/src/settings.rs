//! The HTTP settings both APIs take, flattened into each one's `Settings` (as
//! `service_runtime`'s `DatabaseSettings` is). Each flag also reads an environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Public key(s) bearer tokens are verified with: PEM text of one or more Ed25519
    /// `PUBLIC KEY` blocks (two during a key rotation). command-api also accepts its own key.
    #[arg(long, env = "TOKEN_VERIFY_KEYS", conflicts_with = "token_verify_keys_file", allow_hyphen_values = true)]
    pub token_verify_keys: Option<String>,

    /// A file holding what `TOKEN_VERIFY_KEYS` would.
    #[arg(long, env = "TOKEN_VERIFY_KEYS_FILE")]
    pub token_verify_keys_file: Option<PathBuf>,

    /// `development` (explicitly) allows the public development token key and plain `http`
    /// image URLs; any other or no value requires real keys.
    #[arg(long, env = "CATALOG_ENV")]
    pub environment: Option<String>,

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
    /// The PEM text of `TOKEN_VERIFY_KEYS` or of the file `TOKEN_VERIFY_KEYS_FILE` names.
    pub fn verify_keys_pem(&self) -> anyhow::Result<Option<String>> {
        read_inline_or_file(
            self.token_verify_keys.as_deref(),
            self.token_verify_keys_file.as_deref(),
            "TOKEN_VERIFY_KEYS",
        )
    }

    /// `CATALOG_ENV=development`, set explicitly: the only setting where the public
    /// development token key and plain `http` image URLs are accepted.
    pub fn is_development(&self) -> bool {
        self.environment.as_deref() == Some("development")
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

/// A setting given inline (`inline`) or as a file's path (`file`), named `name` in errors.
/// An empty value counts as not given.
pub fn read_inline_or_file(inline: Option<&str>, file: Option<&Path>, name: &str) -> anyhow::Result<Option<String>> {
    let inline = inline.filter(|text| !text.trim().is_empty());
    let file = file.filter(|path| !path.as_os_str().is_empty());
    match (inline, file) {
        (Some(text), _) => Ok(Some(text.to_owned())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(Some)
            .with_context(|| format!("cannot read {name}_FILE {}", path.display())),
        (None, None) => Ok(None),
    }
}
