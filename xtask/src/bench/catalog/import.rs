//! The bulk import: one NDJSON body through `POST /api/v1/products/import`, the wait until the
//! read model has every line, and the `COPY` of the same rows into a bare table.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::PgPool;

use super::data;
use crate::proc::step;
use crate::system::System;

/// How long the bench waits for the read model after the import returns.
pub const WAIT: Duration = Duration::from_secs(300);
/// The price of every updated product: no generated product has it (they start at 1.00).
const UPDATED_PRICE: &str = "0.99";

pub struct Results {
    pub lines: usize,
    pub created: usize,
    pub updated: usize,
    pub errors: usize,
    pub seconds: f64,
    pub per_sec: f64,
    /// From the import's response end until the read model has every line.
    pub projected_seconds: Option<f64>,
    pub copy_seconds: f64,
    pub copy_per_sec: f64,
}

/// Line `i` (0-based): every tenth a price change of generated product `i`, the others a new
/// product `IMP-i`.
fn is_update(i: usize, products: usize) -> bool {
    i.is_multiple_of(10) && i < products
}

/// The NDJSON line for line `i`.
pub fn line(i: usize, products: usize, tree: &[data::CategorySpec], leaves: &[usize]) -> serde_json::Value {
    if is_update(i, products) {
        return serde_json::json!({"sku": format!("GEN-{i}"), "price": UPDATED_PRICE});
    }
    let spec = data::product_spec("IMP", i, leaves);
    serde_json::json!({
        "sku": spec.sku,
        "name": spec.name,
        "description": spec.description,
        "price": format!("{}.{:02}", spec.price_cents / 100, spec.price_cents % 100),
        "currency": "EUR",
        "status": if spec.draft { "draft" } else { "published" },
        "category_slugs": [tree[spec.category].slug],
        "attributes": {"brand": spec.brand},
        "stock": spec.on_hand,
    })
}

pub async fn run(
    pool: &PgPool,
    system: &System,
    token: &str,
    tree: &[data::CategorySpec],
    leaves: &[usize],
    products: usize,
    lines: usize,
) -> Result<Results> {
    let values: Vec<serde_json::Value> = (0..lines).map(|i| line(i, products, tree, leaves)).collect();
    let mut body = Vec::with_capacity(lines * 500);
    for value in &values {
        serde_json::to_writer(&mut body, value)?;
        body.push(b'\n');
    }
    let updates = (0..lines).filter(|&i| is_update(i, products)).count();
    step(format!(
        "catalog: importing {lines} NDJSON lines ({updates} of them updates, {} MiB) over HTTP",
        body.len() / 1_048_576
    ));
    let client = reqwest::Client::builder().build()?;
    let started = Instant::now();
    let response = client
        .post(format!("http://{}/api/v1/products/import", system.ports.command_api))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    let results = response.text().await?;
    let seconds = started.elapsed().as_secs_f64();
    let returned = Instant::now();
    let (mut created, mut updated, mut errors) = (0, 0, 0);
    let mut ids = Vec::with_capacity(lines);
    for result in results.lines().filter(|l| !l.trim().is_empty()) {
        let result: serde_json::Value = serde_json::from_str(result).context("an import result line")?;
        let id = result["id"].as_str().and_then(|id| id.parse::<uuid::Uuid>().ok());
        match (result["result"].as_str(), id) {
            (Some("created"), Some(id)) => {
                created += 1;
                ids.push(id);
            }
            (Some("updated"), Some(id)) => {
                updated += 1;
                ids.push(id);
            }
            _ => {
                if errors < 3 {
                    eprintln!("warning: import result {result}");
                }
                errors += 1;
            }
        }
    }
    step(format!(
        "catalog: import returned after {seconds:.1} s: {created} created, {updated} updated, {errors} errors"
    ));
    let projected_seconds = wait_for_read_model(pool, ids, returned).await?;

    step("catalog: COPY of the same rows into a bare table");
    let (copy_seconds, copied) = copy_baseline(pool, &values).await?;
    anyhow::ensure!(copied == lines, "COPY wrote {copied} rows, not {lines}");
    Ok(Results {
        lines,
        created,
        updated,
        errors,
        seconds,
        per_sec: (created + updated) as f64 / seconds,
        projected_seconds,
        copy_seconds,
        copy_per_sec: lines as f64 / copy_seconds,
    })
}

/// Seconds from `since` until `products` shows every imported line (`ids`, each new product
/// or price change); None if that takes longer than [`WAIT`]. Each poll looks up, by primary
/// key, only the last 200 products not seen yet (the import wrote them last, so the
/// projector reaches them last), and all the others only once those show: looking up all
/// 100,000 every 250 ms cost Postgres 80 ms a poll, 14 % of its time while the projector caught up.
async fn wait_for_read_model(pool: &PgPool, mut ids: Vec<uuid::Uuid>, since: Instant) -> Result<Option<f64>> {
    const PROBE: usize = 200;
    let all = ids.len();
    loop {
        let seen_of = |ids: &[uuid::Uuid]| {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT id FROM products WHERE id = ANY($1) AND (sku LIKE 'IMP-%' OR price = $2::numeric)",
            )
            .bind(ids.to_vec())
            .bind(UPDATED_PRICE)
            .fetch_all(pool)
        };
        let probe = &ids[ids.len().saturating_sub(PROBE)..];
        let mut seen: std::collections::HashSet<uuid::Uuid> = seen_of(probe).await?.into_iter().collect();
        if seen.len() == probe.len() {
            seen.extend(seen_of(&ids).await?);
        }
        ids.retain(|id| !seen.contains(id));
        if ids.is_empty() {
            let seconds = since.elapsed().as_secs_f64();
            step(format!("catalog: the read model has every imported line {seconds:.1} s after the import returned"));
            return Ok(Some(seconds));
        }
        if since.elapsed() > WAIT {
            step(format!("catalog: after {WAIT:?} the read model still lacks {} of {all} imported lines", ids.len()));
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `COPY` of the lines' fields into a fresh table without indexes; its seconds and rows.
async fn copy_baseline(pool: &PgPool, values: &[serde_json::Value]) -> Result<(f64, usize)> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_import_copy;
         CREATE TABLE bench_import_copy (sku text, name text, description text, price numeric, currency text,
                                         status text, category_slugs text[], attributes jsonb, stock bigint)",
    )
    .execute(pool)
    .await?;
    let mut csv = String::with_capacity(values.len() * 500);
    for value in values {
        let text = |key: &str| match value[key].as_str() {
            Some(s) => format!("\"{}\"", s.replace('"', "\"\"")),
            None => String::new(),
        };
        let slugs = value["category_slugs"]
            .as_array()
            .map(|slugs| format!("\"{{{}}}\"", slugs.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(",")))
            .unwrap_or_default();
        let attributes =
            value.get("attributes").map(|a| format!("\"{}\"", a.to_string().replace('"', "\"\""))).unwrap_or_default();
        let stock = value["stock"].as_i64().map(|s| s.to_string()).unwrap_or_default();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{slugs},{attributes},{stock}\n",
            text("sku"),
            text("name"),
            text("description"),
            value["price"].as_str().unwrap_or(""),
            text("currency"),
            text("status"),
        ));
    }
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = connection.copy_in_raw("COPY bench_import_copy FROM STDIN (FORMAT csv)").await?;
    copy.send(csv.into_bytes()).await?;
    let rows = copy.finish().await?;
    Ok((started.elapsed().as_secs_f64(), rows as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_in_ten_updates_a_generated_product_and_the_rest_are_new() {
        let tree = data::category_tree();
        let leaves = data::leaves(&tree);
        let update = line(20, 1_000, &tree, &leaves);
        assert_eq!(update, serde_json::json!({"sku": "GEN-20", "price": "0.99"}));
        let new = line(21, 1_000, &tree, &leaves);
        assert_eq!(new["sku"], "IMP-21");
        assert!(new["price"].as_str().unwrap().split_once('.').unwrap().1.len() == 2);
        let slug = new["category_slugs"][0].as_str().unwrap();
        assert!(tree.iter().any(|c| c.slug == slug && c.depth == 2));
        // Beyond the generated products there is nothing to update.
        assert_eq!(line(2_000, 1_000, &tree, &leaves)["sku"], "IMP-2000");
    }
}
