//! `cargo xtask faults`: the fault suite. Each scenario runs the real release processes on a
//! database and topics of its own, injects one fault under load, lets the system recover by
//! itself, and checks the invariants:
//!
//! - every command acknowledged with 2xx is in the event store;
//! - the read models equal the fold of the event store (`catalogctl verify`), which also means
//!   nothing was applied twice;
//! - no read-model row's version ever went down, at any moment of the run (a trigger the rig
//!   installs records every write that lowers one);
//! - the topic holds every event up to the publisher's checkpoint (read back with a consumer:
//!   count and event ids);
//! - no service needed a restart (for outages: each is still running and ready again).
//!
//! One line per scenario (PASS, FAIL with the reason, or SKIP when the environment cannot
//! inject the fault, e.g. no Postgres cluster this task may restart); exit 1 if any failed.
//! Under `CI=true` a SKIP is a FAIL: a green CI run must mean every scenario ran.
//!
//! `scenarios.rs` holds the faults, `load.rs` the traffic they run under, `checks.rs` the
//! invariants; the system under test (`Rig`) is here.

mod checks;
mod load;
mod scenarios;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::dev::Backends;
use crate::proc::step;
use crate::system::{Ports, Service, System};
use crate::workspace::root;

/// The services' request time limit in this suite: an answer must come within it (plus slack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const PORTS: Ports = Ports::FAULTS;

enum Outcome {
    Pass(String),
    Skip(String),
}

/// Prints every scenario's name, in the order they run.
pub fn list() {
    for (name, _) in scenarios::ALL {
        println!("{name}");
    }
}

/// Whether this is a CI run (`CI=true`), where a scenario that cannot run fails the suite.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The line of a scenario that could not run, and whether it fails the suite: under CI it
/// does, so a green CI run means every scenario ran.
fn skipped(name: &str, why: &str, ci: bool) -> (String, bool) {
    if ci {
        (format!("FAIL  {name}: cannot run, and CI=true does not allow a skip: {why}"), true)
    } else {
        (format!("SKIP  {name}: {why}"), false)
    }
}

/// Runs every scenario whose name contains `only` (all when None).
pub fn run(backends: &Backends, only: Option<&str>) -> Result<ExitCode> {
    let mut failed = 0usize;
    let mut lines = Vec::new();
    let ci = in_ci();
    if only.is_some_and(|only| !scenarios::ALL.iter().any(|(name, _)| name.contains(only))) {
        bail!("no scenario's name contains {only:?}; `cargo xtask faults --list` prints them");
    }
    let suite_started = Instant::now();
    for (name, scenario) in scenarios::ALL {
        if only.is_some_and(|only| !name.contains(only)) {
            continue;
        }
        step(format!("scenario: {name}"));
        let started = Instant::now();
        let line = match scenario(backends) {
            Ok(Outcome::Pass(details)) => format!("PASS  {name} ({:.0} s): {details}", started.elapsed().as_secs_f64()),
            Ok(Outcome::Skip(why)) => {
                let (line, fails) = skipped(name, &why, ci);
                failed += usize::from(fails);
                line
            }
            Err(error) => {
                failed += 1;
                format!("FAIL  {name}: {error:#}")
            }
        };
        eprintln!("{line}");
        lines.push(line);
    }
    println!("\nfault suite ({:.0} s):", suite_started.elapsed().as_secs_f64());
    for line in &lines {
        println!("  {line}");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The processes a scenario runs, and crashes one at a time. The pipeline runs either as one
/// projector process (`Pipeline`) or as its two halves, so that each can be killed alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    CommandApi,
    QueryApi,
    Publisher,
    Projector,
    Pipeline,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Self::CommandApi => "command-api",
            Self::QueryApi => "query-api",
            Self::Publisher => "publisher",
            Self::Projector => "projector",
            Self::Pipeline => "pipeline",
        }
    }

    fn addr(self) -> &'static str {
        match self {
            Self::CommandApi => PORTS.command_api,
            Self::QueryApi => PORTS.query_api,
            Self::Publisher => PORTS.publisher.expect("the fault suite's row has a publisher port"),
            Self::Projector | Self::Pipeline => PORTS.projector,
        }
    }

    /// The service it runs, and for a projector its `--role`.
    fn service(self) -> (Service, Option<&'static str>) {
        match self {
            Self::CommandApi => (Service::CommandApi, None),
            Self::QueryApi => (Service::QueryApi, None),
            Self::Publisher => (Service::Projector, Some("publish")),
            Self::Projector => (Service::Projector, Some("project")),
            Self::Pipeline => (Service::Projector, Some("all")),
        }
    }
}

/// The system under test: release services on a database and topics of their own.
struct Rig {
    system: System,
    pool: PgPool,
    /// Names this scenario's topic, consumer group and logs.
    id: String,
    /// Name and address of every process that should be running.
    running: BTreeMap<&'static str, &'static str>,
}

impl Rig {
    async fn new(backends: &Backends, name: &str) -> Result<Self> {
        let id = format!("{name}_{}", std::process::id());
        let system = System::fresh(backends, &format!("catalog_faults_{name}"), PORTS).await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&system.url)
            .await?;
        checks::watch_versions(&pool).await?;
        Ok(Self { system, pool, id, running: BTreeMap::new() })
    }

    /// The command-api, query-api and the whole pipeline in one process, with the admin's
    /// token: what most scenarios break one piece of.
    async fn full(backends: &Backends, name: &str) -> Result<(Self, String)> {
        let mut rig = Self::new(backends, name).await?;
        for part in [Part::CommandApi, Part::QueryApi, Part::Pipeline] {
            rig.start(part)?;
        }
        let token = rig.system.admin_token().await?;
        Ok((rig, token))
    }

    fn topic(&self) -> String {
        format!("faults.{}.events", self.id)
    }

    fn group(&self) -> String {
        format!("faults-{}", self.id)
    }

    fn start(&mut self, part: Part) -> Result<()> {
        self.start_with(part, None)
    }

    /// Each process's log (its stdout, at info), a file of its own kept for a failure.
    fn log_path(&self, name: &str) -> Result<PathBuf> {
        let log_dir = root().join(".local/faults");
        std::fs::create_dir_all(&log_dir)?;
        Ok(log_dir.join(format!("{}-{name}.log", self.id)))
    }

    /// Starts `part`; a projector with `fail_point` armed (`PROJECTOR_FAIL_POINT`, see the
    /// projector's `fault-injection` feature).
    fn start_with(&mut self, part: Part, fail_point: Option<&str>) -> Result<()> {
        let (service, role) = part.service();
        self.start_process(part.name(), service, role, part.addr(), fail_point)
    }

    /// Starts process `name` of `service` on `addr`, logging to its own file; projectors on this
    /// scenario's topics and group.
    fn start_process(
        &mut self,
        name: &'static str,
        service: Service,
        role: Option<&str>,
        addr: &'static str,
        fail_point: Option<&str>,
    ) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name)?)?;
        let (topic, group) = (self.topic(), self.group());
        let timeout = REQUEST_TIMEOUT.as_secs().to_string();
        self.system.start_as(name, service, addr, |c| {
            c.stdout(log).env("RUST_LOG", "info");
            if let Some(fail_point) = fail_point {
                c.env("PROJECTOR_FAIL_POINT", fail_point);
            }
            if service == Service::QueryApi {
                // Below the request time limit, so a `min_version` read that cannot be served
                // in time is a 503 with Retry-After, not a timeout.
                c.env("MIN_VERSION_WAIT_MS", "2000");
            }
            match role {
                Some(role) => c
                    .args(["--role", role, "--group", &group])
                    .args(["--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq")])
                    .args(["--session-timeout-ms", "6000", "--kafka-message-timeout-ms", "5000"]),
                None => c.env("REQUEST_TIMEOUT_SECONDS", &timeout),
            }
        })?;
        self.running.insert(name, addr);
        Ok(())
    }

    /// `kill -9` of process `name`, as a crash.
    fn kill(&mut self, name: &str) -> Result<()> {
        self.system.kill(name)?;
        self.running.remove(name);
        Ok(())
    }

    /// Whether process `name`'s log holds `needle`.
    fn log_contains(&self, name: &str, needle: &str) -> bool {
        self.log_path(name).ok().and_then(|p| std::fs::read_to_string(p).ok()).is_some_and(|log| log.contains(needle))
    }

    /// `kill -9` of `part`, a pause of `down`, and a restart: a crash the system must absorb.
    async fn crash_and_restart(&mut self, part: Part, down: Duration) -> Result<()> {
        self.kill(part.name())?;
        tokio::time::sleep(down).await;
        self.start(part)
    }
}

/// Polls `check` until it holds, failing after `within` with the last error it gave (a metric
/// that cannot be read never counts as any value).
async fn eventually_ok<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        let error = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(error) => Some(error),
        };
        if Instant::now() >= deadline {
            match error {
                Some(error) => bail!("timed out after {within:?} waiting for {what}: {error:#}"),
                None => bail!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it holds, failing after `within`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_that_cannot_run_fails_under_ci_only() {
        let (line, fails) = skipped("Postgres restarted", "no pg_ctlcluster", true);
        assert!(fails && line.starts_with("FAIL"), "{line}");
        let (line, fails) = skipped("Postgres restarted", "no pg_ctlcluster", false);
        assert!(!fails && line.starts_with("SKIP"), "{line}");
    }

    #[test]
    fn a_metric_that_cannot_be_read_is_an_error_not_zero() {
        let page = "# TYPE publisher_lag_events gauge\npublisher_lag_events 0\nx{a=\"1\"} 2\nx{a=\"2\"} 3\n";
        assert_eq!(scenarios::samples(page, "publisher_lag_events").unwrap(), 0.0);
        assert_eq!(scenarios::samples(page, "x").unwrap(), 5.0);
        assert!(scenarios::samples(page, "projector_dead_letters_total").is_err(), "an absent metric is not 0");
        assert!(scenarios::samples("y NaNx\n", "y").is_err(), "an unreadable sample is not 0");
    }

    #[test]
    fn every_scenario_name_is_unique() {
        let mut names: Vec<&str> = scenarios::ALL.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), scenarios::ALL.len());
    }
}
