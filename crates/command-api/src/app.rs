//! Builds the write API from its settings: `Application::build` is used by `main` and by tests.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::operations::{self, ReadinessCheck};
use service_runtime::settings::{DatabaseSettings, LogSettings};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{LoginLimiter, LoginLimits, PasswordHasher, TokenKeys};
use crate::commands::CommandBus;
use crate::problem::ApiError;

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

    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
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
            commands: CommandBus::new(pool.clone()),
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

/// The whole HTTP surface: API routes, operational endpoints and the middleware stack.
pub fn router(state: AppState, settings: &Settings, metrics: PrometheusHandle) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = Duration::from_secs(settings.request_timeout_seconds);
    let api = crate::routes::router()
        .fallback(|| async { ApiError::NotFound("resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next)))
        .with_state(state.clone());
    api.merge(operations::router(vec![ReadinessCheck::postgres(state.pool.clone())], metrics))
        .layer(middleware::from_fn(operations::track_http_metrics))
        .layer(cors(&settings.cors_allowed_origins))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Answers 503 (problem+json, `Retry-After`) instead of letting a slow request hang.
async fn with_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable { reason: "the request timed out".into(), retry_after_secs: 1 }.into_response(),
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([axum::http::header::ETAG, axum::http::header::LOCATION])
}
