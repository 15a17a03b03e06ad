//! The read side: each listing over HTTP and as the same read-model calls straight to Postgres,
//! the cached read by id, and the plan of the slowest listing's slowest statement.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use domain::ProductStatus;
use read_model::search::{self, FacetRequest, Filter, Limits, Sort, Start};
use sqlx::{PgConnection, PgPool};

use super::{data, CLIENTS};
use crate::bench::harness::percentile;
use crate::proc::step;
use crate::system::Ports;

/// The search word: a product noun, in about one product in twenty.
pub const WORD: &str = "lamp";
/// The brand the search filters on (an index into [`data::BRANDS`]).
pub const BRAND: usize = 2;
const WARM_UP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Row {
    pub name: &'static str,
    pub target_p99_ms: f64,
    /// query-api as configured by default (its listing cache on).
    pub http: Stats,
    /// query-api with its listing cache off (`LIST_CACHE_MIB=0`): every request reads the
    /// read model.
    pub uncached: Stats,
    pub sql: Stats,
}

pub struct Results {
    pub rows: Vec<Row>,
    pub by_id: Stats,
    /// Markdown: the top nodes of the slowest statement's plan.
    pub explain: String,
}

#[derive(Clone, Copy)]
struct Listing {
    name: &'static str,
    target_p99_ms: f64,
    query: &'static str,
    text: bool,
    brand_filter: bool,
    sort: Sort,
    facets: bool,
}

fn listings() -> [Listing; 3] {
    [
        Listing {
            name: "plain page",
            target_p99_ms: 10.0,
            query: "limit=20",
            text: false,
            brand_filter: false,
            sort: Sort::Created,
            facets: false,
        },
        Listing {
            name: "search + filter + sort",
            target_p99_ms: 25.0,
            query: "SEARCH",
            text: true,
            brand_filter: true,
            sort: Sort::Price,
            facets: false,
        },
        Listing {
            name: "faceted search",
            target_p99_ms: 60.0,
            query: "FACETED",
            text: true,
            brand_filter: false,
            sort: Sort::Relevance,
            facets: true,
        },
    ]
}

impl Listing {
    fn url(&self, ports: Ports) -> String {
        let brand = data::BRANDS[BRAND].replace(' ', "+");
        let query = match self.query {
            "SEARCH" => format!("limit=20&q={WORD}&attr.brand={brand}&sort=price"),
            "FACETED" => format!("limit=20&q={WORD}&facets=category,brand"),
            plain => plain.to_owned(),
        };
        format!("http://{}/api/v1/products?{query}", ports.query_api)
    }
}

/// Each listing over HTTP against a query-api started with `LIST_CACHE_MIB=0`, in
/// [`listings`] order.
pub async fn uncached(ports: Ports, duration: Duration) -> Result<Vec<Stats>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let mut rows = Vec::new();
    for listing in listings() {
        step(format!("catalog: HTTP {} without the listing cache, {CLIENTS} clients, {duration:?}", listing.name));
        rows.push(http_listing(&client, listing, ports, duration).await?);
    }
    Ok(rows)
}

/// `listing` over HTTP: checked once, warmed up, then measured for `duration`.
async fn http_listing(client: &reqwest::Client, listing: Listing, ports: Ports, duration: Duration) -> Result<Stats> {
    let url = listing.url(ports);
    let check = client.get(&url).send().await?.error_for_status()?.json::<serde_json::Value>().await?;
    anyhow::ensure!(
        check["items"].as_array().is_some_and(|items| items.len() == 20),
        "{url} did not answer a full page: {check}"
    );
    http_load(client, vec![url.clone()], WARM_UP).await;
    Ok(http_load(client, vec![url], duration).await)
}

/// Each listing over HTTP (query-api as started: its listing cache on) and as SQL, the cached
/// read by id, and the slowest listing's plan; `uncached` are the listings' HTTP figures
/// without the listing cache ([`uncached`]).
pub async fn run(
    pool: &PgPool,
    ports: Ports,
    leaves: &[usize],
    products: usize,
    duration: Duration,
    uncached: Vec<Stats>,
) -> Result<Results> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let mut rows = Vec::new();
    for (listing, uncached) in listings().into_iter().zip(uncached) {
        step(format!("catalog: HTTP {}, {CLIENTS} clients, {duration:?}", listing.name));
        let http = http_listing(&client, listing, ports, duration).await?;
        step(format!("catalog: SQL {}, {CLIENTS} clients, {duration:?}", listing.name));
        sql_load(pool, listing, WARM_UP).await;
        let sql = sql_load(pool, listing, duration).await;
        step(format!(
            "catalog: {}: HTTP {:.0}/s p99 {:.2} ms; SQL {:.0}/s p99 {:.2} ms",
            listing.name, http.per_sec, http.p99_ms, sql.per_sec, sql.p99_ms
        ));
        rows.push(Row { name: listing.name, target_p99_ms: listing.target_p99_ms, http, uncached, sql });
    }
    // Published products by id, 1,000 of them, each read once before so that all are cached.
    let ids: Vec<String> = (0..products)
        .filter(|&n| !data::product_spec("GEN", n, leaves).draft)
        .take(1_000)
        .map(|n| format!("http://{}/api/v1/products/{}", ports.query_api, data::product_id(n)))
        .collect();
    step(format!("catalog: HTTP cached read by id, {CLIENTS} clients, {duration:?}"));
    http_load(&client, ids.clone(), WARM_UP).await;
    let by_id = http_load(&client, ids, duration).await;

    let slowest = listings()
        .into_iter()
        .zip(&rows)
        .max_by(|a, b| a.1.sql.p99_ms.total_cmp(&b.1.sql.p99_ms))
        .map(|(listing, _)| listing)
        .expect("three listings");
    let explain = match explain(pool, slowest).await {
        Ok(text) => text,
        Err(error) => format!("(EXPLAIN of the {} failed: {error:#})", slowest.name),
    };
    Ok(Results { rows, by_id, explain })
}

/// Runs `one` from [`CLIENTS`] workers for `duration`; the rate and latencies of the successes.
async fn measure<F, Fut>(duration: Duration, one: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (stop, one) = (stop.clone(), one.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                let mut n = worker as u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    if one(worker, n).await {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failures += 1;
                    }
                    n += CLIENTS as u64;
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (latencies, failed) = worker.await.expect("worker");
        all.extend(latencies);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if failures > 0 {
        eprintln!("warning: {failures} requests failed");
    }
    all.sort_unstable_by(f64::total_cmp);
    Stats { per_sec: all.len() as f64 / elapsed, p50_ms: percentile(&all, 0.5), p99_ms: percentile(&all, 0.99) }
}

async fn http_load(client: &reqwest::Client, urls: Vec<String>, duration: Duration) -> Stats {
    let (client, urls) = (client.clone(), Arc::new(urls));
    measure(duration, move |_, n| {
        let (client, urls) = (client.clone(), urls.clone());
        async move {
            let url = &urls[n as usize % urls.len()];
            match client.get(url).send().await {
                Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await
}

async fn sql_load(pool: &PgPool, listing: Listing, duration: Duration) -> Stats {
    let pool = pool.clone();
    measure(duration, move |_, _| {
        let pool = pool.clone();
        async move {
            match list(&pool, listing).await {
                Ok(items) => items > 0,
                Err(error) => {
                    eprintln!("warning: {error}");
                    false
                }
            }
        }
    })
    .await
}

/// What query-api's `GET /api/v1/products` asks of the read model for `listing`'s first page,
/// as an anonymous reader: the same calls in the same order. The number of items.
async fn list(pool: &PgPool, listing: Listing) -> Result<usize, sqlx::Error> {
    let mut transaction = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let items = list_in(&mut transaction, listing).await?;
    transaction.commit().await?;
    Ok(items)
}

async fn list_in(connection: &mut PgConnection, listing: Listing) -> Result<usize, sqlx::Error> {
    let mut filter = Filter { statuses: Some(vec![ProductStatus::Published]), ..Filter::default() };
    if listing.brand_filter {
        filter.attributes = vec![(search::BRAND.to_owned(), vec![data::BRANDS[BRAND].to_owned()])];
    }
    if listing.text {
        filter.text = Some(search::prepare_text(&mut *connection, WORD).await?);
    }
    let facets = FacetRequest { category: listing.facets, brand: listing.facets, price: false };
    let listed =
        search::list(&mut *connection, filter, listing.sort, 20, &Start::Offset(0), facets, Limits::default()).await?;
    Ok(listed.page.items.len())
}

/// Runs `listing` once with `auto_explain` reporting every statement's plan (ANALYZE,
/// BUFFERS) to this session, and renders the top nodes of the slowest one.
async fn explain(pool: &PgPool, listing: Listing) -> Result<String> {
    let mut connection = pool.acquire().await?;
    sqlx::raw_sql(
        "LOAD 'auto_explain';
         SET auto_explain.log_min_duration = 0;
         SET auto_explain.log_analyze = on;
         SET auto_explain.log_buffers = on;
         SET auto_explain.log_timing = on;
         SET auto_explain.log_format = json;
         SET auto_explain.log_level = notice;",
    )
    .execute(&mut *connection)
    .await?;
    NOTICES.lock().expect("notices").clear();
    CAPTURE.store(true, Ordering::SeqCst);
    let mut transaction = sqlx::Connection::begin(&mut *connection).await?;
    let run = list_in(&mut transaction, listing).await;
    transaction.commit().await?;
    CAPTURE.store(false, Ordering::SeqCst);
    sqlx::raw_sql("SET auto_explain.log_min_duration = -1").execute(&mut *connection).await?;
    run?;
    let notices = std::mem::take(&mut *NOTICES.lock().expect("notices"));
    let mut plans: Vec<(f64, serde_json::Value)> = notices
        .iter()
        .filter_map(|notice| {
            let (head, json) = notice.split_once('\n')?;
            let ms: f64 = head.trim_start_matches("duration:").split_whitespace().next()?.parse().ok()?;
            Some((ms, serde_json::from_str(json).ok()?))
        })
        .collect();
    plans.sort_by(|a, b| b.0.total_cmp(&a.0));
    let Some((ms, plan)) = plans.first() else {
        anyhow::bail!("auto_explain reported no plan ({} notices)", notices.len());
    };
    let query = plan["Query Text"].as_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
    let mut lines = Vec::new();
    render(&plan["Plan"], 0, &mut lines);
    let shown = lines.len().min(14);
    Ok(format!(
        "EXPLAIN (ANALYZE, BUFFERS) of the slowest statement of the slowest listing ({}, {:.1} ms, by \
         `auto_explain` in one run after the load; {} statements in that listing): `{}`\n\n```\n{}\n{}```\n",
        listing.name,
        ms,
        plans.len(),
        if query.chars().count() > 300 { format!("{}…", query.chars().take(300).collect::<String>()) } else { query },
        lines[..shown].join("\n"),
        if shown < lines.len() { format!("… {} more nodes\n", lines.len() - shown) } else { String::new() },
    ))
}

/// One line per plan node, depth-first, indented by depth.
fn render(node: &serde_json::Value, depth: usize, lines: &mut Vec<String>) {
    let text = |key: &str| node[key].as_str().map(str::to_owned);
    let mut line = format!("{}{}", "  ".repeat(depth), text("Node Type").unwrap_or_default());
    if let Some(strategy) = text("Strategy").filter(|s| s != "Plain") {
        line.push_str(&format!(" ({strategy})"));
    }
    if let Some(index) = text("Index Name") {
        line.push_str(&format!(" using {index}"));
    }
    if let Some(relation) = text("Relation Name") {
        line.push_str(&format!(" on {relation}"));
    }
    line.push_str(&format!(
        "  actual {:.2} ms, rows {}, loops {}, shared hit {} read {}",
        node["Actual Total Time"].as_f64().unwrap_or(0.0),
        node["Actual Rows"].as_f64().unwrap_or(0.0),
        node["Actual Loops"].as_f64().unwrap_or(0.0),
        node["Shared Hit Blocks"].as_f64().unwrap_or(0.0),
        node["Shared Read Blocks"].as_f64().unwrap_or(0.0),
    ));
    for key in ["Sort Method", "Hash Cond", "Recheck Cond", "Index Cond", "Filter"] {
        if let Some(value) = text(key) {
            let short: String = value.chars().take(90).collect();
            line.push_str(&format!(", {key}: {short}"));
        }
    }
    lines.push(line);
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            render(child, depth + 1, lines);
        }
    }
}

static CAPTURE: AtomicBool = AtomicBool::new(false);
static NOTICES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the subscriber that keeps the notices Postgres sends (sqlx reports them as
/// `sqlx::postgres::notice` events) while [`explain`] runs.
pub fn capture_notices() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    struct Notices;
    struct Message<'a>(&'a mut String);
    impl tracing::field::Visit for Message<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "message" {
                self.0.push_str(value);
            }
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0.push_str(&format!("{value:?}"));
            }
        }
    }
    impl<S: tracing::Subscriber> Layer<S> for Notices {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if CAPTURE.load(Ordering::SeqCst) && event.metadata().target() == "sqlx::postgres::notice" {
                let mut message = String::new();
                event.record(&mut Message(&mut message));
                NOTICES.lock().expect("notices").push(message);
            }
        }
    }
    let filter =
        tracing_subscriber::filter::Targets::new().with_target("sqlx::postgres::notice", tracing::Level::TRACE);
    let subscriber = tracing_subscriber::registry().with(Notices.with_filter(filter));
    let _ = tracing::subscriber::set_global_default(subscriber);
}
