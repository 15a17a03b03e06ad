//! `cargo xtask bench reservations`: stock reservations through the whole system (release
//! command-api, query-api and a projector running every loop, the reservations process manager
//! included).
//!
//! - Throughput: 16 clients place reservations of 3 random products (1 unit each) for
//!   `DURATION`; the figure is reservations *held* per second, from the first request until
//!   the last one placed is held (the saga's rate, not just the API's), next to the 202s per
//!   second of the API alone.
//! - Latency: one reservation every 20 ms (50/s) for `DURATION`, each timed from its 202 until
//!   query-api shows it `held` (`?min_version=5`: placed, three items held, held).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::harness::{cores, percentile, write_section};
use crate::dev::Backends;
use crate::proc::step;
use crate::system::{Ports, Service, System};

const DURATION: Duration = Duration::from_secs(15);
const CLIENTS: usize = 16;
const PRODUCTS: usize = 30;
const RATE_PER_SEC: u64 = 50;
/// Version of a 3-item reservation once held: placed, 3 items held, held.
const HELD_VERSION: i64 = 5;
const DB_NAME: &str = "catalog_bench_reservations";
const PORTS: Ports = Ports::BENCH_RESERVATIONS;

struct Figures {
    accepted_per_sec: f64,
    held_per_sec: f64,
    placed: u64,
    drain_seconds: f64,
    latencies: Vec<f64>,
    late: u64,
}

pub async fn run(backends: &Backends) -> Result<()> {
    let mut system = System::fresh(backends, DB_NAME, PORTS).await?;
    system.start(Service::CommandApi, |c| c)?;
    system.start(Service::QueryApi, |c| c)?;
    system.start(Service::Projector, |c| c.env("PROJECTOR_ROLE", "all"))?;
    let token = system.admin_token().await?;
    let pool = PgPoolOptions::new().max_connections(4).connect(&system.url).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let products = stock_products(&client, &token).await?;

    step(format!("{CLIENTS} clients placing 3-product reservations for {DURATION:?}"));
    let started = Instant::now();
    let placed = closed_loop(&client, &token, &products).await;
    let accepted_per_sec = placed as f64 / started.elapsed().as_secs_f64();
    wait_all_held(&pool, placed, Duration::from_secs(600)).await?;
    let all_held = started.elapsed().as_secs_f64();
    let held_per_sec = placed as f64 / all_held;

    step(format!("{RATE_PER_SEC} reservations/s for {DURATION:?}, each timed from 202 to held on query-api"));
    let (mut latencies, late) = open_loop(&client, &token, &products).await;
    latencies.sort_unstable_by(f64::total_cmp);
    system.stop_all();
    pool.close().await;
    report(&Figures {
        accepted_per_sec,
        held_per_sec,
        placed,
        drain_seconds: all_held - DURATION.as_secs_f64(),
        latencies,
        late,
    })
}

/// Products with far more stock than the run can reserve, so nothing is rejected.
async fn stock_products(client: &reqwest::Client, token: &str) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for n in 0..PRODUCTS {
        let created: Value = client
            .post(format!("http://{}/api/v1/products", PORTS.command_api))
            .bearer_auth(token)
            .json(&json!({"name": format!("Bench item {n}"), "price": "9.99", "on_hand": 10_000_000}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(created["id"].as_str().context("product id")?.parse()?);
    }
    Ok(ids)
}

/// Three distinct products, by a cheap counter-based pick (no shared random state).
fn basket(products: &[Uuid], n: u64) -> Value {
    let len = products.len() as u64;
    let first = (n.wrapping_mul(2_654_435_761)) % len;
    let items: Vec<Value> =
        (0..3).map(|k| json!({"product_id": products[((first + k * 7) % len) as usize], "quantity": 1})).collect();
    json!({"items": items, "ttl_seconds": 3600})
}

async fn place(client: &reqwest::Client, token: &str, body: &Value) -> Option<String> {
    let response = client
        .post(format!("http://{}/api/v1/reservations", PORTS.command_api))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    let accepted: Value = response.json().await.ok()?;
    accepted["id"].as_str().map(str::to_owned)
}

/// Reservations accepted by `CLIENTS` clients placing back to back for `DURATION`.
async fn closed_loop(client: &reqwest::Client, token: &str, products: &[Uuid]) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, token, products) = (client.clone(), token.to_owned(), products.to_vec());
            let (stop, counter, accepted) = (stop.clone(), counter.clone(), accepted.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if place(&client, &token, &basket(&products, n)).await.is_some() {
                        accepted.fetch_add(1, Ordering::Relaxed);
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
    accepted.load(Ordering::Relaxed)
}

async fn wait_all_held(pool: &PgPool, placed: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'held'").fetch_one(pool).await?;
        if held as u64 >= placed {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {held} of {placed} reservations held after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One reservation every 1/RATE s for `DURATION`; the ms from each 202 until query-api shows
/// it held, and how many were not held within 30 s.
async fn open_loop(client: &reqwest::Client, token: &str, products: &[Uuid]) -> (Vec<f64>, u64) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let mut tasks = Vec::new();
    for n in 0..RATE_PER_SEC * DURATION.as_secs() {
        tick.tick().await;
        let (client, token, body) = (client.clone(), token.to_owned(), basket(products, 1_000_000 + n));
        tasks.push(tokio::spawn(async move {
            let id = place(&client, &token, &body).await?;
            let accepted = Instant::now();
            while accepted.elapsed() < Duration::from_secs(30) {
                let response = client
                    .get(format!("http://{}/api/v1/reservations/{id}?min_version={HELD_VERSION}", PORTS.query_api))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .ok()?;
                if response.status() == 200 {
                    let body: Value = response.json().await.ok()?;
                    if body["status"] == "held" {
                        return Some(accepted.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
            None
        }));
    }
    let mut latencies = Vec::new();
    let mut late = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some(ms) => latencies.push(ms),
            None => late += 1,
        }
    }
    (latencies, late)
}

fn report(f: &Figures) -> Result<()> {
    let table = format!(
        "| measure | value |\n|---|---|\n\
         | reservations held / s, 3-product baskets, {CLIENTS} clients | {:.0} |\n\
         | reservations accepted (202) / s by the API alone, same run | {:.0} |\n\
         | placed in {}s / drained after the clients stopped | {} / {:.1} s |\n\
         | 202 → `held` on query-api at {RATE_PER_SEC}/s: p50 / p99 ms | {:.0} / {:.0} |\n\
         | not held within 30 s at {RATE_PER_SEC}/s | {} of {} |\n",
        f.held_per_sec,
        f.accepted_per_sec,
        DURATION.as_secs(),
        f.placed,
        f.drain_seconds,
        percentile(&f.latencies, 0.50),
        percentile(&f.latencies, 0.99),
        f.late,
        f.latencies.len() as u64 + f.late,
    );
    println!("\n{table}");
    let section = format!(
        "## reservations\n\n`cargo xtask bench reservations`, release build, on {} cores shared by Postgres, the broker,\n\
         the three services and the load generator. Held per second counts from the first request until\n\
         the last reservation placed is `held` in the read model (every hold is three product commands and\n\
         three reservation commands by the process manager, each a Postgres transaction, plus the pipeline\n\
         twice: event → Kafka → process manager, and event → Kafka → read model).\n\n{table}",
        cores(),
    );
    write_section("reservations", &section)
}
