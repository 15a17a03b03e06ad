//! The product detail cache, the listener that keeps it fresh, and the `min_version` waits.
//!
//! The read store announces every row it writes (`pg_notify('catalog_read_model_changed',
//! 'products <id> <version>')`, delivered on commit). One background task `LISTEN`s and, per
//! product announcement, raises the product's *floor* (the highest version announced), drops
//! its cache entry, and broadcasts the change to waiting requests.
//!
//! A cached product carries its categories' names and slugs, which change with the categories'
//! own rows (`categories <id> <version>`). Any category announcement drops *every* cached
//! product (a new epoch, below): renames are rare, and finding the products listed in one
//! category would need a read per announcement; the next read of each product reloads it.
//!
//! Products of every status are cached alike; who may see which is decided by the handlers on
//! every answer, cached or not.
//!
//! An entry holds what a hit sends: the JSON body and the `ETag`, encoded once when the product
//! is loaded ([`Served`]), so a hit serialises nothing. An id with no row at all is cached too
//! (as *absent*, at version 0), under the same rules: the product's creation is announced like
//! any change, so a request for an unknown id, repeated, reaches Postgres once per TTL or
//! change, not once per request. Distinct unknown ids still cost one indexed read each; moka's
//! admission policy (TinyLFU) keeps such one-off ids from evicting the products people read.
//!
//! Freshness rules, each closing one race:
//! - An entry is served only if its version is at least the floor. A load that read v3 just
//!   before v4 was announced may still insert v3 after the invalidation; the floor makes that
//!   entry a miss instead of leaving it cached until its TTL.
//! - Entries carry the *epoch* they were loaded in. The epoch changes whenever announcements
//!   may have been missed (listener connected, lost, reconnected), which discards every older
//!   entry at once, including ones whose load was in flight across the gap.
//! - An odd epoch means nobody is listening: requests then bypass the cache entirely, since
//!   nothing would tell it about changes.
//!
//! The floors live in a second bounded cache (LRU, so a new floor is always admitted, and
//! kept twice as long and twice as many as entries). A floor is forgotten only after that
//! many other products changed; the entry it guarded is then at worst stale until its TTL,
//! which is why the TTL stays as a safety net.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use http_api::problem::ApiError;
use metrics::Counter;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use read_model::products;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use uuid::Uuid;

use crate::views::{self, Product};

/// The channel the read store's triggers notify on (see the read-model migration).
pub const CHANNEL: &str = "catalog_read_model_changed";

/// How long the listener waits before reconnecting, doubling up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one attempt to connect the listener may take.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A change as waiting requests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Product `id` reached `version` (committed).
    Product { id: Uuid, version: i64 },
    /// A category changed: cached products may show its old name.
    Categories,
    /// Reservation `id` reached `version` (never cached; `min_version` waits listen for it).
    Reservation { id: Uuid, version: i64 },
    /// Announcements may have been missed: everyone re-reads.
    Resync,
}

/// Size and lifetime of the product cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub max_entries: u64,
    /// A safety net only: entries are normally invalidated by notifications long before.
    pub ttl: Duration,
}

/// A product as a read sends it, encoded once: the body, the `ETag`, and what the handler
/// decides visibility by.
#[derive(Debug)]
pub struct Served {
    pub id: Uuid,
    pub version: i64,
    /// Published and not deleted: anyone may read it.
    pub public: bool,
    /// A tombstone: 404 to everyone.
    pub deleted: bool,
    /// The product's JSON, exactly as `Json(product)` would encode it.
    pub body: Bytes,
    /// `"<version>"`.
    pub etag: HeaderValue,
}

impl Served {
    pub fn encode(product: &Product) -> Self {
        let body = serde_json::to_vec(product).expect("a product view always serialises");
        let etag = HeaderValue::from_str(&http_api::etag(u64::try_from(product.version).unwrap_or_default()))
            .expect("a quoted number is a valid header value");
        Served {
            id: product.id,
            version: product.version,
            public: product.is_public(),
            deleted: product.deleted,
            body: Bytes::from(body),
            etag,
        }
    }
}

#[derive(Clone)]
struct Entry {
    /// `None`: there was no row for the id when it was loaded.
    product: Option<Arc<Served>>,
    epoch: u64,
}

impl Entry {
    /// The version the entry shows; an absent product is at 0, below any announced version.
    fn version(&self) -> i64 {
        self.product.as_ref().map_or(0, |product| product.version)
    }
}

/// Why a coalesced load produced no entry. Shared between the requests that waited on it,
/// so it holds the classification, not the (non-clonable) database error.
#[derive(Debug)]
enum LoadError {
    Unavailable { reason: String, retry_after_secs: u64 },
    Failed(String),
}

impl From<sqlx::Error> for LoadError {
    fn from(error: sqlx::Error) -> Self {
        match ApiError::from_database(error) {
            ApiError::Unavailable { reason, retry_after_secs } => LoadError::Unavailable { reason, retry_after_secs },
            ApiError::Internal(cause) => LoadError::Failed(format!("{cause:#}")),
            other => LoadError::Failed(other.to_string()),
        }
    }
}

/// Products (as served, categories included) by id, shared by all requests (cheap to clone).
#[derive(Clone)]
pub struct ProductCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// The listener's own connection, so it never takes one of the request pool's.
    listen_pool: PgPool,
    entries: Cache<Uuid, Entry>,
    floors: Cache<Uuid, i64>,
    /// Even while listening, odd while not (initially odd: nothing is listening yet).
    epoch: AtomicU64,
    /// Counts every change seen (announced products and categories, resyncs, and versions
    /// a read-your-writes wait found before their announcement): a cached listing is current
    /// while this has not moved since it was read (see `crate::listing_cache`).
    changes_seen: AtomicU64,
    changes: broadcast::Sender<Change>,
    /// Registered once: looking a counter up by name on every hit costs more than the hit.
    hits: Counter,
    misses: Counter,
}

impl ProductCache {
    pub fn new(pool: PgPool, settings: CacheSettings) -> Self {
        let entries = Cache::builder().max_capacity(settings.max_entries).time_to_live(settings.ttl).build();
        let floors = Cache::builder()
            .max_capacity(settings.max_entries.saturating_mul(2).max(1))
            .time_to_live(settings.ttl.saturating_mul(2))
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(LISTEN_CONNECT_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        let (changes, _) = broadcast::channel(1024);
        let (hits, misses) =
            (metrics::counter!("query_cache_hits_total"), metrics::counter!("query_cache_misses_total"));
        Self {
            inner: Arc::new(Inner {
                pool,
                listen_pool,
                entries,
                floors,
                epoch: AtomicU64::new(1),
                changes_seen: AtomicU64::new(0),
                changes,
                hits,
                misses,
            }),
        }
    }

    /// True while the change listener is connected (and the cache is in use).
    pub fn is_listening(&self) -> bool {
        live(self.inner.epoch.load(Ordering::SeqCst))
    }

    /// How many changes were seen so far, while the listener is connected; `None` while it is
    /// not (nothing would tell a cached listing that it went stale). Read it before reading
    /// the read model: an answer read after it is current for as long as it does not move.
    pub fn changes_seen(&self) -> Option<u64> {
        // The count first: a resync bumps it after the epoch, so a value read here before an
        // epoch that is still live cannot belong to a gap in listening.
        let seen = self.inner.changes_seen.load(Ordering::SeqCst);
        self.is_listening().then_some(seen)
    }

    fn saw_change(&self) {
        self.inner.changes_seen.fetch_add(1, Ordering::SeqCst);
    }

    /// The product's row (a tombstone included) at a version no older than `min_version` and
    /// than anything announced so far, if the read store has it that new; otherwise the row as
    /// it is now, or `None` if there is no row.
    pub async fn get(&self, id: Uuid, min_version: i64) -> Result<Option<Arc<Served>>, ApiError> {
        let inner = &self.inner;
        let epoch = inner.epoch.load(Ordering::SeqCst);
        if !live(epoch) {
            self.record_miss();
            return self.read(id).await;
        }
        let announced = inner.floors.get(&id).await.unwrap_or(0);
        if let Some(entry) = inner.entries.get(&id).await {
            if entry.epoch == epoch && entry.version() >= announced.max(min_version) {
                inner.hits.increment(1);
                return Ok(entry.product);
            }
            inner.entries.invalidate(&id).await;
        }
        self.record_miss();
        // Concurrent misses for one id share this one load.
        let loaded = inner
            .entries
            .try_get_with(id, async {
                let product = load(&inner.pool, id).await?;
                Ok::<_, LoadError>(Entry { product: product.map(|product| Arc::new(Served::encode(&product))), epoch })
            })
            .await;
        metrics::gauge!("query_cache_entries").set(inner.entries.entry_count() as f64);
        match loaded {
            // A load another request started earlier may predate what we already know of.
            Ok(entry) if entry.epoch != epoch || entry.version() < announced => {
                let fresh = self.read(id).await?;
                inner.entries.insert(id, Entry { product: fresh.clone(), epoch }).await;
                Ok(fresh)
            }
            Ok(entry) => Ok(entry.product),
            Err(error) => match &*error {
                LoadError::Unavailable { reason, retry_after_secs } => {
                    Err(ApiError::Unavailable { reason: reason.clone(), retry_after_secs: *retry_after_secs })
                }
                LoadError::Failed(cause) => Err(ApiError::Internal(anyhow::anyhow!("loading product {id}: {cause}"))),
            },
        }
    }

    /// Read-your-writes: the product once the read store holds it at `version` or later,
    /// waiting for announcements (never polling) at most `wait`; then 503 with `Retry-After`.
    pub async fn wait_for(&self, id: Uuid, version: i64, wait: Duration) -> Result<Option<Arc<Served>>, ApiError> {
        let deadline = Instant::now() + wait;
        // Subscribed before the first read, so a change committed in between still wakes us.
        let mut changes = self.inner.changes.subscribe();
        loop {
            let current = self.get(id, version).await?;
            if current.as_ref().is_some_and(|view| view.version >= version) {
                // Found in the read model before its announcement arrived: cached listings
                // must not go on showing the older version to the reader who waited for it.
                if self.inner.floors.get(&id).await.unwrap_or(0) < version {
                    self.saw_change();
                }
                return Ok(current);
            }
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Ok(Ok(Change::Product { id: changed, version: reached }))
                        if changed == id && reached >= version =>
                    {
                        break
                    }
                    Ok(Ok(Change::Resync) | Err(RecvError::Lagged(_))) => break,
                    Ok(Ok(Change::Product { .. } | Change::Categories | Change::Reservation { .. })) => {}
                    Ok(Err(RecvError::Closed)) | Err(_) => {
                        return Err(ApiError::Unavailable {
                            reason: format!("the read model has not reached version {version} of this product yet"),
                            retry_after_secs: 1,
                        })
                    }
                }
            }
        }
    }

    /// Announcements as they arrive (products, categories, reservations, resyncs).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Starts listening for changes. Failing is not fatal: [`follow_changes`](Self::follow_changes)
    /// keeps trying, and the cache is bypassed until it succeeds.
    pub async fn listen(&self) -> Option<PgListener> {
        match self.connect().await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for read model changes yet; serving uncached");
                None
            }
        }
    }

    /// The background task: applies announcements until the request pool is closed (or the
    /// task is aborted), reconnecting with backoff whenever the listener fails. Starts from
    /// `listener` if one is connected.
    pub async fn follow_changes(self, mut listener: Option<PgListener>) {
        let mut backoff = FIRST_BACKOFF;
        while !self.inner.pool.is_closed() {
            let mut connected = match listener.take() {
                Some(connected) => connected,
                None => match self.connect().await {
                    Ok(connected) => connected,
                    Err(error) => {
                        tracing::warn!(
                            %error, retry_in = ?backoff, "cannot listen for read model changes; serving uncached"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            backoff = FIRST_BACKOFF;
            let error = loop {
                match connected.try_recv().await {
                    Ok(Some(notification)) => self.announce(notification.payload()).await,
                    // The connection dropped and has already been re-established (sqlx's eager
                    // reconnect): what was announced in between is lost.
                    Ok(None) => {
                        tracing::warn!("read model change listener reconnected; dropping the product cache");
                        self.resync(true);
                    }
                    Err(error) => break error,
                }
            };
            self.resync(false);
            tracing::warn!(%error, "lost the read model change listener; serving uncached until it is back");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.inner.listen_pool).await?;
        listener.listen(CHANNEL).await?;
        // Entries from before now may have missed announcements.
        self.resync(true);
        tracing::info!(channel = CHANNEL, "listening for read model changes");
        Ok(listener)
    }

    /// Applies one announcement: floor first, then invalidation, then wake-ups, so whoever is
    /// woken or misses already sees the new floor.
    async fn announce(&self, payload: &str) {
        let Some(change) = parse(payload) else {
            return;
        };
        if !matches!(change, Change::Reservation { .. }) {
            self.saw_change();
        }
        let (id, version) = match change {
            Change::Product { id, version } => (id, version),
            Change::Categories => return self.forget_all(),
            Change::Resync => return self.resync(true),
            Change::Reservation { .. } => {
                let _ = self.inner.changes.send(change);
                return;
            }
        };
        let inner = &self.inner;
        // Only this task writes floors, so read-then-write cannot lose a higher version.
        if inner.floors.get(&id).await.is_none_or(|floor| floor < version) {
            inner.floors.insert(id, version).await;
        }
        inner.entries.invalidate(&id).await;
        metrics::gauge!("query_cache_entries").set(inner.entries.entry_count() as f64);
        let _ = inner.changes.send(change);
    }

    /// Starts a new epoch (even when `listening`), dropping every entry, and wakes all waiters.
    fn resync(&self, listening: bool) {
        let _ = self.inner.epoch.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |epoch| {
            Some(if live(epoch + 1) == listening { epoch + 1 } else { epoch + 2 })
        });
        self.saw_change();
        self.inner.entries.invalidate_all();
        metrics::gauge!("query_cache_entries").set(0.0);
        let _ = self.inner.changes.send(Change::Resync);
    }

    /// Drops every entry, including loads in flight (a new epoch, still listening): they may
    /// hold a category's old name. Floors stay; waiters are not woken (no product changed).
    fn forget_all(&self) {
        let bumped =
            self.inner.epoch.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |epoch| live(epoch).then_some(epoch + 2));
        if bumped.is_ok() {
            self.inner.entries.invalidate_all();
            metrics::gauge!("query_cache_entries").set(0.0);
        }
    }

    async fn read(&self, id: Uuid) -> Result<Option<Arc<Served>>, ApiError> {
        Ok(load(&self.inner.pool, id).await?.map(|product| Arc::new(Served::encode(&product))))
    }

    fn record_miss(&self) {
        self.inner.misses.increment(1);
        metrics::gauge!("query_cache_entries").set(self.inner.entries.entry_count() as f64);
    }
}

/// Product `id` as served (a tombstone included), with its categories' current names.
async fn load(pool: &PgPool, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    let Some(view) = products::get(pool, id).await? else {
        return Ok(None);
    };
    Ok(views::products(pool, vec![view]).await?.pop())
}

/// Even epochs are the ones in which the listener is connected.
fn live(epoch: u64) -> bool {
    epoch.is_multiple_of(2)
}

/// `products <id> <version>` → a product change. `products * …` (sent after a table rebuild)
/// or anything else unreadable about products → a resync: dropping everything is always safe.
/// Anything about `categories` → every cached product is dropped. Other tables are neither
/// cached nor awaited.
fn parse(payload: &str) -> Option<Change> {
    let mut parts = payload.split(' ');
    match parts.next()? {
        "products" => {}
        "categories" => return Some(Change::Categories),
        "reservations" => {
            let (id, version) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
            return Some(Change::Reservation { id, version });
        }
        _ => return None,
    }
    let id = parts.next();
    match (id.map(str::parse), parts.next().map(str::parse)) {
        (Some(Ok(id)), Some(Ok(version))) => Some(Change::Product { id, version }),
        _ => {
            if id != Some("*") {
                tracing::warn!(payload, "unreadable product change notification; dropping the product cache");
            }
            Some(Change::Resync)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache whose database is unreachable: any read that reaches it fails fast with 503,
    /// which is how these tests tell a miss from a hit.
    fn cache() -> ProductCache {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://postgres@127.0.0.1:1/unreachable")
            .unwrap();
        ProductCache::new(pool, CacheSettings { max_entries: 100, ttl: Duration::from_secs(60) })
    }

    fn view(id: Uuid, version: i64) -> Option<Arc<Served>> {
        let now = sqlx::types::chrono::Utc::now();
        Some(Arc::new(Served::encode(&Product {
            id,
            name: "Lamp".into(),
            description: String::new(),
            price: "1.00".into(),
            currency: "EUR".into(),
            sku: None,
            status: domain::ProductStatus::Published,
            categories: Vec::new(),
            attributes: Default::default(),
            images: Vec::new(),
            stock: views::Stock::new(0, 0),
            created_at: now,
            updated_at: now,
            version,
            deleted: false,
        })))
    }

    async fn put(cache: &ProductCache, id: Uuid, version: i64) {
        let epoch = cache.inner.epoch.load(Ordering::SeqCst);
        cache.inner.entries.insert(id, Entry { product: view(id, version), epoch }).await;
    }

    fn served(result: Result<Option<Arc<Served>>, ApiError>) -> Option<i64> {
        match result {
            Ok(view) => view.map(|v| v.version),
            Err(ApiError::Unavailable { .. }) => None,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn notifications_parse_products_and_ignore_the_rest() {
        let id = Uuid::new_v4();
        assert_eq!(parse(&format!("products {id} 3")), Some(Change::Product { id, version: 3 }));
        assert_eq!(parse(&format!("users {id} 3")), None);
        assert_eq!(parse(&format!("categories {id} 3")), Some(Change::Categories));
        assert_eq!(parse("categories * 0"), Some(Change::Categories));
        assert_eq!(parse("products * 0"), Some(Change::Resync));
        assert_eq!(parse("products nonsense 3"), Some(Change::Resync));
        assert_eq!(parse("products"), Some(Change::Resync));
        assert_eq!(parse(&format!("reservations {id} 4")), Some(Change::Reservation { id, version: 4 }));
        assert_eq!(parse("reservations * 0"), None);
    }

    #[tokio::test]
    async fn a_fresh_entry_is_served_while_listening() {
        let cache = cache();
        cache.resync(true);
        let id = Uuid::new_v4();
        put(&cache, id, 2).await;
        assert_eq!(served(cache.get(id, 0).await), Some(2));
        assert_eq!(served(cache.get(id, 2).await), Some(2));
        // Asking for a newer version than cached goes to the database.
        assert_eq!(served(cache.get(id, 3).await), None);
    }

    #[tokio::test]
    async fn an_entry_inserted_after_a_newer_announcement_is_a_miss() {
        let cache = cache();
        cache.resync(true);
        let id = Uuid::new_v4();
        cache.announce(&format!("products {id} 4")).await;
        // The slow load that read v3 before v4 was announced lands now.
        put(&cache, id, 3).await;
        assert_eq!(served(cache.get(id, 0).await), None);
        // A later announcement of an older version does not lower the floor.
        cache.announce(&format!("products {id} 2")).await;
        put(&cache, id, 3).await;
        assert_eq!(served(cache.get(id, 0).await), None);
        put(&cache, id, 4).await;
        assert_eq!(served(cache.get(id, 0).await), Some(4));
    }

    #[tokio::test]
    async fn an_absent_product_is_cached_until_its_creation_is_announced() {
        let cache = cache();
        cache.resync(true);
        let id = Uuid::new_v4();
        let epoch = cache.inner.epoch.load(Ordering::SeqCst);
        cache.inner.entries.insert(id, Entry { product: None, epoch }).await;
        // Served from the cache: the unreachable database would have answered 503.
        assert!(matches!(cache.get(id, 0).await, Ok(None)));
        // Asking for a version of it is not answered by "absent".
        assert!(matches!(cache.get(id, 1).await, Err(ApiError::Unavailable { .. })));
        cache.inner.entries.insert(id, Entry { product: None, epoch }).await;
        cache.announce(&format!("products {id} 1")).await;
        assert!(matches!(cache.get(id, 0).await, Err(ApiError::Unavailable { .. })));
        // A load that found nothing, landing after the creation was announced, is a miss too.
        cache.inner.entries.insert(id, Entry { product: None, epoch }).await;
        assert!(matches!(cache.get(id, 0).await, Err(ApiError::Unavailable { .. })));
    }

    #[test]
    fn a_served_product_carries_the_json_and_etag_a_handler_would_send() {
        let id = Uuid::new_v4();
        let served = view(id, 7).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
        assert_eq!(json["id"], id.to_string());
        assert_eq!(json["version"], 7);
        assert!(json.get("deleted").is_none());
        assert_eq!(served.etag, "\"7\"");
        assert!(served.public && !served.deleted);
    }

    #[tokio::test]
    async fn a_table_wide_announcement_drops_every_entry() {
        let cache = cache();
        cache.resync(true);
        let id = Uuid::new_v4();
        put(&cache, id, 1).await;
        cache.announce("products * 0").await;
        assert!(cache.is_listening());
        assert_eq!(served(cache.get(id, 0).await), None);
    }

    #[tokio::test]
    async fn a_category_announcement_drops_every_entry_and_loads_in_flight() {
        let cache = cache();
        cache.resync(true);
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        put(&cache, one, 1).await;
        let before = cache.inner.epoch.load(Ordering::SeqCst);
        cache.announce(&format!("categories {} 2", Uuid::new_v4())).await;
        assert!(cache.is_listening());
        assert_eq!(served(cache.get(one, 0).await), None);
        // A load that started before the rename lands after it: not served.
        cache.inner.entries.insert(two, Entry { product: view(two, 1), epoch: before }).await;
        assert_eq!(served(cache.get(two, 0).await), None);
        // Entries loaded after it are.
        put(&cache, two, 1).await;
        assert_eq!(served(cache.get(two, 0).await), Some(1));
    }

    #[tokio::test]
    async fn losing_the_listener_discards_entries_and_bypasses_the_cache() {
        let cache = cache();
        cache.resync(true);
        let id = Uuid::new_v4();
        let epoch = cache.inner.epoch.load(Ordering::SeqCst);
        cache.resync(false);
        assert!(!cache.is_listening());
        put(&cache, id, 1).await;
        assert_eq!(served(cache.get(id, 0).await), None, "not listening: never from the cache");
        cache.resync(true);
        assert!(cache.is_listening());
        // An entry from before the gap, e.g. a load in flight across it, is not served.
        cache.inner.entries.insert(id, Entry { product: view(id, 1), epoch }).await;
        assert_eq!(served(cache.get(id, 0).await), None);
    }
}
