//! Who holds a unique value: the event store's own record of claimed SKUs and category slugs
//! (`catalog_claims`, kept by the trigger on `events` in the append transaction; see the
//! catalog-rules migration). Only the write side reads it, to find an aggregate by its value
//! (a bulk import upserts by SKU and files products by category slug).

use sqlx::PgPool;

/// The product that holds `sku` (compared case-insensitively), as last committed.
pub async fn sku_holder(pool: &PgPool, sku: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT aggregate_id FROM catalog_claims WHERE kind = 'sku' AND value = lower($1)")
        .bind(sku)
        .fetch_optional(pool)
        .await
}

/// `(slug, category id)` of those of `slugs` (lower-case) that a live category holds.
pub async fn slug_holders(pool: &PgPool, slugs: &[String]) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT value, aggregate_id FROM catalog_claims WHERE kind = 'category_slug' AND value = ANY($1)")
        .bind(slugs)
        .fetch_all(pool)
        .await
}
