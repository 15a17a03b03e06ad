//! `cargo xtask bench write`: product creation over HTTP against a release `command-api`,
//! compared with the raw ceiling measured in the same run: the bare append transaction
//! (read the stream, insert one event row, commit) sent straight to the same Postgres at
//! the same concurrency. Results go to stdout and BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::postgres::DbUrl;
use crate::proc::{step, wait_until};
use crate::workspace::{root, target_dir};
use crate::Backends;

const DURATION: Duration = Duration::from_secs(10);
const CONCURRENCY: [usize; 2] = [1, 16];
const ADDR: &str = "127.0.0.1:18080";
const DB_NAME: &str = "catalog_bench_write";
const SECRET: &str = "bench-secret-bench-secret-bench-secret";

struct Measurement {
    clients: usize,
    http_per_sec: f64,
    raw_per_sec: f64,
    http_p50_ms: f64,
    http_p99_ms: f64,
}

pub fn run(backends: &Backends) -> Result<()> {
    let base = DbUrl::parse(&backends.database_url)?;
    let maintenance = base.with_database("postgres");
    let bench_url = base.with_database(DB_NAME);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        recreate_database(&maintenance).await?;
        let release = target_dir().join("release");
        let status = Command::new(release.join("catalogctl"))
            .args(["--database-url", &bench_url, "migrate"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "catalogctl migrate failed");
        let mut server = ServerGuard(start_server(&release, &bench_url)?);
        wait_until("command-api to listen", Duration::from_secs(20), || crate::proc::tcp_reachable(ADDR))?;
        create_admin(&release, &bench_url)?;
        let token = login().await?;
        let pool = PgPoolOptions::new().max_connections(20).connect(&bench_url).await?;

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
        server.stop();
        pool.close().await;
        report(&results)
    })
}

async fn recreate_database(maintenance_url: &str) -> Result<()> {
    let pool = PgPoolOptions::new().max_connections(1).connect(maintenance_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")).execute(&pool).await?;
    sqlx::query(&format!("CREATE DATABASE {DB_NAME}")).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

fn start_server(release: &std::path::Path, database_url: &str) -> Result<Child> {
    Command::new(release.join("command-api"))
        .env("COMMAND_API_ADDR", ADDR)
        .env("DATABASE_URL", database_url)
        .env("DATABASE_MAX_CONNECTIONS", "20")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting command-api")
}

/// Stops the server however the benchmark ends.
struct ServerGuard(Child);

impl ServerGuard {
    fn stop(&mut self) {
        let _ = crate::proc::send_signal(i64::from(self.0.id()), "TERM");
        let _ = self.0.wait();
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn create_admin(release: &std::path::Path, database_url: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(release.join("catalogctl"))
        .args(["--database-url", database_url, "user", "create", "--username", "bench", "--email", "bench@example.com"])
        .args(["--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(b"bench-password\n")?;
    anyhow::ensure!(child.wait()?.success(), "catalogctl user create failed");
    Ok(())
}

async fn login() -> Result<String> {
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{ADDR}/api/v1/auth/token"))
        .json(&serde_json::json!({"username": "bench", "password": "bench-password"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(response["access_token"].as_str().context("no token")?.to_owned())
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
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
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    write_section(&section)
}

/// Replaces (or appends) the `## write` section of BENCHMARKS.md.
fn write_section(section: &str) -> Result<()> {
    let path = root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let mut kept = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if line.starts_with("## ") {
            skipping = line == "## write";
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let updated = format!("{}\n{section}", kept.trim_end());
    std::fs::write(&path, updated)?;
    step(format!("results written to {}", path.display()));
    Ok(())
}
