//! The faults: each scenario starts a rig, puts it under load, injects one fault, lets the
//! system recover by itself and ends with the invariant checks (`checks.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::load::Load;
use super::{eventually, Outcome, Part, Rig, PORTS};
use crate::dev::{broker, postgres, Backends};
use crate::proc;
use crate::system::catalogctl;

type Scenario = fn(&Backends) -> Result<Outcome>;

/// Every scenario, by the name `cargo xtask faults NAME` filters on, in the order they run.
pub(super) const ALL: [(&str, Scenario); 6] = [
    ("kill -9 command-api under load", crash_command_api),
    ("kill -9 publisher between produce and checkpoint", crash_publisher),
    ("kill -9 projector mid-batch", crash_projector),
    ("long-open transaction holds the horizon", long_transaction),
    ("broker paused (SIGSTOP) past the timeouts", broker_pause),
    ("Postgres restarted under load", database_restart),
];

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn crash_command_api(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(backends, "command_crash").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.crash_and_restart(Part::CommandApi, Duration::from_millis(500)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(format!("{summary}; {} requests refused while it was down", tally.refused)))
    })
}

fn crash_publisher(backends: &Backends) -> Result<Outcome> {
    crash_pipeline_half(
        backends,
        "publisher_crash",
        Part::Publisher,
        "the publisher has published",
        "SELECT coalesce(sum(published_total), 0)::bigint FROM publisher_checkpoints",
    )
}

fn crash_projector(backends: &Backends) -> Result<Outcome> {
    crash_pipeline_half(
        backends,
        "projector_crash",
        Part::Projector,
        "the projector has applied events",
        "SELECT count(*) FROM products",
    )
}

/// The pipeline as two processes; `victim` (one of them) joins under load, is killed with
/// `kill -9` once `progress` (a count) passes 20, so in the middle of its work, and restarted.
fn crash_pipeline_half(
    backends: &Backends,
    name: &str,
    victim: Part,
    what: &str,
    progress: &'static str,
) -> Result<Outcome> {
    let other = if victim == Part::Publisher { Part::Projector } else { Part::Publisher };
    runtime()?.block_on(async {
        let mut rig = Rig::new(backends, name).await?;
        for part in [Part::CommandApi, Part::QueryApi, other] {
            rig.start(part)?;
        }
        let token = rig.system.admin_token().await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.start(victim)?;
        let pool = rig.pool.clone();
        eventually(what, Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, i64>(progress).fetch_one(&pool).await.is_ok_and(|n| n > 20)
        })
        .await?;
        rig.crash_and_restart(victim, Duration::from_secs(1)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load.finish().await;
        Ok(Outcome::Pass(rig.check_after_fault(&tally, Duration::from_secs(30)).await?))
    })
}

fn long_transaction(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(backends, "long_transaction").await?;
        let mut long = rig.pool.begin().await?;
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut *long).await?;
        let load = Load::start(token);
        let metrics_url = format!("http://{}/metrics", PORTS.projector);
        let stalled = Arc::new(Mutex::new(0.0));
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
        let topic = rig.topic();
        let status = catalogctl(&rig.system.url)
            .args(["--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq"), "--group", &rig.group()])
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
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(format!("lag reached {stalled:.0} events while held, then caught up; {summary}")))
    })
}

fn broker_pause(backends: &Backends) -> Result<Outcome> {
    let Some(pid) = broker::running_pid() else {
        return Ok(Outcome::Skip("the broker was not started by xtask, so it is not paused".into()));
    };
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(backends, "broker_pause").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(proc::send_signal(pid.into(), "STOP"), "cannot pause the broker");
        // Longer than the producer's delivery timeout and the consumer's session timeout.
        let paused =
            outage_noticed("the projector reports the broker down", Part::Pipeline, Duration::from_secs(10)).await;
        proc::send_signal(pid.into(), "CONT");
        paused?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(60)).await?;
        Ok(Outcome::Pass(format!("/ready said the broker was down; {summary}")))
    })
}

fn database_restart(backends: &Backends) -> Result<Outcome> {
    // Restarting needs a local cluster that `pg_ctlcluster` manages.
    let cluster = proc::find_in_path("pg_ctlcluster")
        .and_then(|_| postgres::local_clusters().ok())
        .and_then(|versions| versions.into_iter().next());
    let Some(version) = cluster else {
        return Ok(Outcome::Skip("no local Postgres cluster this task can restart (pg_ctlcluster)".into()));
    };
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(backends, "database_restart").await?;
        let load = Load::start(token);
        tokio::time::sleep(Duration::from_secs(2)).await;
        postgres::pg_ctlcluster(&version, "stop")?;
        let down =
            outage_noticed("command-api reports the database down", Part::CommandApi, Duration::from_secs(5)).await;
        postgres::pg_ctlcluster(&version, "start")?;
        down?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        ensure!(tally.unavailable > 0, "no request was answered 503 while the database was down");
        let summary = rig.check_after_fault(&tally, Duration::from_secs(60)).await?;
        Ok(Outcome::Pass(format!("{} requests answered 503 + Retry-After meanwhile; {summary}", tally.unavailable)))
    })
}

/// Waits (10 s at most) until `part` answers `/ready` with 503 (`what`: it reports the outage),
/// then lets the outage last `longer`. The caller ends the outage whatever this returns.
async fn outage_noticed(what: &str, part: Part, longer: Duration) -> Result<()> {
    let url = format!("http://{}/ready", part.addr());
    eventually(what, Duration::from_secs(10), || async { reqwest::get(&url).await.is_ok_and(|r| r.status() == 503) })
        .await?;
    tokio::time::sleep(longer).await;
    Ok(())
}

/// The sum of every sample of metric `name` on the Prometheus page at `url`; 0 when the page
/// can't be read.
async fn metric(url: &str, name: &str) -> f64 {
    let Ok(response) = reqwest::get(url).await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
