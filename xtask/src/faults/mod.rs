//! `cargo xtask faults`: the fault suite. Each scenario runs the real release processes on a
//! database and topics of its own, injects one fault under load, lets the system recover by
//! itself, and checks the invariants:
//!
//! - every command acknowledged with 2xx is in the event store;
//! - the read models equal the fold of the event store (`catalogctl verify`), which also means
//!   nothing was applied twice and no version went backwards;
//! - no service needed a restart (for outages: each is still running and ready again).
//!
//! One line per scenario (PASS, FAIL with the reason, or SKIP when the environment cannot
//! inject the fault, e.g. a broker or Postgres this task did not start); exit 1 if any failed.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::bench_harness::{create_admin, fresh_database, login, release_binary, Service};
use crate::proc::{self, step};
use crate::Backends;

const COMMAND_ADDR: &str = "127.0.0.1:19080";
const QUERY_ADDR: &str = "127.0.0.1:19081";
const PROJECTOR_ADDR: &str = "127.0.0.1:19082";
const PUBLISHER_ADDR: &str = "127.0.0.1:19083";
/// The services' request time limit in this suite: an answer must come within it (plus slack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests per second of the background writer.
const WRITE_RATE: u64 = 40;

type Scenario = fn(&Backends) -> Result<Outcome>;

enum Outcome {
    Pass(String),
    Skip(String),
}

/// Runs every scenario whose name contains `only` (all when None).
pub fn run(backends: &Backends, only: Option<&str>) -> Result<ExitCode> {
    let scenarios: [(&str, Scenario); 6] = [
        ("kill -9 command-api under load", crash_command_api),
        ("kill -9 publisher between produce and checkpoint", crash_publisher),
        ("kill -9 projector mid-batch", crash_projector),
        ("long-open transaction holds the horizon", long_transaction),
        ("broker paused (SIGSTOP) past the timeouts", broker_pause),
        ("Postgres restarted under load", database_restart),
    ];
    let mut failed = 0;
    let mut lines = Vec::new();
    for (name, scenario) in scenarios {
        if only.is_some_and(|only| !name.contains(only)) {
            continue;
        }
        step(format!("scenario: {name}"));
        let started = Instant::now();
        let line = match scenario(backends) {
            Ok(Outcome::Pass(details)) => format!("PASS  {name} ({:.0} s): {details}", started.elapsed().as_secs_f64()),
            Ok(Outcome::Skip(why)) => format!("SKIP  {name}: {why}"),
            Err(error) => {
                failed += 1;
                format!("FAIL  {name}: {error:#}")
            }
        };
        eprintln!("{line}");
        lines.push(line);
    }
    println!("\nfault suite:");
    for line in &lines {
        println!("  {line}");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A running system on its own database and topics.
struct System {
    url: String,
    pool: PgPool,
    id: String,
    services: BTreeMap<&'static str, Service>,
}

impl System {
    async fn new(backends: &Backends, name: &str) -> Result<Self> {
        let id = format!("{name}_{}", std::process::id());
        let url = fresh_database(backends, &format!("catalog_faults_{name}")).await?;
        create_admin(&url)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url)
            .await?;
        Ok(Self { url, pool, id, services: BTreeMap::new() })
    }

    fn start(&mut self, which: &'static str, backends: &Backends) -> Result<()> {
        let url = self.url.clone();
        let topic = format!("faults.{}.events", self.id);
        let group = format!("faults-{}", self.id);
        let brokers = backends.kafka_brokers.clone();
        let timeout = REQUEST_TIMEOUT.as_secs().to_string();
        // Each service's log (its stdout, at info) goes to a file of its own, kept for a failure.
        let log_dir = crate::workspace::root().join(".local/faults");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("{}-{which}.log", self.id));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut service = match which {
            "command-api" => Service::start("command-api", |c| {
                c.stdout(log).env("RUST_LOG", "info").env("COMMAND_API_ADDR", COMMAND_ADDR).env("DATABASE_URL", &url).env("REQUEST_TIMEOUT_SECONDS", &timeout)
            })?,
            "query-api" => Service::start("query-api", |c| {
                c.stdout(log).env("RUST_LOG", "info").env("QUERY_API_ADDR", QUERY_ADDR).env("DATABASE_URL", &url).env("REQUEST_TIMEOUT_SECONDS", &timeout)
            })?,
            "publisher" | "projector" | "pipeline" => {
                let (role, addr) = match which {
                    "publisher" => ("publish", PUBLISHER_ADDR),
                    "projector" => ("project", PROJECTOR_ADDR),
                    _ => ("all", PROJECTOR_ADDR),
                };
                Service::start("projector", |c| {
                    c.stdout(log)
                        .env("RUST_LOG", "info")
                        .args(["--role", role, "--addr", addr, "--group", &group])
                        .args(["--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq")])
                        .args(["--session-timeout-ms", "6000", "--kafka-message-timeout-ms", "5000"])
                        .env("DATABASE_URL", &url)
                        .env("KAFKA_BROKERS", &brokers)
                })?
            }
            other => bail!("unknown service {other}"),
        };
        service.wait_listening(addr_of(which))?;
        self.services.insert(which, service);
        Ok(())
    }

    fn kill(&mut self, which: &str) -> Result<()> {
        let mut service = self.services.remove(which).with_context(|| format!("{which} is not running"))?;
        service.kill_hard();
        Ok(())
    }

    /// Every service still runs (none died or needed a restart) and answers `/ready` with 200
    /// within `within`.
    async fn all_ready(&mut self, within: Duration) -> Result<()> {
        for (name, service) in self.services.iter_mut() {
            service.ensure_running()?;
            let url = format!("http://{}/ready", addr_of(name));
            eventually(&format!("{name} ready"), within, || async {
                reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
            })
            .await?;
        }
        Ok(())
    }

    /// The invariants every scenario ends with.
    async fn check_invariants(&self, acknowledged: &[String]) -> Result<String> {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Product' AND aggregate_id = ANY($1)",
        )
        .bind(acknowledged)
        .fetch_one(&self.pool)
        .await?;
        ensure!(
            stored as usize == acknowledged.len(),
            "{} acknowledged products, {stored} in the event store",
            acknowledged.len()
        );
        let verify = Command::new(release_binary("catalogctl"))
            .args(["--database-url", &self.url, "verify", "--settle-seconds", "60"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .output()?;
        ensure!(
            verify.status.success(),
            "catalogctl verify found differences: {}",
            String::from_utf8_lossy(&verify.stdout).lines().take(3).collect::<Vec<_>>().join(" | ")
        );
        Ok(format!("{} acknowledged writes all stored, read models verified", acknowledged.len()))
    }
}

fn addr_of(which: &str) -> &'static str {
    match which {
        "command-api" => COMMAND_ADDR,
        "query-api" => QUERY_ADDR,
        "publisher" => PUBLISHER_ADDR,
        _ => PROJECTOR_ADDR,
    }
}

/// What the load saw: acknowledged product ids, and any answer that breaks the rules (a 5xx
/// other than 503-with-Retry-After, or an answer slower than the time limit).
#[derive(Default)]
struct Tally {
    acknowledged: Vec<String>,
    unavailable: u64,
    refused: u64,
    violations: Vec<String>,
}

/// Writes products at a steady rate (and reads them back) until stopped. Connection errors
/// count as `refused` (a killed server cannot answer); they are not violations.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn({
            let (stop, tally) = (stop.clone(), tally.clone());
            async move {
                let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT * 3).build().expect("client");
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / WRITE_RATE));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let (client, tally, token) = (client.clone(), tally.clone(), token.clone());
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let write = client
                            .post(format!("http://{COMMAND_ADDR}/api/v1/products"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"name": format!("Fault {n}"), "price": "9.99"}))
                            .send()
                            .await;
                        record(&tally, "POST", sent, write, true).await;
                        let sent = Instant::now();
                        let read = client.get(format!("http://{QUERY_ADDR}/api/v1/products?limit=5")).send().await;
                        record(&tally, "GET", sent, read, false).await;
                    });
                }
            }
        });
        Self { stop, tally, task }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Let requests still in flight land.
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_secs(1)).await;
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }
}

async fn record(
    tally: &Mutex<Tally>,
    what: &str,
    sent: Instant,
    result: reqwest::Result<reqwest::Response>,
    is_write: bool,
) {
    let elapsed = sent.elapsed();
    let response = match result {
        Ok(response) => response,
        Err(_) => {
            tally.lock().expect("tally").refused += 1;
            return;
        }
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let id = if is_write && status == 201 {
        response.json::<serde_json::Value>().await.ok().and_then(|b| b["id"].as_str().map(str::to_owned))
    } else {
        None
    };
    let mut tally = tally.lock().expect("tally");
    if elapsed > REQUEST_TIMEOUT + Duration::from_secs(2) {
        tally.violations.push(format!("{what} answered after {elapsed:?}"));
    }
    match status {
        503 if retry_after => tally.unavailable += 1,
        500..=599 => tally.violations.push(format!("{what} answered {status}")),
        _ => {}
    }
    if let Some(id) = id {
        tally.acknowledged.push(id);
    }
}

impl Tally {
    fn ensure_clean(&self) -> Result<()> {
        ensure!(self.violations.is_empty(), "rule violations: {:?}", &self.violations[..self.violations.len().min(5)]);
        ensure!(!self.acknowledged.is_empty(), "no write was acknowledged at all");
        Ok(())
    }
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn full_system(backends: &Backends, name: &str) -> Result<(System, String)> {
    let mut system = System::new(backends, name).await?;
    for service in ["command-api", "query-api", "pipeline"] {
        system.start(service, backends)?;
    }
    let token = login(COMMAND_ADDR).await?;
    Ok((system, token))
}

fn crash_command_api(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut system, token) = full_system(backends, "command_crash").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(3)).await;
        system.kill("command-api")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        system.start("command-api", backends)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        system.all_ready(Duration::from_secs(30)).await?;
        let summary = system.check_invariants(&tally.acknowledged).await?;
        Ok(Outcome::Pass(format!("{summary}; {} requests refused while it was down", tally.refused)))
    })
}

fn crash_publisher(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let mut system = System::new(backends, "publisher_crash").await?;
        for service in ["command-api", "query-api", "projector"] {
            system.start(service, backends)?;
        }
        let token = login(COMMAND_ADDR).await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        system.start("publisher", backends)?;
        let pool = system.pool.clone();
        eventually("the publisher has published", Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(published_total), 0)::bigint FROM publisher_checkpoints")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n > 20)
        })
        .await?;
        system.kill("publisher")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        system.start("publisher", backends)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        system.all_ready(Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(system.check_invariants(&tally.acknowledged).await?))
    })
}

fn crash_projector(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let mut system = System::new(backends, "projector_crash").await?;
        for service in ["command-api", "query-api", "publisher"] {
            system.start(service, backends)?;
        }
        let token = login(COMMAND_ADDR).await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        system.start("projector", backends)?;
        let pool = system.pool.clone();
        eventually("the projector has applied events", Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM products").fetch_one(&pool).await.is_ok_and(|n| n > 20)
        })
        .await?;
        system.kill("projector")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        system.start("projector", backends)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        system.all_ready(Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(system.check_invariants(&tally.acknowledged).await?))
    })
}

fn long_transaction(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut system, token) = full_system(backends, "long_transaction").await?;
        let mut long = system.pool.begin().await?;
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut *long).await?;
        let load = Load::start(token);
        let metrics_url = format!("http://{PROJECTOR_ADDR}/metrics");
        let stalled = std::sync::Arc::new(Mutex::new(0.0));
        eventually("the stall shows in publisher_lag_events", Duration::from_secs(20), || {
            let (url, stalled) = (metrics_url.clone(), stalled.clone());
            async move {
                let lag = metric(&url, "publisher_lag_events").await;
                *stalled.lock().unwrap() = lag;
                lag >= 10.0
            }
        })
        .await?;
        let stalled = *stalled.lock().unwrap();
        let status = Command::new(release_binary("catalogctl"))
            .args(["--database-url", &system.url, "--kafka-topic", &format!("faults.{}.events", system.id)])
            .args(["--kafka-dlq-topic", &format!("faults.{}.events.dlq", system.id), "--group", &format!("faults-{}", system.id)])
            .args(["status", "--json"])
            .env("KAFKA_BROKERS", &backends.kafka_brokers)
            .env("RUST_LOG", "warn")
            .output()?;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).context("catalogctl status --json")?;
        ensure!(
            status["oldest_open_transaction"]["seconds"].as_f64().is_some_and(|s| s > 0.0),
            "catalogctl status does not show the open transaction: {status}"
        );
        ensure!(
            status["publishers"][0]["lag_events"].as_i64().is_some_and(|n| n > 0),
            "catalogctl status shows no publisher lag: {status}"
        );
        long.commit().await?;
        eventually("publishing catches up", Duration::from_secs(20), || async {
            metric(&metrics_url, "publisher_lag_events").await < 5.0
        })
        .await?;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        system.all_ready(Duration::from_secs(30)).await?;
        let summary = system.check_invariants(&tally.acknowledged).await?;
        Ok(Outcome::Pass(format!("lag reached {stalled:.0} events while held, then caught up; {summary}")))
    })
}

fn broker_pause(backends: &Backends) -> Result<Outcome> {
    let Some(pid) = crate::broker::running_pid() else {
        return Ok(Outcome::Skip("the broker was not started by xtask, so it is not paused".into()));
    };
    runtime()?.block_on(async {
        let (mut system, token) = full_system(backends, "broker_pause").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(proc::send_signal(pid.into(), "STOP"), "cannot pause the broker");
        let paused = async {
            let url = format!("http://{PROJECTOR_ADDR}/ready");
            eventually("the projector reports the broker down", Duration::from_secs(10), || async {
                reqwest::get(&url).await.is_ok_and(|r| r.status() == 503)
            })
            .await?;
            // Longer than the producer's delivery timeout and the consumer's session timeout.
            tokio::time::sleep(Duration::from_secs(10)).await;
            anyhow::Ok(())
        }
        .await;
        proc::send_signal(pid.into(), "CONT");
        paused?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        system.all_ready(Duration::from_secs(60)).await?;
        let summary = system.check_invariants(&tally.acknowledged).await?;
        Ok(Outcome::Pass(format!("/ready said the broker was down; {summary}")))
    })
}

fn database_restart(backends: &Backends) -> Result<Outcome> {
    let Some(cluster) = local_cluster() else {
        return Ok(Outcome::Skip("no local Postgres cluster this task can restart (pg_ctlcluster)".into()));
    };
    runtime()?.block_on(async {
        let (mut system, token) = full_system(backends, "database_restart").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg_ctlcluster(&cluster, "stop")?;
        let down = async {
            let url = format!("http://{COMMAND_ADDR}/ready");
            eventually("command-api reports the database down", Duration::from_secs(10), || async {
                reqwest::get(&url).await.is_ok_and(|r| r.status() == 503)
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            anyhow::Ok(())
        }
        .await;
        pg_ctlcluster(&cluster, "start")?;
        down?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        tally.ensure_clean()?;
        ensure!(tally.unavailable > 0, "no request was answered 503 while the database was down");
        system.all_ready(Duration::from_secs(60)).await?;
        let summary = system.check_invariants(&tally.acknowledged).await?;
        Ok(Outcome::Pass(format!("{} requests answered 503 + Retry-After meanwhile; {summary}", tally.unavailable)))
    })
}

/// `(version, name)` of the local Debian Postgres cluster, if `pg_ctlcluster` manages one.
fn local_cluster() -> Option<(String, String)> {
    proc::find_in_path("pg_ctlcluster")?;
    let version = std::fs::read_dir("/etc/postgresql").ok()?.filter_map(|e| e.ok()).next()?.file_name();
    Some((version.to_string_lossy().into_owned(), "main".into()))
}

fn pg_ctlcluster(cluster: &(String, String), action: &str) -> Result<()> {
    let mut command = Command::new("pg_ctlcluster");
    command.args(["--skip-systemctl-redirect", &cluster.0, &cluster.1, action]);
    if action == "stop" {
        command.args(["-m", "fast"]);
    }
    let status = command.status().context("running pg_ctlcluster")?;
    ensure!(status.success(), "pg_ctlcluster {action} failed");
    Ok(())
}

async fn metric(url: &str, name: &str) -> f64 {
    let Ok(response) = reqwest::get(url).await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
