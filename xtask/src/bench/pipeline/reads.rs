//! Phase 4 of `bench pipeline`: a cached product read against a trivial handler, `wrk` on
//! one query-api process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sqlx::PgPool;

use super::lag::get_product;
use crate::proc::{self, step};
use crate::system::{Ports, Service, System};

const QUERY_ADDR: &str = Ports::BENCH_PIPELINE.query_api;
pub(super) const HTTP_DURATION: Duration = Duration::from_secs(10);
pub(super) const HTTP_CONNECTIONS: u32 = 32;
pub(super) const WRK_THREADS: u32 = 2;

/// One `wrk` run.
pub(super) struct HttpLoad {
    pub(super) per_sec: f64,
    pub(super) p50: String,
    pub(super) p99: String,
    /// query-api's CPU time (user + system) per request: what the route costs the server,
    /// whatever else the 2 cores were doing.
    pub(super) cpu_us: f64,
}

pub(super) struct Reads {
    pub(super) product: HttpLoad,
    pub(super) health: HttpLoad,
}

/// Phase 4: one query-api process, `wrk` on a cached product and then on `/health`.
pub(super) async fn cached_read_vs_trivial(system: &mut System, pool: &PgPool, wrk: &Path) -> Result<Reads> {
    step(format!("phase 4: cached product GET vs /health, wrk {HTTP_CONNECTIONS} connections, {HTTP_DURATION:?} each"));
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM products WHERE NOT deleted ORDER BY created_at, id LIMIT 1")
            .fetch_one(pool)
            .await?;
    system.start(Service::QueryApi, |c| c)?;
    let client = reqwest::Client::new();
    get_product(&client, &id.to_string(), false).await?.context("the product to cache is not visible")?;
    let pid = system
        .pids()
        .find_map(|(name, pid)| (name == Service::QueryApi.binary()).then_some(pid))
        .context("query-api is not running")?;
    let product = run_wrk(wrk, &format!("http://{QUERY_ADDR}/api/v1/products/{id}"), pid)?;
    system.ensure_running()?;
    let health = run_wrk(wrk, &format!("http://{QUERY_ADDR}/health"), pid)?;
    system.stop_all();
    Ok(Reads { product, health })
}

/// Runs `wrk` against `url`; fails on errors or non-2xx answers, which would make the
/// requests/s meaningless.
fn run_wrk(wrk: &Path, url: &str, server: u32) -> Result<HttpLoad> {
    step(format!("wrk {url}"));
    let cpu_before = proc::cpu_seconds(server);
    let output = proc::output(Command::new(wrk).args([
        &format!("-t{WRK_THREADS}"),
        &format!("-c{HTTP_CONNECTIONS}"),
        &format!("-d{}s", HTTP_DURATION.as_secs()),
        "--latency",
        url,
    ]))?;
    if let Some(line) = output.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
        bail!("wrk {url}: {}", line.trim());
    }
    let field = |label: &str| {
        output
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .with_context(|| format!("no `{label}` in wrk's output:\n{output}"))
    };
    let cpu = proc::cpu_seconds(server) - cpu_before;
    // "123456 requests in 10.00s, ..."
    let requests: f64 = output
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ").map(|(n, _)| n.trim().to_owned()))
        .with_context(|| format!("no request count in wrk's output:\n{output}"))?
        .parse()?;
    Ok(HttpLoad {
        per_sec: field("Requests/sec:")?.parse()?,
        p50: field("50%")?,
        p99: field("99%")?,
        cpu_us: cpu * 1e6 / requests.max(1.0),
    })
}

/// The `wrk` load generator: from PATH, or installed with apt-get when running as root.
pub(super) fn ensure_wrk() -> Result<PathBuf> {
    if let Some(path) = proc::find_in_path("wrk") {
        return Ok(path);
    }
    let uid = proc::output(Command::new("id").arg("-u")).unwrap_or_default();
    if uid != "0" {
        bail!("the pipeline benchmark needs the `wrk` load generator; install it (e.g. `sudo apt-get install -y wrk`) and run again");
    }
    step("installing wrk (apt-get install -y wrk)");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends", "wrk"]).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if proc::run(&mut install()).is_err() {
        proc::run(Command::new("apt-get").arg("update"))?;
        proc::run(&mut install())?;
    }
    proc::find_in_path("wrk").context("apt-get installed wrk, but it is not in PATH")
}
