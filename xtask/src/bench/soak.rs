//! `cargo xtask bench soak`: the whole system (release command-api, query-api and
//! `projector --role all`) under a steady mixed load for `SOAK_SECONDS` (default 600 s).
//!
//! A steady state, so that a drift is the services' and not a bigger data set's: the catalog is
//! seeded with [`SEED_PRODUCTS`] products, and then every product created is matched by the
//! deletion of the oldest one, so the live catalog (and with it the read models, the cache and
//! a list page's count) keeps its size while the event store grows by every change, as it does
//! in production. Load, each request in its own task at a fixed rate: creations, deletions,
//! partial updates, cached reads of single products and list pages. Every [`WINDOW`] the
//! benchmark records each service's resident memory (VmRSS from /proc) and the latency
//! percentiles of the requests sent in that window, of all and of each kind. Reported: RSS at
//! the end of the first window and at the end, and the percentiles of the first and the last
//! window; flat memory and no p99 drift are what the figures should show. Answers other than
//! 2xx are counted as errors.
//!
//! The Postgres this runs against may have autovacuum switched off (the development machine's
//! does), and then the read models' dead rows pile up and latency drifts for reasons no
//! production server shares. The soak therefore runs `VACUUM (ANALYZE)` on its database once a
//! window, mid-window, as autovacuum with its default one-minute naptime would.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::harness::{percentile, write_section};
use crate::dev::Backends;
use crate::proc::{self, step};
use crate::system::{Ports, Service, System};

const DB_NAME: &str = "catalog_bench_soak";
const COMMAND_ADDR: &str = Ports::BENCH_SOAK.command_api;
const QUERY_ADDR: &str = Ports::BENCH_SOAK.query_api;
const WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_SECONDS: u64 = 600;
/// Live products throughout the soak.
const SEED_PRODUCTS: usize = 1_000;
/// Products at the old end of the catalog that updates and reads leave alone: the next ones to
/// be deleted, so no request races a deletion (one leaves this range every half second).
const RETIRING: usize = 50;
/// Products at the new end that reads and updates leave alone: created in the last 10 s, so
/// possibly not projected yet. Every other read must find its product.
const FRESH: usize = 20;
/// Requests per second by kind: writes are a tenth of the traffic, as on a catalog, and most
/// of them update existing products.
const CREATES_PER_SEC: u64 = 2;
const DELETES_PER_SEC: u64 = CREATES_PER_SEC;
const UPDATES_PER_SEC: u64 = 36;
const PRODUCT_READS_PER_SEC: u64 = 300;
const LIST_READS_PER_SEC: u64 = 60;

const KINDS: [&str; 5] = ["create", "delete", "update", "read", "list"];
const RATES: [u64; 5] = [CREATES_PER_SEC, DELETES_PER_SEC, UPDATES_PER_SEC, PRODUCT_READS_PER_SEC, LIST_READS_PER_SEC];

#[derive(Default)]
struct Window {
    /// Latencies by request kind.
    latencies_ms: BTreeMap<&'static str, Vec<f64>>,
    errors: u64,
}

struct Sample {
    at_seconds: f64,
    rss_mib: BTreeMap<&'static str, f64>,
    /// CPU seconds used since the start, by process group (see [`CPU_GROUPS`]).
    cpu_seconds: BTreeMap<&'static str, f64>,
    requests: usize,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// p99 by request kind: the p99 of all requests says little by itself, because the
    /// slowest percent of a mix that is one tenth writes is mostly writes.
    p99_by_kind_ms: BTreeMap<&'static str, f64>,
}

pub async fn run(backends: &Backends) -> Result<()> {
    let seconds = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECONDS);
    let duration = Duration::from_secs(seconds);
    step(format!("soak: fresh database {DB_NAME}, services, {} s of mixed load", duration.as_secs()));
    let mut system = System::fresh(backends, DB_NAME, Ports::BENCH_SOAK).await?;
    let topic = format!("bench.soak.{}.events", std::process::id());
    system.start(Service::CommandApi, |c| c)?;
    system.start(Service::QueryApi, |c| c)?;
    system.start(Service::Projector, |c| {
        c.args(["--role", "all", "--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq")])
            .args(["--group", &format!("bench-soak-{}", std::process::id())])
    })?;
    let token = system.admin_token().await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(15)).build()?;
    step(format!("soak: seeding {SEED_PRODUCTS} products"));
    let products: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(seed(&client, &token).await?));
    let window: Arc<Mutex<Window>> = Arc::default();

    let cpu_at_start = cpu_seconds_by_group(&system);
    let started = Instant::now();
    let deadline = started + duration;
    let vacuum = tokio::spawn(vacuum_every_window(system.url.clone(), started));
    let mut generators = Vec::new();
    for (kind, rate) in KINDS.into_iter().zip(RATES) {
        let (client, token, products, window) = (client.clone(), token.clone(), products.clone(), window.clone());
        generators.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                n += 1;
                let (client, token, products, window) =
                    (client.clone(), token.clone(), products.clone(), window.clone());
                tokio::spawn(async move { one_request(kind, n, &client, &token, &products, &window).await });
            }
        }));
    }

    let mut samples = Vec::new();
    let mut next = started + WINDOW;
    while next <= deadline + Duration::from_millis(1) {
        tokio::time::sleep_until(next.into()).await;
        system.ensure_running()?;
        let mut done = std::mem::take(&mut *window.lock().expect("window"));
        let mut all: Vec<f64> = done.latencies_ms.values().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        let p99_by_kind_ms = done
            .latencies_ms
            .iter_mut()
            .map(|(kind, latencies)| {
                latencies.sort_by(f64::total_cmp);
                (*kind, percentile(latencies, 0.99))
            })
            .collect();
        let rss_mib = system.pids().map(|(name, pid)| (name, rss_mib(pid))).collect();
        let cpu_seconds = cpu_seconds_by_group(&system);
        let sample = Sample {
            at_seconds: started.elapsed().as_secs_f64(),
            rss_mib,
            cpu_seconds,
            requests: all.len(),
            errors: done.errors,
            p50_ms: percentile(&all, 0.5),
            p99_ms: percentile(&all, 0.99),
            p99_by_kind_ms,
        };
        step(format!(
            "{:>4.0} s: {} requests, {} errors, p50 {:.1} ms, p99 {:.1} ms, p99 by kind {:.1?}, RSS {:.1?}",
            sample.at_seconds,
            sample.requests,
            sample.errors,
            sample.p50_ms,
            sample.p99_ms,
            sample.p99_by_kind_ms,
            sample.rss_mib
        ));
        samples.push(sample);
        next += WINDOW;
    }
    for generator in generators {
        let _ = generator.await;
    }
    vacuum.abort();
    system.stop_all();
    ensure!(samples.len() >= 2, "the soak needs at least two windows of {WINDOW:?}");
    write_section("soak", &report(&samples, duration, &cpu_at_start))
}

/// What autovacuum would do on a default server: vacuum and analyze each table about once a
/// minute. Runs until aborted; a failure is reported and retried next time.
async fn vacuum_every_window(database_url: String, started: Instant) {
    let pool = match sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy(&database_url) {
        Ok(pool) => pool,
        Err(error) => return step(format!("soak: no VACUUM, bad database URL: {error}")),
    };
    let mut tick = tokio::time::interval_at((started + WINDOW / 2).into(), WINDOW);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::raw_sql("VACUUM (ANALYZE)").execute(&pool).await {
            step(format!("soak: VACUUM failed: {error}"));
        }
    }
}

/// Creates the seed catalog, 16 requests at a time, and waits until query-api serves all of it;
/// the ids, oldest first.
async fn seed(client: &reqwest::Client, token: &str) -> Result<VecDeque<String>> {
    use futures::StreamExt;
    let created: Vec<Result<String>> = futures::stream::iter(0..SEED_PRODUCTS)
        .map(|n| async move {
            let response = create(client, token, &format!("Seed {n}")).send().await?.error_for_status()?;
            let body: serde_json::Value = response.json().await?;
            body["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no id in {body}"))
        })
        .buffered(16)
        .collect()
        .await;
    let ids: VecDeque<String> = created.into_iter().collect::<Result<_>>()?;
    // The load starts once the seed is readable, so every read until the end must find its product.
    let waits: Vec<Result<()>> = futures::stream::iter(ids.iter())
        .map(|id| async move {
            let url = format!("http://{QUERY_ADDR}/api/v1/products/{id}");
            for _ in 0..600 {
                if client.get(&url).send().await?.status().is_success() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("product {id} was not projected within a minute")
        })
        .buffered(16)
        .collect()
        .await;
    waits.into_iter().collect::<Result<()>>()?;
    Ok(ids)
}

fn create(client: &reqwest::Client, token: &str, name: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("http://{COMMAND_ADDR}/api/v1/products"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": name, "price": "10.00"}))
}

async fn one_request(
    kind: &'static str,
    n: u64,
    client: &reqwest::Client,
    token: &str,
    products: &Mutex<VecDeque<String>>,
    window: &Mutex<Window>,
) {
    // Any product but the next ones to be deleted and the newest.
    let pick = || {
        let products = products.lock().expect("products");
        let choices = products.len().saturating_sub(RETIRING + FRESH);
        (choices > 0).then(|| products[RETIRING + (n as usize * 7919) % choices].clone())
    };
    let sent = Instant::now();
    let result = match kind {
        "create" => create(client, token, &format!("Soak {n}")).send().await,
        "delete" => {
            let Some(id) = products.lock().expect("products").pop_front() else { return };
            client.delete(format!("http://{COMMAND_ADDR}/api/v1/products/{id}")).bearer_auth(token).send().await
        }
        "update" => {
            let Some(id) = pick() else { return };
            client
                .patch(format!("http://{COMMAND_ADDR}/api/v1/products/{id}"))
                .bearer_auth(token)
                .json(&serde_json::json!({"price": format!("{}.{:02}", 10 + n % 90, n % 100)}))
                .send()
                .await
        }
        "read" => {
            let Some(id) = pick() else { return };
            client.get(format!("http://{QUERY_ADDR}/api/v1/products/{id}")).send().await
        }
        _ => client.get(format!("http://{QUERY_ADDR}/api/v1/products?limit=20&offset={}", n % 200)).send().await,
    };
    let elapsed_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let ok = match result {
        Ok(response) if response.status().is_success() => {
            if kind == "create" {
                if let Ok(body) = response.json::<serde_json::Value>().await {
                    if let Some(id) = body["id"].as_str() {
                        products.lock().expect("products").push_back(id.to_owned());
                    }
                }
            }
            true
        }
        Ok(_) => false,
        Err(_) => false,
    };
    let mut window = window.lock().expect("window");
    window.latencies_ms.entry(kind).or_default().push(elapsed_ms);
    if !ok {
        window.errors += 1;
    }
}

/// The processes whose CPU time the soak reports: the three services, the Postgres server (all
/// its processes) and the broker (found by name; all load the same two cores) and the load
/// generator itself. A drift in latency with flat CPU per window in a service points elsewhere.
const CPU_GROUPS: [&str; 6] = ["command-api", "query-api", "projector", "postgres", "broker", "load generator"];

fn cpu_seconds_by_group(system: &System) -> BTreeMap<&'static str, f64> {
    let mut groups = system.cpu_seconds_by_group();
    groups.insert("load generator", proc::cpu_seconds(std::process::id()));
    groups
}

/// Resident memory of process `pid` in MiB (VmRSS), NaN if it cannot be read.
fn rss_mib(pid: u32) -> f64 {
    proc::status_kib(pid, "VmRSS").map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

fn report(samples: &[Sample], duration: Duration, cpu_at_start: &BTreeMap<&'static str, f64>) -> String {
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let total: usize = samples.iter().map(|s| s.requests).sum();
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let mut text = format!(
        "## soak\n\n`cargo xtask bench soak`, release builds, {} s (`SOAK_SECONDS`), command-api, query-api and \
         `projector --role all` on one database and topic, on the same 2 cores as the load generator. A catalog of \
         {SEED_PRODUCTS} live products throughout (seeded first; each creation is matched by the deletion of the oldest \
         product), under a steady load, each request in its own task: {CREATES_PER_SEC} creations/s, \
         {DELETES_PER_SEC} deletions/s and {UPDATES_PER_SEC} partial updates/s (command-api), {PRODUCT_READS_PER_SEC} product reads/s and {LIST_READS_PER_SEC} list pages/s (query-api). \
         {total} requests, {errors} answers other than 2xx. Windows of {} s; the first is the baseline of the last.\n\n",
        duration.as_secs(),
        WINDOW.as_secs()
    );
    text.push_str(
        "| service | RSS after the first window MiB | RSS at the end MiB | end / first |\n|---|---|---|---|\n",
    );
    for (name, start) in &first.rss_mib {
        let end = last.rss_mib.get(name).copied().unwrap_or(f64::NAN);
        text.push_str(&format!("| {name} | {start:.1} | {end:.1} | {:.2} |\n", end / start));
    }
    text.push_str(&format!(
        "\n| latency, all requests | first window | last window | last / first |\n|---|---|---|---|\n\
         | p50 ms | {:.2} | {:.2} | {:.2} |\n| p99 ms | {:.2} | {:.2} | {:.2} |\n",
        first.p50_ms,
        last.p50_ms,
        last.p50_ms / first.p50_ms,
        first.p99_ms,
        last.p99_ms,
        last.p99_ms / first.p99_ms
    ));
    for kind in KINDS {
        let p99 = |sample: &Sample| sample.p99_by_kind_ms.get(kind).copied().unwrap_or(f64::NAN);
        let (start, end) = (p99(first), p99(last));
        text.push_str(&format!("| p99 ms, {kind} | {start:.2} | {end:.2} | {:.2} |\n", end / start));
    }
    text.push_str(
        "\nEvery window (p99 by kind: create / delete / update / read / list):\n\n| at s | requests | errors | p50 ms | p99 ms \
         | p99 by kind ms | command-api MiB | query-api MiB | projector MiB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in samples {
        let rss = |name: &str| s.rss_mib.get(name).copied().unwrap_or(f64::NAN);
        let by_kind: Vec<String> = KINDS
            .iter()
            .map(|kind| format!("{:.1}", s.p99_by_kind_ms.get(kind).copied().unwrap_or(f64::NAN)))
            .collect();
        text.push_str(&format!(
            "| {:.0} | {} | {} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.1} |\n",
            s.at_seconds,
            s.requests,
            s.errors,
            s.p50_ms,
            s.p99_ms,
            by_kind.join(" / "),
            rss("command-api"),
            rss("query-api"),
            rss("projector")
        ));
    }
    text.push_str(&format!(
        "\nCPU seconds used in each window of {} s (2 cores: {} available):\n\n| at s | {} |\n|---|{}\n",
        WINDOW.as_secs(),
        WINDOW.as_secs() * 2,
        CPU_GROUPS.join(" | "),
        "---|".repeat(CPU_GROUPS.len())
    ));
    let mut previous = cpu_at_start;
    for s in samples {
        let used: Vec<String> = CPU_GROUPS
            .iter()
            .map(|group| {
                let used = s.cpu_seconds.get(group).copied().unwrap_or(f64::NAN)
                    - previous.get(group).copied().unwrap_or(f64::NAN);
                format!("{used:.1}")
            })
            .collect();
        text.push_str(&format!("| {:.0} | {} |\n", s.at_seconds, used.join(" | ")));
        previous = &s.cpu_seconds;
    }
    text
}
