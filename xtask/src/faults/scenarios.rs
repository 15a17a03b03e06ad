//! The faults: each scenario starts a rig, puts it under load, injects one fault, lets the
//! system recover by itself and ends with the invariant checks (`checks.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::checks::read_topic;
use super::load::Load;
use super::{eventually, eventually_ok, Outcome, Part, Rig, PORTS};
use crate::dev::broker::PrivateBroker;
use crate::dev::{postgres, Backends};
use crate::proc;
use crate::system::{catalogctl, Service};

type Scenario = fn(&Backends) -> Result<Outcome>;

/// Every scenario, by the name `cargo xtask faults NAME` filters on, in the order they run.
pub(super) const ALL: [(&str, Scenario); 7] = [
    ("kill -9 command-api under load", crash_command_api),
    ("kill -9 publisher after the broker's ack, before its checkpoint", crash_publisher),
    ("kill -9 projector after the read-model commit, before the offset commit", crash_projector),
    ("long-open transaction holds the horizon and commits an event last", long_transaction),
    ("broker paused (SIGSTOP) past the timeouts", broker_pause),
    ("Postgres restarted under load", database_restart),
    ("scale-out: 2 command-api, 2 query-api, 3 projectors; kill -9 the leading publisher and a consumer", scale_out),
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

/// The pipeline as two processes; the publisher joins under load with fail-point
/// `publish-after-ack` armed for its third batch: the broker has acknowledged the batch, the
/// checkpoint is not written. It is killed there with `kill -9` and restarted. Shown to hit the
/// window: at the kill the topic holds more events than the checkpoint covers, and after the
/// restart that batch is on the topic twice.
fn crash_publisher(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut rig, load) = half_pipeline(backends, "publisher_crash", Part::Projector).await?;
        rig.start_with(Part::Publisher, Some("publish-after-ack:3"))?;
        rig.wait_for_fail_point(Part::Publisher, "publish-after-ack").await?;
        let covered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e, publisher_checkpoints c
              WHERE c.topic = $1 AND (e.transaction_id, e.global_position) <= (c.transaction_id, c.global_position)",
        )
        .bind(rig.topic())
        .fetch_one(&rig.pool)
        .await?;
        let on_topic = read_topic(rig.system.brokers(), &rig.topic()).await?.ids.len() as i64;
        ensure!(
            on_topic > covered,
            "not in the window: the topic holds {on_topic} events, the checkpoint covers {covered}"
        );
        rig.crash_and_restart(Part::Publisher, Duration::from_secs(1)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(format!(
            "killed with {} acknowledged events past the checkpoint ({covered} covered); {summary}",
            on_topic - covered
        )))
    })
}

/// The pipeline as two processes; the projector joins under load with fail-point
/// `project-after-commit` armed for its fifth round: its read-model transactions have
/// committed, its offsets are not. It is killed there with `kill -9` and restarted. Shown to
/// hit the window: the restarted projector is handed events it had already applied, and skips
/// them (`projector_events_skipped_total` > 0).
fn crash_projector(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut rig, load) = half_pipeline(backends, "projector_crash", Part::Publisher).await?;
        rig.start_with(Part::Projector, Some("project-after-commit:5"))?;
        rig.wait_for_fail_point(Part::Projector, "project-after-commit").await?;
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&rig.pool).await?;
        rig.crash_and_restart(Part::Projector, Duration::from_secs(1)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        let skipped = metric(&format!("http://{}/metrics", Part::Projector.addr()), "projector_events_skipped_total")
            .await?;
        ensure!(
            skipped > 0.0,
            "not in the window: the restarted projector was redelivered no event it had applied"
        );
        Ok(Outcome::Pass(format!(
            "killed with {applied} products applied and their offsets uncommitted; {skipped:.0} redelivered events skipped after the restart; {summary}"
        )))
    })
}

/// The apis and `other`, the half of the pipeline that is not the victim, under load.
async fn half_pipeline(backends: &Backends, name: &str, other: Part) -> Result<(Rig, Load)> {
    let mut rig = Rig::new(backends, name).await?;
    for part in [Part::CommandApi, Part::QueryApi, other] {
        rig.start(part)?;
    }
    let token = rig.system.admin_token().await?;
    let load = Load::start(token);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((rig, load))
}

impl Rig {
    /// Waits until `part` logs that it stopped at `fail_point` (see the projector's
    /// `fault-injection` feature).
    async fn wait_for_fail_point(&self, part: Part, fail_point: &str) -> Result<()> {
        let needle = format!("fail-point {fail_point} reached");
        eventually(&format!("{} to reach fail-point {fail_point}", part.name()), Duration::from_secs(60), || async {
            self.log_contains(part.name(), &needle)
        })
        .await
    }
}

/// A transaction opened before the load holds the publisher's horizon; it writes an event of
/// its own (a stock adjustment of a product made for it) and commits after everything else.
/// The lag must show (metrics and `catalogctl status`), and once it commits, publishing must
/// catch up and that event must arrive: on the topic and in the read model.
fn long_transaction(backends: &Backends) -> Result<Outcome> {
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(backends, "long_transaction").await?;
        let late = rig.product_for_the_late_event(&token).await?;
        let mut long = rig.pool.begin().await?;
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut *long).await?;
        let load = Load::start(token);
        let metrics_url = format!("http://{}/metrics", PORTS.projector);
        let stalled = Arc::new(Mutex::new(0.0));
        eventually_ok("the stall shows in publisher_lag_events", Duration::from_secs(20), || {
            let (url, stalled) = (metrics_url.clone(), stalled.clone());
            async move {
                let lag = metric(&url, "publisher_lag_events").await?;
                *stalled.lock().unwrap() = lag;
                Ok(lag >= 10.0)
            }
        })
        .await?;
        let stalled = *stalled.lock().unwrap();
        let topic = rig.topic();
        let status = catalogctl(&rig.system.url)
            .args(["--kafka-topic", &topic, "--kafka-dlq-topic", &format!("{topic}.dlq"), "--group", &rig.group()])
            .args(["status", "--json"])
            .env("KAFKA_BROKERS", rig.system.brokers())
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
        // The late event: written in the long transaction, under its old transaction id.
        let (event_id, version): (String, i64) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT aggregate_type, aggregate_id, sequence + 1, event_type, event_version,
                    json_build_object('ProductStockAdjusted', json_build_object(
                        'delta', 1, 'reason', 'late commit',
                        'on_hand', (payload -> 'ProductStockAdjusted' ->> 'on_hand')::bigint + 1)),
                    metadata
               FROM events WHERE aggregate_type = 'Product' AND aggregate_id = $1
              ORDER BY sequence DESC LIMIT 1
             RETURNING event_id::text, sequence",
        )
        .bind(&late)
        .fetch_one(&mut *long)
        .await
        .context("writing the late event")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        long.commit().await?;
        eventually_ok("publishing catches up", Duration::from_secs(20), || async {
            Ok(metric(&metrics_url, "publisher_lag_events").await? < 5.0)
        })
        .await?;
        let pool = rig.pool.clone();
        eventually("the late event reaches the read model", Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, i64>("SELECT version FROM products WHERE id::text = $1")
                .bind(&late)
                .fetch_one(&pool)
                .await
                .is_ok_and(|v| v >= version)
        })
        .await?;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        let on_topic = read_topic(rig.system.brokers(), &topic).await?;
        ensure!(on_topic.ids.contains(&event_id), "the late event {event_id} is not on the topic");
        Ok(Outcome::Pass(format!(
            "lag reached {stalled:.0} events while held, then caught up; the event committed last arrived (topic and read model at version {version}); {summary}"
        )))
    })
}

impl Rig {
    /// A product, created and adjusted once through the API and projected, whose next event
    /// the long transaction writes (nothing else touches it).
    async fn product_for_the_late_event(&self, token: &str) -> Result<String> {
        let client = reqwest::Client::new();
        let created: serde_json::Value = client
            .post(format!("http://{}/api/v1/products", PORTS.command_api))
            .bearer_auth(token)
            .json(
                &serde_json::json!({"name": "Late", "price": "1.00", "currency": "EUR", "sku": "LATE-1", "on_hand": 5}),
            )
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"].as_str().context("no product id")?.to_owned();
        client
            .post(format!("http://{}/api/v1/products/{id}/stock-adjustments", PORTS.command_api))
            .bearer_auth(token)
            .json(&serde_json::json!({"delta": 1, "reason": "before the long transaction"}))
            .send()
            .await?
            .error_for_status()?;
        Ok(id)
    }
}

/// The scenario pauses a broker of its own (`Ports::FAULTS.broker`), never the shared one; a
/// broker that cannot be started there is a failure.
fn broker_pause(backends: &Backends) -> Result<Outcome> {
    let addr = PORTS.broker.context("the fault suite's row has a broker port")?;
    let broker = PrivateBroker::start(addr, "faults")?;
    let own = Backends { database_url: backends.database_url.clone(), kafka_brokers: addr.to_owned() };
    let pid = broker.pid();
    runtime()?.block_on(async {
        let (mut rig, token) = Rig::full(&own, "broker_pause").await?;
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
        drop(rig);
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

/// The sum of every sample of metric `name` on the Prometheus page at `url`. A page that
/// cannot be read, or that has no sample of `name`, is an error: never a 0 that could pass.
async fn metric(url: &str, name: &str) -> Result<f64> {
    let response = reqwest::get(url).await.with_context(|| format!("reading {url}"))?.error_for_status()?;
    let text = response.text().await.with_context(|| format!("reading {url}"))?;
    samples(&text, name).with_context(|| format!("reading {url}"))
}

/// The sum of every sample of metric `name` on a Prometheus page; an error when there is none
/// or one cannot be parsed.
pub(super) fn samples(page: &str, name: &str) -> Result<f64> {
    let samples: Vec<f64> = page
        .lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .with_context(|| format!("unreadable sample {line:?}"))
        })
        .collect::<Result<_>>()?;
    ensure!(!samples.is_empty(), "no sample of {name}");
    Ok(samples.iter().sum())
}

/// The projectors of the scale-out scenario: names and addresses.
const SCALE_OUT_PROJECTORS: [&str; 3] = ["projector-1", "projector-2", "projector-3"];

/// Two command-apis, two query-apis and three projectors (`--role all`: one publisher leads,
/// the others stand by; the consumer group spreads the partitions) on one database and topic,
/// under load spread over both APIs. The leading publisher and another projector are killed
/// with `kill -9` at once: the survivor must take over publishing within 10 s (measured from the
/// kill to the checkpoint's next move), nothing is lost (the topic and `verify`) or applied
/// twice (`verify`, the version watch), and both query-apis' caches stay fresh: a product read
/// on both (so both cache it), changed through the other command-api, is seen at its new
/// version by a `min_version` read on either, and by a plain read once the change is announced.
fn scale_out(backends: &Backends) -> Result<Outcome> {
    const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);
    let commands = [PORTS.command_api, PORTS.spare[0]];
    let queries = [PORTS.query_api, PORTS.spare[1]];
    let projectors = [PORTS.projector, PORTS.spare[2], PORTS.spare[3]];
    runtime()?.block_on(async {
        let mut rig = Rig::new(backends, "scale_out").await?;
        rig.start_process("command-api", Service::CommandApi, None, commands[0], None)?;
        rig.start_process("command-api-2", Service::CommandApi, None, commands[1], None)?;
        rig.start_process("query-api", Service::QueryApi, None, queries[0], None)?;
        rig.start_process("query-api-2", Service::QueryApi, None, queries[1], None)?;
        for (name, addr) in SCALE_OUT_PROJECTORS.into_iter().zip(projectors) {
            rig.start_process(name, Service::Projector, Some("all"), addr, None)?;
        }
        let token = rig.system.admin_token().await?;
        let load = Load::start_on(token.clone(), commands.to_vec(), queries.to_vec());
        let mut leader = None;
        eventually("a publisher to lead", Duration::from_secs(30), || {
            leader = SCALE_OUT_PROJECTORS.into_iter().find(|name| rig.log_contains(name, "publishing"));
            std::future::ready(leader.is_some())
        })
        .await?;
        let leader = leader.expect("found above");
        let consumer = SCALE_OUT_PROJECTORS.into_iter().find(|name| *name != leader).expect("three projectors");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&rig.pool).await?;
        let killed = Instant::now();
        rig.kill(leader)?;
        rig.kill(consumer)?;
        let pool = rig.pool.clone();
        let topic = rig.topic();
        eventually(&format!("a standby to take over publishing within {TAKEOVER_LIMIT:?}"), TAKEOVER_LIMIT, || async {
            sqlx::query_scalar::<_, bool>("SELECT updated_at > $2 FROM publisher_checkpoints WHERE topic = $1")
                .bind(&topic)
                .bind(killed_at)
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
        })
        .await?;
        let takeover = killed.elapsed();
        let survivor = SCALE_OUT_PROJECTORS.into_iter().find(|name| *name != leader && *name != consumer);
        let survivor = survivor.expect("three projectors");
        ensure!(rig.log_contains(survivor, "publishing"), "{survivor} took over, but its log does not say so");
        let fresh = caches_stay_fresh(&token, commands, queries).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.finish().await;
        let summary = rig.check_after_fault(&tally, Duration::from_secs(30)).await?;
        Ok(Outcome::Pass(format!(
            "{leader} led and was killed with {consumer}; {survivor} published again after {:.1} s; {fresh}; {summary}",
            takeover.as_secs_f64()
        )))
    })
}

/// Products created through one command-api, read on both query-apis (so both cache them),
/// renamed through the other command-api: a `min_version` read of the new version on either
/// query-api must see the rename, and a plain read must see it within 5 s (the cache learns of
/// the change). Run under load, right after the kills.
async fn caches_stay_fresh(token: &str, commands: [&str; 2], queries: [&str; 2]) -> Result<String> {
    const PRODUCTS: usize = 5;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let mut waits = Vec::new();
    for i in 0..PRODUCTS {
        let (create_on, change_on) = (commands[i % 2], commands[(i + 1) % 2]);
        let created: serde_json::Value = client
            .post(format!("http://{create_on}/api/v1/products"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "name": format!("Scale {i}"), "price": "2.00", "currency": "EUR",
                "sku": format!("SCALE-{i}"), "on_hand": 1, "status": "published",
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"].as_str().context("no product id")?.to_owned();
        for query in queries {
            read_at(&client, query, &id, 1, &format!("Scale {i}")).await?;
        }
        let renamed = format!("Scale {i} renamed");
        let changed: serde_json::Value = client
            .patch(format!("http://{change_on}/api/v1/products/{id}"))
            .bearer_auth(token)
            .header("if-match", "\"1\"")
            .json(&serde_json::json!({"name": renamed}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let version = changed["version"].as_i64().context("no version")?;
        for query in queries {
            let started = Instant::now();
            read_at(&client, query, &id, version, &renamed).await?;
            waits.push(started.elapsed());
            let url = format!("http://{query}/api/v1/products/{id}");
            eventually(
                &format!("{query} serving {id} at version {version} without min_version"),
                Duration::from_secs(5),
                || async {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.json::<serde_json::Value>().await.is_ok_and(|p| p["version"].as_i64() == Some(version))
                        }
                        _ => false,
                    }
                },
            )
            .await?;
        }
    }
    let longest = waits.iter().max().copied().unwrap_or_default();
    Ok(format!(
        "{PRODUCTS} products changed through the other command-api were fresh on both query-apis (longest min_version read {} ms)",
        longest.as_millis()
    ))
}

/// A `min_version` read of product `id` on `query`: retried while it answers 503 (the read
/// model is not there yet, e.g. while partitions move), failing on any answer that shows an
/// older version or another name.
async fn read_at(client: &reqwest::Client, query: &str, id: &str, version: i64, name: &str) -> Result<()> {
    let url = format!("http://{query}/api/v1/products/{id}?min_version={version}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(&url).send().await?;
        if response.status() == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        ensure!(
            status == 200 && body["version"].as_i64().is_some_and(|v| v >= version) && body["name"] == name,
            "{query} answered a min_version={version} read of {id} with {status}: {body}"
        );
        return Ok(());
    }
}
