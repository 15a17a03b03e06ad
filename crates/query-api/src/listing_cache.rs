//! The listing cache: first pages of `GET /api/v1/products` as shoppers see them, encoded once,
//! served until anything in the catalog changes.
//!
//! A storefront asks for the same few listings over and over (the home page, each category's
//! first page, popular searches), and each costs several statements; a cached one costs a
//! lookup. What is cached, and for whom:
//! - only listings of published products (readers who are not admins) and only pages reached
//!   without a cursor (the first page, or an `offset`): admins and later pages always read the
//!   read model;
//! - the entry is keyed by the whole canonical request (filters, text, sort, page size, offset,
//!   facets), never by a hash of it, so no crafted query can be served another's answer;
//! - an entry holds the encoded body and the next cursor (the `Link` header is built from
//!   each request's own parameters).
//!
//! Freshness: an entry is served only while [`changes_seen`](crate::cache::ProductCache::changes_seen)
//! has not moved since the listing was read, that is while no product or category change has
//! been announced (nor a resync, nor a version a `?min_version=` read found ahead of its
//! announcement). So a cached listing is what reading the read model would answer but for the
//! announcements still on their way: as fresh as the product cache.
//! While the listener is down nothing is cached. Under a steady stream of writes entries go
//! stale at once and every listing reads the read model, as without the cache; concurrent
//! requests for one listing still share one read.
//!
//! Cost to a caller who floods it with distinct listings: each miss is a listing read, as
//! without the cache; entries are bounded by their bytes (`LIST_CACHE_MIB`), and moka's
//! admission policy keeps one-off listings from evicting the popular ones. What it tells a
//! caller: only what any shopper may read, and, by how fast it answers, whether someone asked
//! for the same listing since the catalog last changed (as any shared cache, a CDN's included,
//! would); admins' listings, which may show drafts, are never in it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_api::problem::ApiError;
use metrics::Counter;
use moka::future::Cache;

/// A listing as a request sends it.
#[derive(Debug)]
pub struct EncodedPage {
    /// The `Page`'s JSON.
    pub body: Bytes,
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
struct Entry {
    page: Arc<EncodedPage>,
    /// [`ProductCache::changes_seen`](crate::cache::ProductCache::changes_seen) before the read.
    seen: u64,
}

/// Why a shared read failed, kept so that every request that waited on it can answer.
#[derive(Debug)]
enum LoadError {
    Unavailable { reason: String, retry_after_secs: u64 },
    Other(String),
}

#[derive(Clone)]
pub struct ListingCache {
    /// `None`: disabled (`LIST_CACHE_MIB=0`).
    entries: Option<Cache<String, Entry>>,
    hits: Counter,
    misses: Counter,
}

impl ListingCache {
    /// At most `max_bytes` of keys and bodies; an entry lives at most `ttl` (a safety net:
    /// changes make it stale long before).
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let entries = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Entry| {
                    let bytes =
                        key.len() + entry.page.body.len() + entry.page.next_cursor.as_ref().map_or(0, String::len);
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        });
        ListingCache {
            entries,
            hits: metrics::counter!("query_list_cache_hits_total"),
            misses: metrics::counter!("query_list_cache_misses_total"),
        }
    }

    /// The listing under `key`, read by `load` unless an entry read after change `seen` is
    /// cached (`seen`: `None` reads without caching). Concurrent misses for one key share
    /// one read.
    pub async fn get_or_load<F, Fut>(
        &self,
        key: String,
        seen: Option<u64>,
        load: F,
    ) -> Result<Arc<EncodedPage>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<EncodedPage, ApiError>>,
    {
        let (Some(entries), Some(seen)) = (&self.entries, seen) else {
            return load().await.map(Arc::new);
        };
        if let Some(entry) = entries.get(&key).await {
            // Read after every change this request knows of (a later request may have
            // stored one read after a change this one has not seen yet: fresher still).
            if entry.seen >= seen {
                self.hits.increment(1);
                return Ok(entry.page);
            }
            entries.invalidate(&key).await;
        }
        self.misses.increment(1);
        let loaded = entries
            .try_get_with(key.clone(), async {
                match load().await {
                    Ok(page) => Ok(Entry { page: Arc::new(page), seen }),
                    Err(ApiError::Unavailable { reason, retry_after_secs }) => {
                        Err(LoadError::Unavailable { reason, retry_after_secs })
                    }
                    Err(ApiError::Internal(cause)) => Err(LoadError::Other(format!("{cause:#}"))),
                    Err(error) => Err(LoadError::Other(error.to_string())),
                }
            })
            .await;
        match loaded {
            // A read that another request started before a change this one has seen may be
            // stale: read again. (Never the case when the read ran for this request.)
            Ok(entry) if entry.seen < seen => {
                let page = Arc::new(load().await?);
                entries.insert(key, Entry { page: page.clone(), seen }).await;
                Ok(page)
            }
            Ok(entry) => Ok(entry.page),
            Err(error) => Err(match &*error {
                LoadError::Unavailable { reason, retry_after_secs } => {
                    ApiError::Unavailable { reason: reason.clone(), retry_after_secs: *retry_after_secs }
                }
                LoadError::Other(cause) => ApiError::Internal(anyhow::anyhow!("listing products: {cause}")),
            }),
        }
    }
}
