//! `cargo xtask bench write`: product writes over HTTP with the whole system running
//! (release `command-api`, `query-api`, `projector --role all`, the broker, Postgres), and the
//! CPU time each process spends per command, read from `/proc/<pid>/stat` before and after
//! each load (after the projector has caught up, so its share is counted in full). Compared
//! with the raw ceiling measured in the same run: the bare append transaction (read the
//! stream, insert one event row, commit) sent straight to the same Postgres at the same
//! concurrency. Results go to stdout and BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::harness::{cores, percentile, write_section};
use super::statements;
use crate::dev::Backends;
use crate::proc::step;
use crate::system::{Ports, Service, System};

const DURATION: Duration = Duration::from_secs(10);
const CONCURRENCY: [usize; 2] = [1, 16];
/// Clients of the update load (each on products of its own, so they do not conflict).
const UPDATE_CLIENTS: usize = 16;
/// Products the update load changes, and the events each has when it starts.
const UPDATE_PRODUCTS: usize = 256;
const EVENTS_BEFORE_UPDATES: usize = 30;
const PORTS: Ports = Ports::BENCH_WRITE;
const ADDR: &str = PORTS.command_api;
const DB_NAME: &str = "catalog_bench_write";
/// The raw ceiling's own database (same schema and triggers, no services on it), so that the
/// pipeline does not fold the raw rows while the next load is measured.
const RAW_DB_NAME: &str = "catalog_bench_write_raw";
/// The processes whose CPU time is reported, in the table's order.
const CPU_GROUPS: [&str; 5] = ["command-api", "query-api", "projector", "postgres", "broker"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
}

/// The raw ceiling at `clients`: appends per second with the wake-up notification inside the
/// commit and after it.
struct Raw {
    clients: usize,
    notifying: f64,
    deferred: f64,
    /// Postgres CPU ms per append of the deferred load: what one bare append costs the server.
    postgres_cpu_ms: f64,
}

struct Load {
    write: Write,
    clients: usize,
    per_sec: f64,
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU ms per command by process group.
    cpu_ms: BTreeMap<&'static str, f64>,
    /// From the end of the load until the read model had every event.
    drain: Duration,
    /// Postgres's statements over the load and its drain (`pg_stat_statements`, when loaded).
    statements: Option<String>,
}

pub async fn run(backends: &Backends) -> Result<()> {
    let mut system = System::fresh(backends, DB_NAME, PORTS).await?;
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let topic = format!("bench-write-{run}");
    system.start(Service::CommandApi, |c| c.env("DATABASE_MAX_CONNECTIONS", "20"))?;
    system.start(Service::QueryApi, |c| c)?;
    system.start(Service::Projector, |c| {
        c.args(["--role", "all", "--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq")])
            .args(["--group", &topic])
    })?;
    let token = system.admin_token().await?;
    let pool = PgPoolOptions::new().max_connections(20).connect(&system.url).await?;
    let raw_url = crate::system::fresh_database(backends, RAW_DB_NAME).await?;
    let raw_pool = PgPoolOptions::new().max_connections(20).connect(&raw_url).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    let mut loads = Vec::new();
    let mut raw = Vec::new();
    for clients in CONCURRENCY {
        step(format!("HTTP create-product, {clients} client(s), {DURATION:?}, whole pipeline running"));
        loads.push(
            measured(&mut system, &pool, Write::Create, clients, || http_load(&client, &token, clients, None)).await?,
        );
        step(format!("raw append transaction, {clients} client(s), {DURATION:?}, publisher notified in the commit"));
        let (notifying, _) = raw_load(&raw_pool, clients, false).await;
        step(format!("raw append transaction, {clients} client(s), {DURATION:?}, publisher woken after the commit"));
        let before = system.cpu_seconds_by_group()["postgres"];
        let (deferred, appended) = raw_load(&raw_pool, clients, true).await;
        let postgres_cpu_ms = (system.cpu_seconds_by_group()["postgres"] - before) * 1000.0 / appended.max(1) as f64;
        raw.push(Raw { clients, notifying, deferred, postgres_cpu_ms });
    }
    step(format!("seeding {UPDATE_PRODUCTS} products with {EVENTS_BEFORE_UPDATES} events each"));
    let products = Arc::new(seed_products(&client, &token).await?);
    wait_projected(&pool).await?;
    step(format!("HTTP update-product, {UPDATE_CLIENTS} clients, {DURATION:?}, whole pipeline running"));
    loads.push(
        measured(&mut system, &pool, Write::Update, UPDATE_CLIENTS, || {
            http_load(&client, &token, UPDATE_CLIENTS, Some(products.clone()))
        })
        .await?,
    );
    system.ensure_running()?;
    system.stop_all();
    pool.close().await;
    raw_pool.close().await;
    report(&loads, &raw)
}

/// Runs `load` and reads every process's CPU time before it and after the projector has
/// folded everything it wrote.
async fn measured<F: std::future::Future<Output = (f64, Vec<f64>)>>(
    system: &mut System,
    pool: &PgPool,
    write: Write,
    clients: usize,
    load: impl FnOnce() -> F,
) -> Result<Load> {
    wait_projected(pool).await?;
    let profiling = statements::reset(pool).await;
    let before = system.cpu_seconds_by_group();
    let (per_sec, mut latencies) = load().await;
    let ended = Instant::now();
    wait_projected(pool).await?;
    let drain = ended.elapsed();
    let after = system.cpu_seconds_by_group();
    system.ensure_running()?;
    latencies.sort_unstable_by(f64::total_cmp);
    let count = latencies.len();
    let statements = if profiling { statements::report(pool, count, 14).await } else { None };
    let cpu_ms = CPU_GROUPS
        .iter()
        .map(|group| {
            let used = after.get(group).unwrap_or(&0.0) - before.get(group).unwrap_or(&0.0);
            (*group, used * 1000.0 / count.max(1) as f64)
        })
        .collect();
    Ok(Load {
        write,
        clients,
        per_sec,
        count,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_ms,
        drain,
        statements,
    })
}

/// Waits until the product read model holds every product event (the sum of the products'
/// versions is the number of product events).
async fn wait_projected(pool: &PgPool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (events, folded): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE aggregate_type = 'Product'),
                    (SELECT coalesce(sum(version), 0)::bigint FROM products)",
        )
        .fetch_one(pool)
        .await?;
        if events == folded {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the projector did not catch up: {folded} of {events} events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `UPDATE_PRODUCTS` products, each created and then changed until it has
/// `EVENTS_BEFORE_UPDATES` events.
async fn seed_products(client: &reqwest::Client, token: &str) -> Result<Vec<Uuid>> {
    let mut tasks = Vec::new();
    for worker in 0..UPDATE_CLIENTS {
        let (client, token) = (client.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (worker..UPDATE_PRODUCTS).step_by(UPDATE_CLIENTS) {
                let response: serde_json::Value = client
                    .post(format!("http://{ADDR}/api/v1/products"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"name": "Bench lamp", "description": "seed", "price": "19.99"}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let id: Uuid = response["id"].as_str().context("no id")?.parse()?;
                for n in 1..EVENTS_BEFORE_UPDATES {
                    client
                        .patch(format!("http://{ADDR}/api/v1/products/{id}"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"price": format!("{}.99", 20 + n)}))
                        .send()
                        .await?
                        .error_for_status()?;
                }
                ids.push(id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

/// Successful writes per second, and each one's latency in ms: creates, or (given `products`)
/// updates of those products, client `i` changing only every `clients`-th one from `i`.
async fn http_load(
    client: &reqwest::Client,
    token: &str,
    clients: usize,
    products: Option<Arc<Vec<Uuid>>>,
) -> (f64, Vec<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (client, stop, token, products) = (client.clone(), stop.clone(), token.to_owned(), products.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let (request, expected) = match &products {
                        None => (
                            client.post(format!("http://{ADDR}/api/v1/products")).json(
                                &serde_json::json!({"name": "Bench lamp", "description": "load", "price": "19.99"}),
                            ),
                            201,
                        ),
                        Some(ids) => {
                            let id = ids[(worker + n * clients) % ids.len()];
                            (
                                client
                                    .patch(format!("http://{ADDR}/api/v1/products/{id}"))
                                    .json(&serde_json::json!({"price": format!("{}.50", n % 1000 + 1)})),
                                200,
                            )
                        }
                    };
                    n += 1;
                    match request.bearer_auth(&token).send().await {
                        Ok(r) if r.status() == expected => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
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
        eprintln!("warning: {failures} requests did not succeed");
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Appends per second of the bare transaction for a new aggregate: read its stream, insert its
/// first event, commit. With `deferred_wakeup` the insert tells the `events` trigger not to
/// notify the publisher inside the transaction (as the command bus does, which wakes it after
/// the commit); without, the notification is part of every commit. Also returns the count.
async fn raw_load(pool: &PgPool, clients: usize, deferred_wakeup: bool) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if append_once(&pool, deferred_wakeup).await.is_ok() {
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
    let done = done.load(Ordering::Relaxed);
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

async fn append_once(pool: &PgPool, deferred_wakeup: bool) -> Result<(), sqlx::Error> {
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
         SELECT 'Product', $1, 1, 'ProductCreated', '1.0.0', $2, '{}'
          WHERE $3 IS NULL OR set_config('catalog.append_wakeup', $3, true) IS NOT NULL",
    )
    .bind(&id)
    .bind(sqlx::types::Json(serde_json::json!({"ProductCreated": {"id": id, "name": "Bench lamp", "description": "load", "price": "19.99"}})))
    .bind(deferred_wakeup.then_some("deferred"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn report(loads: &[Load], raw: &[Raw]) -> Result<()> {
    let mut throughput = String::from(
        "| write | clients | HTTP writes/s | raw appends/s, notify in commit | raw appends/s, wake-up after commit | ratio | HTTP p50 ms | HTTP p99 ms | drain after load |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut cpu = format!(
        "| write | clients | {} | total |\n|---|---|{}---|\n",
        CPU_GROUPS.join(" | "),
        "---|".repeat(CPU_GROUPS.len())
    );
    let mut profiles = String::new();
    for load in loads {
        let name = match load.write {
            Write::Create => "create",
            Write::Update => "update (30 events)",
        };
        let raw = raw.iter().find(|r| r.clients == load.clients && load.write == Write::Create);
        throughput.push_str(&format!(
            "| {name} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} s |\n",
            load.clients,
            load.per_sec,
            raw.map_or("-".into(), |r| format!("{:.0}", r.notifying)),
            raw.map_or("-".into(), |r| format!("{:.0}", r.deferred)),
            // Against the higher of the two ceilings.
            raw.map_or("-".into(), |r| format!("{:.2}", load.per_sec / r.notifying.max(r.deferred))),
            load.p50_ms,
            load.p99_ms,
            load.drain.as_secs_f64(),
        ));
        if let Some(table) = &load.statements {
            profiles.push_str(&format!(
                "\nPostgres statements, {name} at {} client(s), over the load and its drain \
                 (`pg_stat_statements`, every database):\n\n{table}",
                load.clients
            ));
        }
        let total: f64 = load.cpu_ms.values().sum();
        let cells: Vec<String> = CPU_GROUPS.iter().map(|g| format!("{:.3}", load.cpu_ms[g])).collect();
        cpu.push_str(&format!("| {name} | {} | {} | **{total:.3}** |\n", load.clients, cells.join(" | ")));
        step(format!("{name}, {} clients: {} writes", load.clients, load.count));
    }
    let raw_cpu: Vec<String> =
        raw.iter().map(|r| format!("{:.3} ms at {} client(s)", r.postgres_cpu_ms, r.clients)).collect();
    let raw_cpu = format!(
        "Postgres CPU per bare append (the raw ceiling's transaction, wake-up after the commit): {}.\n",
        raw_cpu.join(", ")
    );
    if profiles.is_empty() {
        profiles = "\n(No statement profile: `scripts/pg-statements.sh enable` loads pg_stat_statements.)\n".into();
    }
    println!("\n{throughput}\nCPU ms per command:\n\n{cpu}\n{raw_cpu}{profiles}");
    let section = format!(
        "## write\n\n`cargo xtask bench write`, release builds, {}s per row, on {} cores, with the whole system\n\
         running: command-api, query-api, `projector --role all`, the broker and Postgres. The raw\n\
         ceiling is the bare append transaction (read the stream, insert one event row, commit) sent\n\
         straight to the same Postgres (a twin database with no services on it) at the same\n\
         concurrency, in the same run: once with the publisher's notification inside the commit (as\n\
         every append was before migration 13) and once with the publisher woken after it (as the\n\
         command bus does now); the ratio is against the higher. CPU time per command is read from\n\
         `/proc/<pid>/stat` before each load and after the projector has folded all it wrote; `postgres`\n\
         is every postgres process on the machine (a shared server: other users' queries count too).\n\
         Updates change products that had {EVENTS_BEFORE_UPDATES} events when the load began. Targets: total\n\
         CPU <= 0.7 ms per create and <= 0.8 ms per update; creates/s at 16 clients >= 0.8 x raw.\n\n\
         {throughput}\nCPU ms per command:\n\n{cpu}\n{raw_cpu}{profiles}",
        DURATION.as_secs(),
        cores(),
    );
    write_section("write", &section)
}
