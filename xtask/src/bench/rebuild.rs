//! `cargo xtask bench rebuild`: `catalogctl rebuild products` (release) on a store of
//! 1,000,000 product events generated through the domain (`Product::handle`, so every event is
//! one the aggregate would have emitted), inserted with multi-row statements.
//!
//! Measured: events/s of the rebuild, against the same run's read ceiling (the same ordered
//! stream of event rows read by a client that does nothing with them), and the rebuild
//! process's peak resident memory at 250,000 and at 1,000,000 events: a streaming rebuild holds
//! one aggregate and one write batch, so the peak should not grow with the store.
//!
//! Then the swap under load: the 1,000,000-event rebuild again while readers issue 300 reads/s
//! of product rows (each read started on schedule, so a stall cannot hide later reads) and a
//! writer appends events that the rebuild must catch up, at two rates. Measured: the longest
//! read, the p99 of all reads and of the reads in the swap's second, what the catch-up did (from
//! catalogctl's summary line), and the peak memory against the rebuild without writes: the
//! catch-up re-folds a page of aggregates at a time, so it should not grow with what arrived.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// Reads per second during the rebuild under load.
const READS_PER_SEC: u64 = 300;
/// Events the writer appends per half second during the two rebuilds under load.
const WRITE_RATES: [usize; 2] = [1_000, 5_000];

struct UnderLoad {
    writes_per_sec: usize,
    reads: usize,
    longest_read_ms: f64,
    p99_ms: f64,
    swap_reads: usize,
    swap_p99_ms: f64,
    swap_longest_ms: f64,
    arrived: i64,
    peak_rss_mib: f64,
    summary: String,
}

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
        let (rebuild_seconds, peak_rss_mib, _) = rebuild(&url)?;
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
    let mut under_load = Vec::new();
    let mut next_product = 1_000_000;
    for per_half_second in WRITE_RATES {
        step(format!(
            "catalogctl rebuild products over {stored} events under {READS_PER_SEC} reads/s and ~{} writes/s",
            per_half_second * 2
        ));
        let products = stored / EVENTS_PER_PRODUCT;
        under_load.push(rebuild_under_load(&url, &pool, products, next_product, per_half_second).await?);
        next_product += 1_000_000;
    }
    pool.close().await;
    report(&rows, &under_load)
}

/// The 1,000,000-event rebuild with readers and a writer running; see the module doc.
async fn rebuild_under_load(
    url: &str,
    pool: &PgPool,
    products: usize,
    first_new_product: usize,
    per_half_second: usize,
) -> Result<UnderLoad> {
    let readers = PgPoolOptions::new().max_connections(48).connect(url).await?;
    let head_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // (started at, latency) of each read, seconds since t0.
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let reader = {
        let (stop, samples, readers) = (stop.clone(), samples.clone(), readers.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / READS_PER_SEC));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n: u128 = 0;
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let id =
                    uuid::Uuid::from_u128(0xbe9c_0000_0000_0000_0000_0000_0000_0000 | (n * 7919 % products as u128));
                let (samples, readers) = (samples.clone(), readers.clone());
                tasks.spawn(async move {
                    let started = Instant::now();
                    let read: Result<Option<String>, sqlx::Error> =
                        sqlx::query_scalar("SELECT name FROM products WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&readers)
                            .await;
                    let latency = started.elapsed().as_secs_f64();
                    read.map(|_| samples.lock().unwrap().push((started.duration_since(t0).as_secs_f64(), latency)))
                });
                while let Some(done) = tasks.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
    };
    let writer = {
        let (stop, pool) = (stop.clone(), pool.clone());
        tokio::spawn(async move {
            let mut next = first_new_product;
            let per_round = per_half_second / EVENTS_PER_PRODUCT;
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                generate(&pool, next, per_round).await?;
                next += per_round;
                tokio::time::sleep(Duration::from_millis(500).saturating_sub(round.elapsed())).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // readers and writer at pace first
    let url = url.to_owned();
    let rebuilt = tokio::task::spawn_blocking(move || rebuild(&url)).await?;
    let ended = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await??;
    writer.await??;
    let (_, peak_rss_mib, summary) = rebuilt?;
    let head_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let all: Vec<f64> = samples.iter().map(|(_, latency)| *latency).collect();
    // The swap is the rebuild's last moment: the reads started in its last second.
    let swap: Vec<f64> = samples.iter().filter(|(at, _)| *at >= ended - 1.0 && *at <= ended).map(|(_, l)| *l).collect();
    Ok(UnderLoad {
        reads: all.len(),
        longest_read_ms: all.iter().copied().fold(0.0, f64::max) * 1000.0,
        p99_ms: percentile(&all, 0.99) * 1000.0,
        swap_reads: swap.len(),
        swap_p99_ms: percentile(&swap, 0.99) * 1000.0,
        swap_longest_ms: swap.iter().copied().fold(0.0, f64::max) * 1000.0,
        arrived: head_after - head_before,
        peak_rss_mib,
        writes_per_sec: per_half_second * 2,
        // catalogctl's summary line (its log lines go to the same stream).
        summary: summary.lines().filter(|l| l.starts_with("products:")).collect::<Vec<_>>().join(" "),
    })
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
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

/// Runs the rebuild; returns its wall time, the process's peak resident set (VmHWM) and its
/// summary (stdout).
fn rebuild(database_url: &str) -> Result<(f64, f64, String)> {
    let started = Instant::now();
    let mut child = catalogctl(database_url)
        .args(["rebuild", "products"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
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
    let elapsed = started.elapsed().as_secs_f64();
    let mut summary = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut summary)?;
    }
    print!("{summary}");
    Ok((elapsed, peak_kib as f64 / 1024.0, summary))
}

fn report(rows: &[Row], load: &[UnderLoad]) -> Result<()> {
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
    let large_peak = large.peak_rss_mib;
    let mut swap = String::from(
        "| writes/s | reads | longest read ms | p99 ms | reads in the swap's second | their p99 ms | their longest ms | events arrived | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for l in load {
        swap.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.1} |\n",
            l.writes_per_sec,
            l.reads,
            l.longest_read_ms,
            l.p99_ms,
            l.swap_reads,
            l.swap_p99_ms,
            l.swap_longest_ms,
            l.arrived,
            l.peak_rss_mib
        ));
    }
    for l in load {
        swap.push_str(&format!("\ncatalogctl at {} writes/s: `{}`\n", l.writes_per_sec, l.summary));
    }
    let (few, many) = (&load[0], &load[load.len() - 1]);
    let longest = load.iter().map(|l| l.longest_read_ms).fold(0.0, f64::max);
    swap.push_str(&format!(
        "\nTarget: no read waits longer than 100 ms: {}. Peak memory with {} events arriving during the \
         rebuild against {}: {:.2}x (against none: {:.2}x).",
        if longest <= 100.0 { "met" } else { "not met" },
        many.arrived,
        few.arrived,
        many.peak_rss_mib / few.peak_rss_mib,
        many.peak_rss_mib / large_peak,
    ));
    println!("\n{table}\n{verdict}\n\n{swap}");
    let section = format!(
        "## rebuild\n\n`cargo xtask bench rebuild`, release build, on {} cores, Postgres on the same machine.\n\
         The store holds products created and then updated four times each, generated through\n\
         `Product::handle` (so every event is one the aggregate emits). `catalogctl rebuild products`\n\
         streams them in one snapshot, folds them with the projector's code and writes the shadow table\n\
         in multi-row statements, then swaps it in; the time is the whole command, process start to\n\
         exit. The read ceiling is the same ordered query consumed by a client that does nothing with\n\
         the rows, in the same run. Peak RSS is the rebuild process's VmHWM.\n\n{table}\n{verdict}\n\n\
         ### The swap under load\n\n\
         The 1,000,000-event rebuild again, while {READS_PER_SEC} reads/s of product rows (`SELECT ... WHERE id = $1`\n\
         on a pool of 48 connections, each read started on schedule) and a writer appending\n\
         events of new products (two rates) run. The rebuild catches up on what arrived in bounded batches before it\n\
         locks anything, then swaps with a 50 ms `lock_timeout` on the live table. Latency is each\n\
         read's own, pool wait included; the swap is the rebuild's last second.\n\n{swap}\n",
        cores(),
    );
    write_section("rebuild", &section)
}
