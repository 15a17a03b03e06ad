//! `cargo xtask bench rebuild`: `catalogctl rebuild products` (release) on a store of
//! 1,000,000 product events generated through the domain (`Product::handle`, so every event is
//! one the aggregate would have emitted), inserted with multi-row statements.
//!
//! Measured: events/s of the rebuild, against the same run's read ceiling (the same ordered
//! stream of event rows read by a client that does nothing with them), and the rebuild
//! process's peak resident memory at 250,000 and at 1,000,000 events: a streaming rebuild holds
//! one aggregate and one write batch, so the peak should not grow with the store.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{Product, ProductCommand};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::harness::{cores, write_section};
use crate::dev::Backends;
use crate::proc::{self, step};
use crate::system::{catalogctl, fresh_database};

const DB_NAME: &str = "catalog_bench_rebuild";
/// Events per product: created, then four updates.
const EVENTS_PER_PRODUCT: usize = 5;
const SIZES: [usize; 2] = [250_000, 1_000_000];
const INSERT_BATCH: usize = 10_000;

struct Row {
    events: usize,
    rebuild_seconds: f64,
    rebuild_per_sec: f64,
    read_per_sec: f64,
    peak_rss_mib: f64,
}

pub async fn run(backends: &Backends) -> Result<()> {
    let url = fresh_database(backends, DB_NAME).await?;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await?;
    let mut rows = Vec::new();
    let mut stored = 0;
    for size in SIZES {
        step(format!("generating events through the domain up to {size}"));
        generate(&pool, stored / EVENTS_PER_PRODUCT, (size - stored) / EVENTS_PER_PRODUCT).await?;
        stored = size;
        sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
        step(format!("reading the {size} event rows in rebuild order (the read ceiling)"));
        let read_per_sec = read_ceiling(&pool).await?;
        step(format!("catalogctl rebuild products over {size} events"));
        let (rebuild_seconds, peak_rss_mib) = rebuild(&url)?;
        let rebuilt: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&pool).await?;
        anyhow::ensure!(rebuilt as usize == size / EVENTS_PER_PRODUCT, "rebuild produced {rebuilt} rows");
        rows.push(Row {
            events: size,
            rebuild_seconds,
            rebuild_per_sec: size as f64 / rebuild_seconds,
            read_per_sec,
            peak_rss_mib,
        });
    }
    pool.close().await;
    report(&rows)
}

/// Appends the events of products `first .. first + count`, each created then updated four
/// times, as the aggregate emits them.
async fn generate(pool: &PgPool, first: usize, count: usize) -> Result<()> {
    let mut batch = Batch::default();
    for n in first..first + count {
        let id = uuid::Uuid::from_u128(0xbe9c_0000_0000_0000_0000_0000_0000_0000 | n as u128);
        let mut product = Product::default();
        let commands = [
            ProductCommand::create_basic(
                id,
                format!("Product {n}"),
                Some("bench".into()),
                Decimal::new(1999, 2),
                "EUR",
            ),
            ProductCommand::edit_basics(Some(1), Some(format!("Product {n} v2")), None, None),
            ProductCommand::edit_basics(Some(2), None, None, Some(Decimal::new(2450, 2))),
            ProductCommand::edit_basics(Some(3), None, Some("updated".into()), None),
            ProductCommand::edit_basics(Some(4), Some(format!("Product {n} v5")), None, None),
        ];
        for command in commands {
            let sink = EventSink::default();
            product.handle(command, &(), &sink).await.map_err(|e| anyhow::anyhow!("domain refused: {e}"))?;
            for event in sink.collect().await {
                batch.push(&id.to_string(), product.version as i64, &event)?;
            }
        }
        if batch.len() >= INSERT_BATCH {
            batch.insert(pool).await?;
        }
    }
    batch.insert(pool).await
}

#[derive(Default)]
struct Batch {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
}

impl Batch {
    fn push(&mut self, id: &str, sequence: i64, event: &domain::ProductEvent) -> Result<()> {
        self.ids.push(id.to_owned());
        self.sequences.push(sequence);
        self.types.push(event.event_type());
        self.versions.push(event.event_version());
        self.payloads.push(serde_json::to_string(event)?);
        Ok(())
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    async fn insert(&mut self, pool: &PgPool) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'Product', id, seq, typ, ver, payload::json, '{}'
               FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) AS t(id, seq, typ, ver, payload)",
        )
        .bind(&self.ids)
        .bind(&self.sequences)
        .bind(&self.types)
        .bind(&self.versions)
        .bind(&self.payloads)
        .execute(pool)
        .await
        .context("inserting generated events")?;
        *self = Batch::default();
        Ok(())
    }
}

/// Rows/s of the rebuild's own read, consumed and dropped: what Postgres and the client can do.
async fn read_ceiling(pool: &PgPool) -> Result<f64> {
    let started = Instant::now();
    let mut rows = sqlx::query_as::<
        _,
        (
            uuid::Uuid,
            String,
            String,
            i64,
            String,
            String,
            sqlx::types::Json<serde_json::Value>,
            sqlx::types::Json<serde_json::Value>,
            i64,
            i64,
            chrono::DateTime<chrono::Utc>,
        ),
    >(
        "SELECT event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                global_position, transaction_id::text::bigint, recorded_at
           FROM events WHERE aggregate_type = 'Product' ORDER BY aggregate_id, sequence",
    )
    .fetch(pool);
    let mut count = 0u64;
    while rows.try_next().await?.is_some() {
        count += 1;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs the rebuild; returns its wall time and the process's peak resident set (VmHWM).
fn rebuild(database_url: &str) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut child = catalogctl(database_url)
        .args(["rebuild", "products"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::inherit())
        .spawn()
        .context("starting catalogctl rebuild")?;
    let mut peak_kib = 0u64;
    loop {
        if let Some(kib) = proc::status_kib(child.id(), "VmHWM") {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "catalogctl rebuild failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((started.elapsed().as_secs_f64(), peak_kib as f64 / 1024.0))
}

fn report(rows: &[Row]) -> Result<()> {
    let mut table = String::from(
        "| events | rebuild s | rebuild events/s | read ceiling events/s | ratio | peak RSS MiB |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        table.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.1} |\n",
            r.events,
            r.rebuild_seconds,
            r.rebuild_per_sec,
            r.read_per_sec,
            r.rebuild_per_sec / r.read_per_sec,
            r.peak_rss_mib
        ));
    }
    let (small, large) = (&rows[0], &rows[rows.len() - 1]);
    let verdict = format!(
        "Target: >= 100000 events/s at 1,000,000 events: {}. Peak memory at {}x the events: {:.2}x.",
        if large.rebuild_per_sec >= 100_000.0 { "met" } else { "not met" },
        large.events / small.events,
        large.peak_rss_mib / small.peak_rss_mib,
    );
    println!("\n{table}\n{verdict}");
    let section = format!(
        "## rebuild\n\n`cargo xtask bench rebuild`, release build, on {} cores, Postgres on the same machine.\n\
         The store holds products created and then updated four times each, generated through\n\
         `Product::handle` (so every event is one the aggregate emits). `catalogctl rebuild products`\n\
         streams them in one snapshot, folds them with the projector's code and writes the shadow table\n\
         in multi-row statements, then swaps it in; the time is the whole command, process start to\n\
         exit. The read ceiling is the same ordered query consumed by a client that does nothing with\n\
         the rows, in the same run. Peak RSS is the rebuild process's VmHWM.\n\n{table}\n{verdict}\n",
        cores(),
    );
    write_section("rebuild", &section)
}
