//! Builds the write API from its settings: `Application::build` is used by `main` and by tests.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{header, HeaderName, Method};
use axum::Router;
use http_api::middleware;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::operations::ReadinessCheck;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::auth::{LoginLimiter, LoginLimits, PasswordHasher, TokenKeys};
use crate::commands::CommandBus;

/// Requests larger than this are refused with 413 before they are parsed.
pub use http_api::BODY_LIMIT_BYTES;

#[derive(Debug, Clone, Parser)]
#[command(name = "command-api", about = "Catalog's write REST API", version)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "COMMAND_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub log: LogSettings,

    /// HMAC secret that signs bearer tokens (at least 32 bytes). Required in production.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `production` refuses to start without a real JWT_SECRET.
    #[arg(long, env = "CATALOG_ENV", default_value = "development")]
    pub environment: String,

    /// Bearer token lifetime in seconds (capped at 3600).
    #[arg(long, env = "TOKEN_TTL_SECONDS", default_value_t = 900)]
    pub token_ttl_seconds: u64,

    /// Login attempts allowed per username per minute.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_USERNAME", default_value_t = NonZeroU32::new(10).unwrap())]
    pub login_attempts_per_username: NonZeroU32,

    /// Login attempts allowed per client address per minute.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_CLIENT", default_value_t = NonZeroU32::new(60).unwrap())]
    pub login_attempts_per_client: NonZeroU32,

    /// Longest time one request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 10)]
    pub request_timeout_seconds: u64,

    /// API requests served at once; beyond it a request is answered 503 with `Retry-After`
    /// at once instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Store an aggregate snapshot every this many events, so a command replays at most that
    /// many events instead of the aggregate's whole history; 0 turns snapshots off.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = crate::commands::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: usize,
}

impl Settings {
    fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        http_api::tokens::resolve_secret(self.jwt_secret.as_deref(), &self.environment)
    }
}

/// Everything a handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub commands: CommandBus,
    pub hasher: PasswordHasher,
    pub tokens: TokenKeys,
    pub login_limiter: LoginLimiter,
}

impl FromRef<AppState> for TokenKeys {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    login_limiter: LoginLimiter,
}

impl Application {
    pub async fn build(settings: Settings, pool: PgPool, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let tokens = TokenKeys::new(&settings.jwt_secret()?, Duration::from_secs(settings.token_ttl_seconds));
        let login_limiter = LoginLimiter::new(LoginLimits {
            per_username_per_minute: settings.login_attempts_per_username,
            per_client_per_minute: settings.login_attempts_per_client,
        });
        let state = AppState {
            pool: pool.clone(),
            commands: CommandBus::new(pool.clone()).with_snapshot_every(settings.snapshot_every),
            hasher: PasswordHasher::owasp_minimum(),
            tokens,
            login_limiter: login_limiter.clone(),
        };
        let router = router(state, &settings, metrics);
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self { listener, router, login_limiter })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let limiter = self.login_limiter.clone();
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.forget_idle();
            }
        });
        tracing::info!(addr = %self.local_addr(), "command-api listening");
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, service).with_graceful_shutdown(shutdown).await;
        housekeeping.abort();
        Ok(result?)
    }
}

/// The whole HTTP surface: API routes, operational endpoints, `/openapi.json`, `/docs` and the
/// middleware stack.
pub fn router(state: AppState, settings: &Settings, metrics: PrometheusHandle) -> Router {
    let cors = middleware::cors(
        &settings.cors_allowed_origins,
        [Method::GET, Method::POST, Method::PATCH, Method::DELETE],
        [header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH, HeaderName::from_static("idempotency-key")],
        [header::ETAG, header::LOCATION],
    );
    middleware::service(middleware::Service {
        api: crate::routes::router().layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)),
        checks: vec![ReadinessCheck::postgres(state.pool.clone())],
        state,
        timeout: Duration::from_secs(settings.request_timeout_seconds),
        max_concurrent_requests: settings.max_concurrent_requests,
        metrics,
        cors,
    })
}

/// The OpenAPI document `/openapi.json` serves, built from the same routers as [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    middleware::spec(crate::routes::router())
}
