//! `cargo xtask bench write`: product creation over HTTP against a release `command-api`,
//! compared with the raw ceiling measured in the same run: the bare append transaction
//! (read the stream, insert one event row, commit) sent straight to the same Postgres at
//! the same concurrency. Results go to stdout and BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::harness::{cores, percentile, write_section};
use crate::dev::Backends;
use crate::proc::step;
use crate::system::{Ports, Service, System};

const DURATION: Duration = Duration::from_secs(10);
const CONCURRENCY: [usize; 2] = [1, 16];
const ADDR: &str = Ports::BENCH_WRITE.command_api;
const DB_NAME: &str = "catalog_bench_write";

struct Measurement {
    clients: usize,
    http_per_sec: f64,
    raw_per_sec: f64,
    http_p50_ms: f64,
    http_p99_ms: f64,
}

pub async fn run(backends: &Backends) -> Result<()> {
    let mut system = System::fresh(backends, DB_NAME, Ports::BENCH_WRITE).await?;
    system.start(Service::CommandApi, |c| c.env("DATABASE_MAX_CONNECTIONS", "20"))?;
    let token = system.admin_token().await?;
    let pool = PgPoolOptions::new().max_connections(20).connect(&system.url).await?;

    let mut results = Vec::new();
    for clients in CONCURRENCY {
        step(format!("HTTP create-product, {clients} client(s), {DURATION:?}"));
        let (http_per_sec, mut latencies) = http_load(&token, clients).await;
        latencies.sort_unstable_by(f64::total_cmp);
        step(format!("raw append transaction, {clients} client(s), {DURATION:?}"));
        let raw_per_sec = raw_load(&pool, clients).await;
        results.push(Measurement {
            clients,
            http_per_sec,
            raw_per_sec,
            http_p50_ms: percentile(&latencies, 0.50),
            http_p99_ms: percentile(&latencies, 0.99),
        });
    }
    system.stop_all();
    pool.close().await;
    report(&results)
}

/// Requests per second of successful creates, and each request's latency in ms.
async fn http_load(token: &str, clients: usize) -> (f64, Vec<f64>) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, stop, token) = (client.clone(), stop.clone(), token.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let response = client
                        .post(format!("http://{ADDR}/api/v1/products"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"name": "Bench lamp", "description": "load", "price": "19.99"}))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 201 => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(DURATION).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (latencies, failed) = worker.await.expect("worker");
        all.extend(latencies);
        failures += failed;
    }
    if failures > 0 {
        eprintln!("warning: {failures} requests did not return 201");
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Appends per second of the bare transaction postgres-es runs for a new aggregate.
async fn raw_load(pool: &PgPool, clients: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if append_once(&pool).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(DURATION).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn append_once(pool: &PgPool) -> Result<(), sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let _existing: Vec<(i64,)> = sqlx::query_as(
        "SELECT sequence FROM events WHERE aggregate_type = 'Product' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(pool)
    .await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Product', $1, 1, 'ProductCreated', '1.0.0', $2, '{}')",
    )
    .bind(&id)
    .bind(sqlx::types::Json(serde_json::json!({"ProductCreated": {"id": id, "name": "Bench lamp", "description": "load", "price": "19.99"}})))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn report(results: &[Measurement]) -> Result<()> {
    let mut table = String::from(
        "| clients | HTTP creates/s | raw appends/s | ratio | HTTP p50 ms | HTTP p99 ms |\n|---|---|---|---|---|---|\n",
    );
    for m in results {
        table.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} |\n",
            m.clients,
            m.http_per_sec,
            m.raw_per_sec,
            m.http_per_sec / m.raw_per_sec,
            m.http_p50_ms,
            m.http_p99_ms
        ));
    }
    println!("\n{table}");
    let section = format!(
        "## write\n\n`cargo xtask bench write`, release build, {}s per row, on {} cores. The raw ceiling is the\n\
         bare append transaction (read the stream, insert one event row, commit) sent straight to\n\
         the same Postgres at the same concurrency, in the same run. Target: ratio >= 0.6 at 16 clients.\n\n{table}",
        DURATION.as_secs(),
        cores(),
    );
    write_section("write", &section)
}
