//! Builds the write API from its settings: `Application::build` is used by `main` and by tests.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{header, HeaderName, Method};
use axum::Router;
use clap::Parser;
use domain::Currency;
use event_store::{CommandBus, CurrencySettings};
use http_api::client::TrustedProxies;
use http_api::middleware;
use http_api::tokens::{self, TokenIssuer, TokenVerifier};
use http_api::HttpSettings;
use http_api::BODY_LIMIT_BYTES;
use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::operations::ReadinessCheck;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{LoginLimiter, LoginLimits, PasswordHasher, RegistrationLimiter, ReservationLimiter};
use crate::idempotency::Idempotency;
use crate::import::Importer;
use crate::sessions::Sessions;

#[derive(Debug, Clone, Parser)]
#[command(name = "command-api", about = "Catalog's write REST API", version)]
// A flag given twice counts once, the last (tests add to a default command line).
#[command(args_override_self = true)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "COMMAND_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub log: LogSettings,

    #[command(flatten)]
    pub http: HttpSettings,

    /// `CATALOG_DEFAULT_CURRENCY`: what a product is priced in when its create request names no
    /// currency (and what products from before currencies are read in).
    #[command(flatten)]
    pub currency: CurrencySettings,

    /// Access token lifetime in seconds (capped at 3600). Access tokens cannot be revoked
    /// before they expire, so keep it short; refresh tokens renew them.
    #[arg(long, env = "TOKEN_TTL_SECONDS", default_value_t = 300)]
    pub token_ttl_seconds: u64,

    /// The Ed25519 private key (PKCS#8 PEM) access tokens are signed with. Required unless
    /// `CATALOG_ENV=development`. Only command-api holds it.
    #[arg(
        long,
        env = "TOKEN_SIGNING_KEY",
        hide_env_values = true,
        conflicts_with = "token_signing_key_file",
        allow_hyphen_values = true
    )]
    pub token_signing_key: Option<String>,

    /// A file holding what `TOKEN_SIGNING_KEY` would (e.g. a mounted Secret).
    #[arg(long, env = "TOKEN_SIGNING_KEY_FILE")]
    pub token_signing_key_file: Option<std::path::PathBuf>,

    /// How long a session (a login's refresh tokens) lasts, from login; refreshing does not
    /// extend it.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECONDS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=90 * 24 * 3600))]
    pub refresh_token_ttl_seconds: u64,

    /// Sessions one user may hold at once; a new login beyond it ends the oldest.
    #[arg(long, env = "REFRESH_SESSIONS_PER_USER", default_value_t = NonZeroU32::new(10).unwrap())]
    pub refresh_sessions_per_user: NonZeroU32,

    /// Login attempts allowed per username per minute.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_USERNAME", default_value_t = NonZeroU32::new(10).unwrap())]
    pub login_attempts_per_username: NonZeroU32,

    /// Login attempts allowed per client address per minute.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_CLIENT", default_value_t = NonZeroU32::new(60).unwrap())]
    pub login_attempts_per_client: NonZeroU32,

    /// Registrations allowed per client address per minute.
    #[arg(long, env = "REGISTRATIONS_PER_CLIENT", default_value_t = NonZeroU32::new(10).unwrap())]
    pub registrations_per_client: NonZeroU32,

    /// Reservations a customer may place per minute (admins are not limited).
    #[arg(long, env = "RESERVATIONS_PER_USER", default_value_t = NonZeroU32::new(30).unwrap())]
    pub reservations_per_user: NonZeroU32,

    /// Password hashes and verifications (registration, login, password change) running at once.
    /// Each holds 19 MiB, so the default (6) keeps hashing under 128 MiB.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY",
          default_value_t = NonZeroUsize::new(crate::auth::DEFAULT_HASH_CONCURRENCY).unwrap())]
    pub password_hash_concurrency: NonZeroUsize,

    /// How long a hash waits for one of those slots before the request is answered 503 with
    /// `Retry-After`.
    #[arg(long, env = "PASSWORD_HASH_QUEUE_MS", default_value_t = crate::auth::DEFAULT_HASH_QUEUE.as_millis() as u64)]
    pub password_hash_queue_ms: u64,

    /// Key of the HMAC that fingerprints requests sent with an `Idempotency-Key` (at least 32
    /// bytes; keep it out of the database). Required unless `CATALOG_ENV=development`.
    #[arg(long, env = "IDEMPOTENCY_KEY_SECRET", hide_env_values = true)]
    pub idempotency_key_secret: Option<String>,

    /// Hours an `Idempotency-Key` and its stored response are kept (1 to 8760); older ones are
    /// purged.
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL_HOURS", default_value_t = crate::idempotency::DEFAULT_TTL_HOURS,
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub idempotency_key_ttl_hours: u64,

    /// Product imports (`POST /api/v1/products/import`) running at once; one more is answered
    /// 503 with `Retry-After` (0 turns imports off).
    #[arg(long, env = "IMPORT_MAX_RUNNING", default_value_t = 2)]
    pub import_max_running: usize,

    /// Lines one import works on at once. Each holds at most one database connection at a
    /// time, so imports take at most `IMPORT_MAX_RUNNING` × this many of the pool's connections.
    #[arg(long, env = "IMPORT_CONCURRENCY", default_value_t = crate::import::DEFAULT_CONCURRENCY)]
    pub import_concurrency: usize,

    /// Store an aggregate snapshot every this many events, so a command replays at most that
    /// many events instead of the aggregate's whole history; 0 turns snapshots off.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = event_store::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: usize,
}

/// Everything a handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub commands: CommandBus,
    pub hasher: PasswordHasher,
    pub tokens: TokenIssuer,
    pub login_limiter: LoginLimiter,
    pub registration_limiter: RegistrationLimiter,
    pub reservation_limiter: ReservationLimiter,
    /// `TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Request fingerprints and the lifetime of `Idempotency-Key` records.
    pub idempotency: Idempotency,
    pub sessions: Sessions,
    /// The currency of a product created without one (`CATALOG_DEFAULT_CURRENCY`).
    pub default_currency: Currency,
    /// Plain `http` image URLs are accepted (development only; https everywhere else).
    pub allow_http_images: bool,
    /// Bulk imports, and the permits of those running (`IMPORT_MAX_RUNNING`).
    pub importer: Importer,
    pub imports: Arc<Semaphore>,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.verifier().clone()
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Fails when a setting is invalid (the default currency, the token keys, the idempotency
    /// secret, the trusted proxies) or the address cannot be bound.
    pub async fn build(settings: Settings, pool: PgPool, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let default_currency = settings.currency.apply().map_err(anyhow::Error::msg)?;
        let tokens = token_issuer(&settings)?;
        let login_limiter = LoginLimiter::new(LoginLimits {
            per_username_per_minute: settings.login_attempts_per_username,
            per_client_per_minute: settings.login_attempts_per_client,
        });
        let registration_limiter = RegistrationLimiter::new(settings.registrations_per_client);
        let reservation_limiter = ReservationLimiter::new(settings.reservations_per_user);
        let trusted_proxies = settings.http.trusted_proxies()?;
        let idempotency = Idempotency::new(
            settings.idempotency_key_secret.as_deref(),
            settings.http.is_development(),
            Duration::from_secs(settings.idempotency_key_ttl_hours.saturating_mul(3600)),
        )?;
        let hasher = PasswordHasher::owasp_minimum().with_limits(
            settings.password_hash_concurrency.get(),
            Duration::from_millis(settings.password_hash_queue_ms),
        );
        let commands = CommandBus::new(pool.clone()).with_snapshot_every(settings.snapshot_every);
        let allow_http_images = settings.http.is_development();
        let importer = Importer::new(commands.clone(), pool.clone(), default_currency, allow_http_images)
            .with_concurrency(settings.import_concurrency);
        let import_connections = settings.import_max_running.saturating_mul(settings.import_concurrency.max(1));
        if import_connections >= settings.database.database_max_connections as usize {
            tracing::warn!(
                import_connections,
                pool = settings.database.database_max_connections,
                "running imports can take every database connection; lower IMPORT_MAX_RUNNING or \
                 IMPORT_CONCURRENCY, or raise DATABASE_MAX_CONNECTIONS"
            );
        }
        let sessions = Sessions::new(
            pool.clone(),
            Duration::from_secs(settings.refresh_token_ttl_seconds),
            settings.refresh_sessions_per_user.get(),
        );
        let state = AppState {
            pool: pool.clone(),
            commands,
            hasher,
            tokens,
            login_limiter,
            registration_limiter,
            reservation_limiter,
            trusted_proxies,
            idempotency,
            sessions,
            default_currency,
            allow_http_images,
            importer,
            imports: Arc::new(Semaphore::new(settings.import_max_running)),
        };
        let router = router(state.clone(), &settings, metrics);
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self { listener, router, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.state.clone();
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.login_limiter.forget_idle();
                state.registration_limiter.forget_idle();
                state.reservation_limiter.forget_idle();
                match state.idempotency.purge_expired(&state.pool).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged expired idempotency keys"),
                    Err(error) => tracing::warn!(%error, "could not purge expired idempotency keys"),
                }
                match state.sessions.purge_expired().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired refresh sessions purged"),
                    Err(error) => tracing::warn!(%error, "could not purge expired refresh sessions"),
                }
            }
        });
        tracing::info!(addr = %self.local_addr(), "command-api listening");
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, service).with_graceful_shutdown(shutdown).await;
        housekeeping.abort();
        Ok(result?)
    }
}

/// The signing key and every key tokens are verified with (its own, and the other one during a
/// rotation): refused unless real, or `CATALOG_ENV=development`.
fn token_issuer(settings: &Settings) -> anyhow::Result<TokenIssuer> {
    let development = settings.http.is_development();
    let signing_pem = http_api::settings::read_inline_or_file(
        settings.token_signing_key.as_deref(),
        settings.token_signing_key_file.as_deref(),
        "TOKEN_SIGNING_KEY",
    )?;
    let signing = tokens::resolve_signing_key(signing_pem.as_deref(), development)?;
    let verify_pem = settings.http.verify_keys_pem()?;
    let verify = tokens::resolve_verify_keys(verify_pem.as_deref(), Some(signing.public_key()), development)?;
    Ok(TokenIssuer::new(signing, &verify, Duration::from_secs(settings.token_ttl_seconds)))
}

/// The whole HTTP surface: API routes, operational endpoints, `/openapi.json`, `/docs` and the
/// middleware stack.
pub fn router(state: AppState, settings: &Settings, metrics: PrometheusHandle) -> Router {
    let cors = middleware::cors(
        &settings.http.cors_allowed_origins,
        [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
        [header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH, HeaderName::from_static("idempotency-key")],
        [header::ETAG, header::LOCATION],
    );
    middleware::service(middleware::Service {
        api: crate::routes::router().layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)),
        checks: vec![ReadinessCheck::postgres(state.pool.clone())],
        state,
        timeout: settings.http.request_timeout(),
        max_concurrent_requests: settings.http.max_concurrent_requests,
        metrics,
        cors,
    })
}

/// The OpenAPI document `/openapi.json` serves, built from the same routers as [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    middleware::spec(crate::routes::router())
}
