//! `cargo xtask bench catalog`: listing, search and facets over a large catalog, and the bulk
//! import, each against a baseline measured in the same run.
//!
//! 1. **Catalog.** `CATALOG_PRODUCTS` (1,000,000) products with several-word names, a paragraph
//!    of description, a brand attribute (20 brands), a price, stock and a leaf of a 200-category
//!    three-level tree, one in ten a draft ([`data`]). They are generated as events through the
//!    domain aggregates (`Category::handle`, `Product::handle`) and appended with multi-row
//!    INSERTs into `events` (whose trigger keeps `catalog_claims` and `category_tree`, so the
//!    import can upsert by SKU afterwards), then `catalogctl rebuild all` fills the read models
//!    and the publisher's checkpoint is set to the head (those events are already projected).
//! 2. **Reads** ([`load`]): 32 clients against the release query-api for `CATALOG_SECONDS` (15)
//!    each: a plain page, a search (word + brand filter + price sort), a faceted search; the
//!    baselines are the same read-model calls (`read_model::search`, so the same SQL) made by
//!    the bench over a 32-connection pool, and the cached product read by id.
//! 3. **Import** ([`import`]): 100,000 NDJSON lines (nine in ten new SKUs, one in ten a price
//!    change of a generated product) through `POST /api/v1/products/import`, then the time until
//!    the read model has all of them; baseline: `COPY` of the same rows into a bare table.

mod data;
mod import;
mod load;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{Category, CategoryCommand, Product, ProductCommand, ProductStatus};
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::harness::{cores, write_section};
use crate::dev::Backends;
use crate::proc::step;
use crate::system::{catalogctl, Ports, Service, System};

const DB_NAME: &str = "catalog_bench_catalog";
const PORTS: Ports = Ports::BENCH_CATALOG;
/// What a kept database remembers of how it was built (`CATALOG_BENCH_REUSE`).
const META_TABLE: &str = "bench_catalog_built";
const DEFAULT_PRODUCTS: usize = 1_000_000;
const DEFAULT_SECONDS: u64 = 15;
const IMPORT_LINES: usize = 100_000;
const INSERT_BATCH: usize = 5_000;
pub const CLIENTS: usize = 32;

pub async fn run(backends: &Backends) -> Result<()> {
    let products = env_number("CATALOG_PRODUCTS", DEFAULT_PRODUCTS);
    let seconds = env_number("CATALOG_SECONDS", DEFAULT_SECONDS as usize) as u64;
    let import_lines = env_number("CATALOG_IMPORT_LINES", IMPORT_LINES).min(products.max(10));
    let started = Instant::now();
    load::capture_notices();
    let options = Options::from_env();
    let tree = data::category_tree();
    let leaves = data::leaves(&tree);
    let (mut system, pool, generate_seconds, rebuild_seconds) = match reusable(backends, &options, products).await? {
        Some((url, generate_seconds, rebuild_seconds)) => {
            step(format!("catalog: reusing database {} ({products} products); catalogctl migrate", options.database));
            let status =
                catalogctl(&url).arg("migrate").stdout(Stdio::null()).status().context("running catalogctl migrate")?;
            anyhow::ensure!(status.success(), "catalogctl migrate failed");
            let system = System::existing(backends, url, options.ports);
            let pool = PgPoolOptions::new().max_connections(CLIENTS as u32).connect(&system.url).await?;
            sqlx::raw_sql("ANALYZE products").execute(&pool).await?;
            (system, pool, generate_seconds, rebuild_seconds)
        }
        None => {
            let system = System::fresh(backends, &options.database, options.ports).await?;
            let pool = PgPoolOptions::new().max_connections(CLIENTS as u32).connect(&system.url).await?;
            step(format!("catalog: generating {products} products as events through the domain"));
            let generated = Instant::now();
            generate(&pool, &tree, &leaves, products).await?;
            let generate_seconds = generated.elapsed().as_secs_f64();
            step(format!("catalog: generated in {generate_seconds:.0} s; catalogctl rebuild all"));
            let rebuilt = Instant::now();
            let status = catalogctl(&system.url)
                .args(["rebuild", "all"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .status()
                .context("running catalogctl rebuild all")?;
            anyhow::ensure!(status.success(), "catalogctl rebuild all failed");
            let rebuild_seconds = rebuilt.elapsed().as_secs_f64();
            sqlx::raw_sql("VACUUM ANALYZE").execute(&pool).await?;
            let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&pool).await?;
            anyhow::ensure!(listed as usize == products, "the rebuild produced {listed} products, not {products}");
            if options.reuse {
                sqlx::raw_sql(&format!(
                    "CREATE TABLE {META_TABLE} (products bigint, generate_seconds float8, rebuild_seconds float8, \
                                                imported boolean NOT NULL DEFAULT false)"
                ))
                .execute(&pool)
                .await?;
                sqlx::query(&format!("INSERT INTO {META_TABLE} VALUES ($1, $2, $3)"))
                    .bind(products as i64)
                    .bind(generate_seconds)
                    .bind(rebuild_seconds)
                    .execute(&pool)
                    .await?;
            }
            (system, pool, generate_seconds, rebuild_seconds)
        }
    };
    let topic = format!("bench.catalog.{}.events", std::process::id());
    // Everything in the store is in the read models already: the publisher starts at the head.
    sqlx::query(
        "INSERT INTO publisher_checkpoints (topic, transaction_id, global_position)
         SELECT $1, transaction_id, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .bind(&topic)
    .execute(&pool)
    .await?;
    let mut postgres = Vec::new();
    for setting in ["shared_buffers", "effective_cache_size", "max_wal_size"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}")).fetch_one(&pool).await?;
        postgres.push(format!("{setting} {value}"));
    }
    let size = Size {
        postgres: postgres.join(", "),
        products,
        generate_seconds,
        rebuild_seconds,
        table_mib: sqlx::query_scalar::<_, i64>("SELECT pg_total_relation_size('products')").fetch_one(&pool).await?
            as f64
            / 1_048_576.0,
    };

    let reads = match options.reads {
        true => {
            let duration = Duration::from_secs(seconds);
            system.start(Service::QueryApi, |c| {
                c.env("DATABASE_MAX_CONNECTIONS", CLIENTS.to_string()).env("LIST_CACHE_MIB", "0")
            })?;
            let uncached = load::uncached(options.ports, duration).await?;
            system.stop(Service::QueryApi.binary());
            system.start(Service::QueryApi, |c| c.env("DATABASE_MAX_CONNECTIONS", CLIENTS.to_string()))?;
            let reads = load::run(&pool, options.ports, &leaves, products, duration, uncached).await?;
            system.stop(Service::QueryApi.binary());
            Some(reads)
        }
        false => None,
    };

    let imported = match options.import {
        true => {
            if options.reuse {
                // The import adds products: the database no longer holds the generated catalog only.
                sqlx::raw_sql(&format!("UPDATE {META_TABLE} SET imported = true")).execute(&pool).await?;
            }
            system.start(Service::CommandApi, |c| c)?;
            system.start(Service::Projector, |c| {
                c.args(["--role", "all", "--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq")])
                    .args(["--group", &format!("bench-catalog-{}", std::process::id())])
            })?;
            let token = system.admin_token().await?;
            let imported = import::run(&pool, &system, &token, &tree, &leaves, products, import_lines).await?;
            Some(imported)
        }
        false => None,
    };
    system.stop_all();
    pool.close().await;
    step(format!("catalog: done in {:.0} s", started.elapsed().as_secs_f64()));
    report(&size, reads.as_ref(), imported.as_ref(), seconds)
}

/// Where and what the bench runs: `CATALOG_BENCH_DB` (database name), `CATALOG_BENCH_REUSE=1`
/// (keep the generated catalog and use it again while it holds `CATALOG_PRODUCTS` generated
/// products and no import ran on it), `CATALOG_BENCH_PARTS` (`all`, `reads` or `import`) and
/// `CATALOG_BENCH_PORT_OFFSET` (added to each service's port, so that two people can run it at once).
struct Options {
    database: String,
    reuse: bool,
    reads: bool,
    import: bool,
    ports: Ports,
}

impl Options {
    fn from_env() -> Self {
        let database = std::env::var("CATALOG_BENCH_DB").unwrap_or_else(|_| DB_NAME.to_owned());
        let reuse = std::env::var("CATALOG_BENCH_REUSE").is_ok_and(|v| v == "1" || v == "true");
        let parts = std::env::var("CATALOG_BENCH_PARTS").unwrap_or_else(|_| "all".to_owned());
        let offset = env_number("CATALOG_BENCH_PORT_OFFSET", 0) as u16;
        let ports = match offset {
            0 => PORTS,
            offset => {
                let shift = |addr: &str| -> &'static str {
                    let (host, port) = addr.rsplit_once(':').expect("host:port");
                    let port: u16 = port.parse().expect("a port");
                    Box::leak(format!("{host}:{}", port + offset).into_boxed_str())
                };
                Ports {
                    command_api: shift(PORTS.command_api),
                    query_api: shift(PORTS.query_api),
                    projector: shift(PORTS.projector),
                    ..PORTS
                }
            }
        };
        Self { database, reuse, reads: parts != "import", import: parts != "reads", ports }
    }
}

/// The kept database's URL and build times, when `CATALOG_BENCH_REUSE` is set and it holds the
/// catalog this run asks for.
async fn reusable(backends: &Backends, options: &Options, products: usize) -> Result<Option<(String, f64, f64)>> {
    if !options.reuse {
        return Ok(None);
    }
    let base = crate::dev::postgres::DbUrl::parse(&backends.database_url)?;
    let admin = PgPoolOptions::new().max_connections(1).connect(&base.with_database("postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&options.database)
        .fetch_one(&admin)
        .await?;
    admin.close().await;
    if !exists {
        return Ok(None);
    }
    let url = base.with_database(&options.database);
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await?;
    let built: Option<(i64, f64, f64)> = sqlx::query_as(&format!(
        "SELECT products, generate_seconds, rebuild_seconds FROM {META_TABLE} WHERE NOT imported"
    ))
    .fetch_optional(&pool)
    .await
    .unwrap_or(None);
    pool.close().await;
    Ok(built.filter(|(n, _, _)| *n as usize == products).map(|(_, g, r)| (url, g, r)))
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|raw| raw.replace('_', "").parse().ok()).unwrap_or(default)
}

struct Size {
    /// The Postgres settings that matter most here (`scripts/pg-tune.sh`).
    postgres: String,
    products: usize,
    generate_seconds: f64,
    rebuild_seconds: f64,
    table_mib: f64,
}

/// Appends the category tree, then `count` products, as the aggregates emit them.
async fn generate(pool: &PgPool, tree: &[data::CategorySpec], leaves: &[usize], count: usize) -> Result<()> {
    let mut batch = Batch::default();
    for (index, spec) in tree.iter().enumerate() {
        let id = data::category_id(index);
        let mut category = Category::default();
        let command = CategoryCommand::Create {
            id,
            name: spec.name.clone(),
            slug: spec.slug.clone(),
            parent_id: spec.parent.map(data::category_id),
            description: Some(format!("Everything in {}.", spec.name.to_lowercase())),
        };
        let sink = EventSink::default();
        category.handle(command, &(), &sink).await.map_err(|e| anyhow::anyhow!("category refused: {e}"))?;
        for event in sink.collect().await {
            let payload = serde_json::to_string(&event)?;
            batch.push("Category", &id.to_string(), 1, event.event_type(), event.event_version(), payload);
        }
    }
    batch.take().insert(pool.clone()).await?;
    let mut pending: Option<JoinHandle<Result<()>>> = None;
    for n in 0..count {
        let spec = data::product_spec("GEN", n, leaves);
        let id = data::product_id(n);
        let mut product = Product::default();
        let command = ProductCommand::Create {
            id,
            name: spec.name,
            description: Some(spec.description),
            price: Decimal::new(spec.price_cents, 2),
            currency: "EUR".into(),
            sku: Some(spec.sku),
            status: spec.draft.then_some(ProductStatus::Draft),
            category_ids: vec![data::category_id(spec.category)],
            attributes: [("brand".to_owned(), spec.brand.to_owned())].into(),
            images: Vec::new(),
            on_hand: spec.on_hand,
            allow_http_images: false,
        };
        let sink = EventSink::default();
        product.handle(command, &(), &sink).await.map_err(|e| anyhow::anyhow!("product refused: {e}"))?;
        for event in sink.collect().await {
            let payload = serde_json::to_string(&event)?;
            batch.push("Product", &id.to_string(), 1, event.event_type(), event.event_version(), payload);
        }
        if batch.ids.len() >= INSERT_BATCH {
            // One batch is inserted while the next is generated.
            if let Some(previous) = pending.take() {
                previous.await??;
            }
            pending = Some(tokio::spawn(batch.take().insert(pool.clone())));
            if n % 100_000 < INSERT_BATCH {
                step(format!("catalog: {} products generated", n + 1));
            }
        }
    }
    if let Some(previous) = pending.take() {
        previous.await??;
    }
    batch.take().insert(pool.clone()).await
}

#[derive(Default)]
struct Batch {
    types: Vec<String>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
}

impl Batch {
    fn push(
        &mut self,
        aggregate_type: &str,
        id: &str,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: String,
    ) {
        self.types.push(aggregate_type.to_owned());
        self.ids.push(id.to_owned());
        self.sequences.push(sequence);
        self.event_types.push(event_type);
        self.versions.push(event_version);
        self.payloads.push(payload);
    }

    fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    async fn insert(self, pool: PgPool) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT typ, id, seq, evt, ver, payload::json, '{}'
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                    AS t(typ, id, seq, evt, ver, payload)",
        )
        .bind(&self.types)
        .bind(&self.ids)
        .bind(&self.sequences)
        .bind(&self.event_types)
        .bind(&self.versions)
        .bind(&self.payloads)
        .execute(&pool)
        .await
        .context("inserting generated events")?;
        Ok(())
    }
}

fn report(size: &Size, reads: Option<&load::Results>, imported: Option<&import::Results>, seconds: u64) -> Result<()> {
    let mut missed = Vec::new();
    let (table, ratios, explain) = match reads {
        Some(reads) => {
            let (table, ratios) = read_tables(reads, &mut missed);
            (table, ratios, reads.explain.clone())
        }
        None => (
            "(The reads were not run in this run: `CATALOG_BENCH_PARTS=import`.)\n".to_owned(),
            String::new(),
            String::new(),
        ),
    };
    let import_table = match imported {
        Some(imported) => import_table(imported, &mut missed),
        None => "(The import was not run in this run: `CATALOG_BENCH_PARTS=reads`.)\n".to_owned(),
    };
    let verdict = if missed.is_empty() {
        "All targets of the parts run are met.".to_owned()
    } else {
        format!("Targets missed: {}.", missed.join("; "))
    };
    println!("\n{table}\n{ratios}\n{import_table}\n{verdict}\n\n{explain}");
    let section = format!(
        "## catalog\n\n`cargo xtask bench catalog`, release build, on {cores} cores shared with Postgres, Kafka, the\n\
         services, the load generator (and, on this machine, other builds). Catalog: {products} products\n\
         (`CATALOG_PRODUCTS`; default 1,000,000), generated as events through `Category::handle` and\n\
         `Product::handle` in {generate:.0} s and read-modelled by `catalogctl rebuild all` in {rebuild:.0} s\n\
         (products table with its indexes: {table_mib:.0} MiB). Several-word names and a paragraph of\n\
         description from a vocabulary, 200 categories in a 3-level tree (products in the 150 leaves),\n\
         20 brands (`brand` attribute), prices from 1 to 2,000 EUR, stock, nine in ten published.\n\
         Postgres: {postgres} (`scripts/pg-tune.sh show`).\n\n\
         Reads: {clients} concurrent clients, {seconds} s per row, anonymous (published products only).\n\
         Plain page `limit=20` (default sort, newest first); search `q={word}&attr.brand={brand}&sort=price`;\n\
         faceted `q={word}&facets=category,brand` (\"{word}\" is in about 5 % of the products). SQL is the\n\
         baseline: the same `read_model::search` calls as query-api's handler (snapshot transaction,\n\
         `prepare_text`, `page`, the total, `facets`), so the same SQL, made by the bench over a\n\
         {clients}-connection pool at the same concurrency; it leaves out only HTTP, JSON and the\n\
         handler's category-name lookup. The cached read by id is the API's floor. HTTP is query-api\n\
         as it runs by default: a listing asked for again is answered from its listing cache until the\n\
         catalog changes (nothing changes during the reads). Uncached HTTP is query-api started with\n\
         `LIST_CACHE_MIB=0`: every request reads the read model, as every distinct listing does.\n\n{table}\n{ratios}\n\
         Import: one NDJSON body of up to {lines} lines (`CATALOG_IMPORT_LINES`; nine in ten new SKUs, one in\n\
         ten a price change of a generated product) `POST`ed as admin to `/api/v1/products/import` (default\n\
         `IMPORT_CONCURRENCY`) with the projector running; \"read model complete\" is from the response's end\n\
         until every line shows in `products` (polled every 250 ms). Baseline: `COPY` of the same rows into a\n\
         bare table without indexes.\n\n{import_table}\n{verdict}\n\n{explain}\n",
        cores = cores(),
        products = size.products,
        postgres = size.postgres,
        generate = size.generate_seconds,
        rebuild = size.rebuild_seconds,
        table_mib = size.table_mib,
        clients = CLIENTS,
        word = load::WORD,
        brand = data::BRANDS[load::BRAND],
        lines = imported.map_or(IMPORT_LINES, |imported| imported.lines),
    );
    write_section("catalog", &section)
}

/// The read table and the ratios to the cached read.
fn read_tables(reads: &load::Results, missed: &mut Vec<String>) -> (String, String) {
    let mut table = String::from(
        "| request | HTTP req/s | HTTP p50 ms | HTTP p99 ms | uncached HTTP req/s | uncached HTTP p99 ms | SQL req/s | SQL p50 ms | SQL p99 ms | uncached p99 HTTP/SQL | target | met (cached / uncached) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &reads.rows {
        let met = row.http.p99_ms <= row.target_p99_ms;
        let met_uncached = row.uncached.p99_ms <= row.target_p99_ms;
        let verdict = |met: bool| if met { "yes" } else { "no" };
        if !met {
            missed.push(format!("{} p99 {:.1} ms > {} ms", row.name, row.http.p99_ms, row.target_p99_ms));
        }
        if !met_uncached {
            missed.push(format!("{} uncached p99 {:.1} ms > {} ms", row.name, row.uncached.p99_ms, row.target_p99_ms));
        }
        table.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | p99 ≤ {} ms | {} / {} |\n",
            row.name,
            row.http.per_sec,
            row.http.p50_ms,
            row.http.p99_ms,
            row.uncached.per_sec,
            row.uncached.p99_ms,
            row.sql.per_sec,
            row.sql.p50_ms,
            row.sql.p99_ms,
            row.uncached.p99_ms / row.sql.p99_ms,
            row.target_p99_ms,
            verdict(met),
            verdict(met_uncached),
        ));
    }
    let by_id = &reads.by_id;
    table.push_str(&format!(
        "| `GET /api/v1/products/{{id}}` (cached, baseline) | {:.0} | {:.2} | {:.2} | — | — | — | — | — | — | — | — |\n",
        by_id.per_sec, by_id.p50_ms, by_id.p99_ms
    ));
    let mut ratios = String::new();
    for row in &reads.rows {
        ratios.push_str(&format!(
            "- {}: p99 {:.1}x the cached read's, {:.2}x its req/s.\n",
            row.name,
            row.http.p99_ms / by_id.p99_ms,
            row.http.per_sec / by_id.per_sec
        ));
    }
    (table, ratios)
}

fn import_table(imported: &import::Results, missed: &mut Vec<String>) -> String {
    let import_met = imported.per_sec >= 10_000.0;
    let projected_met = imported.projected_seconds.is_some_and(|s| s <= 15.0);
    if !import_met {
        missed.push(format!("import {:.0} products/s < 10,000", imported.per_sec));
    }
    if !projected_met {
        missed.push(match imported.projected_seconds {
            Some(s) => format!("read model complete {s:.1} s after the import returned > 15 s"),
            None => format!("read model not complete within {} s of the import returning", import::WAIT.as_secs()),
        });
    }
    format!(
        "| lines | created | updated | errors | import s | products/s | COPY s | COPY rows/s | ratio | read model complete after | target | met |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.0} | {:.3} | {} | ≥ 10,000/s; ≤ 15 s | {} / {} |\n",
        imported.lines,
        imported.created,
        imported.updated,
        imported.errors,
        imported.seconds,
        imported.per_sec,
        imported.copy_seconds,
        imported.copy_per_sec,
        imported.per_sec / imported.copy_per_sec,
        imported.projected_seconds.map_or_else(|| format!("not within {} s", import::WAIT.as_secs()), |s| format!("{s:.1} s")),
        if import_met { "yes" } else { "no" },
        if projected_met { "yes" } else { "no" },
    )
}
