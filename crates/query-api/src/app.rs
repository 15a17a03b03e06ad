//! Builds the read API from its settings: `Application::build` is used by `main` and by tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::{header, Method};
use axum::Router;
use clap::Parser;
use http_api::middleware;
use http_api::tokens::{self, TokenVerifier};
use http_api::HttpSettings;
use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::operations::ReadinessCheck;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::cache::{CacheSettings, ProductCache};
use crate::listing_cache::ListingCache;

#[derive(Debug, Clone, Parser)]
#[command(name = "query-api", about = "Catalog's read REST API", version)]
// A flag given twice counts once, the last (tests add to a default command line).
#[command(args_override_self = true)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "QUERY_API_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub log: LogSettings,

    // Token verification keys (public only: query-api cannot sign), environment, time limit, concurrency limit and CORS origins.
    #[command(flatten)]
    pub http: HttpSettings,

    /// Longest a `?min_version=` read waits for the read model to catch up before it is
    /// answered 503 with `Retry-After`. Keep it below the request timeout.
    #[arg(long, env = "MIN_VERSION_WAIT_MS", default_value_t = 5000)]
    pub min_version_wait_ms: u64,

    /// Most products the detail cache holds.
    #[arg(long, env = "PRODUCT_CACHE_MAX_ENTRIES", default_value_t = 10_000)]
    pub product_cache_max_entries: u64,

    /// Longest a cached product lives; a safety net, since changes invalidate it at once.
    #[arg(long, env = "PRODUCT_CACHE_TTL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub product_cache_ttl_seconds: u64,

    /// Most memory, in MiB, the listing cache takes for shoppers' first pages (keys and
    /// bodies); 0 turns it off. Any change to the catalog makes every cached listing stale.
    #[arg(long, env = "LIST_CACHE_MIB", default_value_t = 32)]
    pub list_cache_mib: u64,

    /// Up to how many matching products a listing's `total` is exact; beyond, it is the query
    /// planner's estimate (`total_is_estimate`). Counting costs a read per product, so keep it
    /// bounded; the documented value is the default.
    #[arg(long, env = "LIST_EXACT_TOTAL_LIMIT", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub list_exact_total_limit: i64,

    /// At most how many matching products a relevance listing ranks and each facet counts (the
    /// first the search index finds); beyond, relevance is the best of those and facets are
    /// their counts scaled to the number of matches (`facets.estimated`). Ranking and counting
    /// read every product's row, so keep it bounded.
    #[arg(long, env = "LIST_SAMPLE", default_value_t = read_model::search::DEFAULT_SAMPLE,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub list_sample: i64,
}

/// Everything a handler may need, shared: the router clones the state for every request, and
/// `State` extraction once more, so it is one `Arc` (cloning the fields one by one, the pool,
/// the caches and the token verifier, cost more than a cached read's own work).
#[derive(Clone)]
pub struct AppState(Arc<Resources>);

impl AppState {
    pub fn new(resources: Resources) -> Self {
        AppState(Arc::new(resources))
    }
}

impl std::ops::Deref for AppState {
    type Target = Resources;

    fn deref(&self) -> &Resources {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Resources {
    pub pool: PgPool,
    pub products: ProductCache,
    /// Shoppers' first pages of `GET /api/v1/products` (`LIST_CACHE_MIB`).
    pub listings: ListingCache,
    pub tokens: TokenVerifier,
    pub min_version_wait: Duration,
    /// Listings count their matches exactly up to `exact_total` (`LIST_EXACT_TOTAL_LIMIT`), and
    /// rank and facet at most `sample` (`LIST_SAMPLE`).
    pub list_limits: read_model::search::Limits,
    /// The longest a listing's statements may run (the request timeout): Postgres stops a
    /// search whose answer nobody would wait for.
    pub list_statement_timeout: Duration,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    products: ProductCache,
    changes: Option<PgListener>,
}

impl Application {
    /// Binds the address and starts listening for read model changes (if Postgres is
    /// reachable; otherwise `run` keeps trying, and products are served uncached meanwhile).
    pub async fn build(settings: Settings, pool: PgPool, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        // Public keys only: query-api verifies tokens and cannot sign one.
        let verify_pem = settings.http.verify_keys_pem()?;
        let keys = tokens::resolve_verify_keys(verify_pem.as_deref(), None, settings.http.is_development())?;
        // No rate limits here (yet), but the setting is shared: an unreadable one refuses to
        // start on both APIs alike.
        settings.http.trusted_proxies()?;
        let min_version_wait = Duration::from_millis(settings.min_version_wait_ms);
        if min_version_wait >= settings.http.request_timeout() {
            tracing::warn!("MIN_VERSION_WAIT_MS is not below REQUEST_TIMEOUT_SECONDS: long waits end as timeouts");
        }
        let products = ProductCache::new(
            pool.clone(),
            CacheSettings {
                max_entries: settings.product_cache_max_entries,
                ttl: Duration::from_secs(settings.product_cache_ttl_seconds),
            },
        );
        let changes = products.listen().await;
        let state = AppState::new(Resources {
            pool,
            products: products.clone(),
            listings: ListingCache::new(
                settings.list_cache_mib.saturating_mul(1024 * 1024),
                Duration::from_secs(settings.product_cache_ttl_seconds),
            ),
            tokens: TokenVerifier::new(&keys),
            min_version_wait,
            list_limits: read_model::search::Limits {
                exact_total: settings.list_exact_total_limit,
                sample: settings.list_sample,
            },
            list_statement_timeout: settings.http.request_timeout(),
        });
        let router = router(state, &settings, metrics);
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self { listener, router, products, changes })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let follower = tokio::spawn(self.products.follow_changes(self.changes));
        tracing::info!(addr = %self.listener.local_addr()?, "query-api listening");
        let result = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await;
        follower.abort();
        Ok(result?)
    }
}

/// The whole HTTP surface: API routes, operational endpoints, `/openapi.json`, `/docs` and the
/// middleware stack.
pub fn router(state: AppState, settings: &Settings, metrics: PrometheusHandle) -> Router {
    let timeout = settings.http.request_timeout();
    let products = state.products.clone();
    let checks = vec![
        ReadinessCheck::postgres(state.pool.clone()),
        // Without it the cache is bypassed and `min_version` reads cannot be woken.
        ReadinessCheck::new("change_notifications", move || {
            let listening = products.is_listening();
            async move {
                if listening {
                    Ok(())
                } else {
                    Err("not listening for read model changes".into())
                }
            }
        }),
    ];
    let cors = middleware::cors(
        &settings.http.cors_allowed_origins,
        [Method::GET, Method::HEAD],
        [header::AUTHORIZATION, header::IF_NONE_MATCH],
        [header::ETAG, header::RETRY_AFTER, header::LINK],
    );
    middleware::service(middleware::Service {
        api: crate::routes::router(),
        state,
        timeout,
        max_concurrent_requests: settings.http.max_concurrent_requests,
        checks,
        metrics,
        cors,
    })
}

/// The OpenAPI document `/openapi.json` serves, built from the same routers as [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    middleware::spec(crate::routes::router())
}
