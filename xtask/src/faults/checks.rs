//! The invariants every fault scenario ends with, once the fault is over and the load has
//! stopped: the load saw no broken rule, every process still runs and is ready again, every
//! acknowledged write is stored, the read models equal the fold of the event store, no
//! read-model version ever went down, and the topic holds every event up to the publisher's
//! checkpoint.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;

use super::load::Tally;
use super::{eventually, Rig};
use crate::system::catalogctl;

/// Installs, on a fresh scenario database, a trigger on every read-model table with a version
/// that records each write lowering a row's version (a row is never deleted: deleted products
/// and categories stay as tombstones), so "no version ever went down" is checked at every
/// write rather than sampled.
pub(super) async fn watch_versions(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE faults_version_regressions
             (table_name text, id text, old_version bigint, new_version bigint, at timestamptz DEFAULT now());
         CREATE FUNCTION faults_version_regression() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.version < OLD.version THEN
                 INSERT INTO faults_version_regressions (table_name, id, old_version, new_version)
                 VALUES (TG_TABLE_NAME, OLD.id::text, OLD.version, NEW.version);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER faults_version_regression AFTER UPDATE ON products
             FOR EACH ROW EXECUTE FUNCTION faults_version_regression();
         CREATE TRIGGER faults_version_regression AFTER UPDATE ON categories
             FOR EACH ROW EXECUTE FUNCTION faults_version_regression();
         CREATE TRIGGER faults_version_regression AFTER UPDATE ON users
             FOR EACH ROW EXECUTE FUNCTION faults_version_regression();",
    )
    .execute(pool)
    .await
    .context("installing the version watch")?;
    Ok(())
}

/// What reading the topic back found.
pub(super) struct TopicReadback {
    /// Every `ce_id` on the topic, one per message (a re-published event appears twice).
    pub(super) ids: Vec<String>,
}

impl TopicReadback {
    /// Messages whose event was already on the topic: re-publications (at least once).
    pub(super) fn duplicates(&self) -> usize {
        self.ids.len() - self.ids.iter().collect::<HashSet<_>>().len()
    }
}

/// Reads `topic` from the beginning to the high watermark of every partition, with a consumer
/// of its own (no group offsets are used or committed), and returns the event id of every
/// message.
pub(super) async fn read_topic(brokers: &str, topic: &str) -> Result<TopicReadback> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic_blocking(&brokers, &topic)).await?
}

fn read_topic_blocking(brokers: &str, topic: &str) -> Result<TopicReadback> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("faults-readback-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).context("topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    // The next offset to read in each partition. The high watermarks are read again after
    // reaching them, until a second look finds nothing more: a broker may report a watermark a
    // moment behind the last message it acknowledged.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..10 {
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for partition in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
            if high > *next.get(partition).unwrap_or(&low).max(&low) {
                remaining.insert(*partition, high);
            }
        }
        if remaining.is_empty() {
            break;
        }
        while !remaining.is_empty() {
            if Instant::now() > deadline {
                bail!("reading {topic} back: partitions {:?} never reached their high watermark", remaining.keys());
            }
            let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
            let message = message?;
            let id = message
                .headers()
                .and_then(|h| h.iter().find(|header| header.key == "ce_id").and_then(|header| header.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .with_context(|| format!("a message at offset {} has no ce_id", message.offset()))?;
            ids.push(id);
            next.insert(message.partition(), message.offset() + 1);
            if remaining.get(&message.partition()).is_some_and(|high| message.offset() + 1 >= *high) {
                remaining.remove(&message.partition());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Then until the topic has been quiet for 2 s: tansu's watermarks can trail what it has
    // acknowledged, and a message past them is still on the topic.
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            if let Some(id) = message
                .headers()
                .and_then(|h| h.iter().find(|header| header.key == "ce_id").and_then(|header| header.value))
            {
                ids.push(String::from_utf8_lossy(id).into_owned());
            }
            quiet_since = Instant::now();
        }
    }
    Ok(TopicReadback { ids })
}

impl Tally {
    fn ensure_clean(&self) -> Result<()> {
        ensure!(self.violations.is_empty(), "rule violations: {:?}", &self.violations[..self.violations.len().min(5)]);
        ensure!(!self.acknowledged.is_empty(), "no write was acknowledged at all");
        Ok(())
    }
}

impl Rig {
    /// Checks every invariant after a fault; processes get `within` to be ready again. A
    /// summary for the PASS line.
    pub(super) async fn check_after_fault(&mut self, tally: &Tally, within: Duration) -> Result<String> {
        tally.ensure_clean()?;
        self.all_ready(within).await?;
        let store = self.check_store(tally).await?;
        let readback = self.check_topic().await?;
        self.check_versions_never_fell().await?;
        Ok(format!(
            "{store}; topic holds all {} events up to the checkpoint ({} re-published); no version went down",
            readback.ids.iter().collect::<HashSet<_>>().len(),
            readback.duplicates()
        ))
    }

    /// The topic holds every event up to the publisher's checkpoint: once publishing has
    /// caught up with the store, the ids read back from the topic include every event id at or
    /// before the checkpoint, and as many.
    pub(super) async fn check_topic(&self) -> Result<TopicReadback> {
        let topic = self.topic();
        // The load has stopped: the checkpoint reaches the newest event soon.
        let pool = self.pool.clone();
        eventually("the publisher's checkpoint reaches the newest event", Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT 1 FROM events e, publisher_checkpoints c
                                     WHERE c.topic = $1
                                       AND (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position))
                        AND EXISTS (SELECT 1 FROM publisher_checkpoints WHERE topic = $1)",
            )
            .bind(&topic)
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
        })
        .await?;
        let expected: Vec<String> = sqlx::query_scalar(
            "SELECT e.event_id::text FROM events e, publisher_checkpoints c
              WHERE c.topic = $1 AND (e.transaction_id, e.global_position) <= (c.transaction_id, c.global_position)",
        )
        .bind(&topic)
        .fetch_all(&self.pool)
        .await?;
        let readback = read_topic(self.system.brokers(), &topic).await?;
        let on_topic: HashSet<&String> = readback.ids.iter().collect();
        let missing: Vec<&String> = expected.iter().filter(|id| !on_topic.contains(id)).collect();
        ensure!(
            missing.is_empty(),
            "{} of the {} events up to the checkpoint are not on the topic, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(3)]
        );
        ensure!(
            on_topic.len() == expected.len(),
            "the topic holds {} distinct events, the store {} up to the checkpoint",
            on_topic.len(),
            expected.len()
        );
        Ok(readback)
    }

    /// No write during the run lowered a read-model row's version (see [`watch_versions`]).
    pub(super) async fn check_versions_never_fell(&self) -> Result<()> {
        let fell: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT table_name, id, old_version, new_version FROM faults_version_regressions LIMIT 3")
                .fetch_all(&self.pool)
                .await?;
        ensure!(fell.is_empty(), "read-model versions went down: {fell:?}");
        Ok(())
    }

    /// Every process still runs (none died or needed a restart) and answers `/ready` with 200
    /// within `within`.
    async fn all_ready(&mut self, within: Duration) -> Result<()> {
        self.system.ensure_running()?;
        for (name, addr) in &self.running {
            let url = format!("http://{addr}/ready");
            eventually(&format!("{name} ready"), within, || async {
                reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
            })
            .await?;
        }
        Ok(())
    }

    /// Every acknowledged product is in the event store, every acknowledged change reached
    /// its version there, and `catalogctl verify` finds the read models equal to its fold.
    async fn check_store(&self, tally: &Tally) -> Result<String> {
        let (acknowledged, changes) = (&tally.acknowledged, &tally.acknowledged_changes);
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
        let (ids, versions): (Vec<String>, Vec<i64>) = changes.iter().cloned().unzip();
        let lost: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT a.id, a.version, max(e.sequence)
               FROM unnest($1::text[], $2::bigint[]) AS a (id, version)
               LEFT JOIN events e ON e.aggregate_id = a.id
              GROUP BY a.id, a.version
             HAVING coalesce(max(e.sequence), 0) < a.version",
        )
        .bind(&ids)
        .bind(&versions)
        .fetch_all(&self.pool)
        .await?;
        ensure!(
            lost.is_empty(),
            "{} acknowledged changes are not in the event store, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        );
        let users: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'User' AND aggregate_id = ANY($1)",
        )
        .bind(&tally.registered)
        .fetch_one(&self.pool)
        .await?;
        ensure!(
            users as usize == tally.registered.len(),
            "{} acknowledged registrations, {users} in the event store",
            tally.registered.len()
        );
        let verify = catalogctl(&self.system.url)
            .args(["verify", "--settle-seconds", "60"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .output()?;
        ensure!(
            verify.status.success(),
            "catalogctl verify found differences: {}",
            String::from_utf8_lossy(&verify.stdout).lines().take(3).collect::<Vec<_>>().join(" | ")
        );
        Ok(format!(
            "{} creates, {} changes ({} with If-Match, {} deletes) and {} registrations acknowledged and stored, read models verified",
            acknowledged.len(),
            changes.len(),
            tally.conditional,
            tally.deleted,
            tally.registered.len()
        ))
    }
}
