//! `catalogctl dlq list` and `catalogctl dlq retry`.
//!
//! The dead-letter topic is read from its beginning to its current end without a consumer
//! group, so listing never moves anyone's offsets. A retry re-produces the original message
//! (without the dead-letter headers) to the events topic; the projector's version rule makes
//! a retry of something already applied harmless.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures::future::try_join_all;
use projector::message::DLQ_REASON;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use service_runtime::kafka::KafkaSettings;

use crate::status::partitions_of;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print every dead letter as a JSON line (id, event id, aggregate, type, reason).
    List,
    /// Re-produce dead letters to the events topic: those named by `--id` (a letter's `id` or
    /// its `event_id`), or all of them.
    Retry {
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    /// `<partition>-<offset>` in the dead-letter topic.
    id: String,
    event_id: Option<String>,
    aggregate_id: Option<String>,
    event_type: Option<String>,
    reason: Option<String>,
    source: Option<String>,
}

pub async fn run(kafka: &KafkaSettings, command: DlqCommand) -> anyhow::Result<()> {
    let producer = crate::check_broker(kafka).await?;
    let letters = read_all(kafka).await?;
    match command {
        DlqCommand::List => {
            let mut out = std::io::stdout().lock();
            for letter in &letters {
                serde_json::to_writer(&mut out, &letter.summary)?;
                writeln!(out)?;
            }
            eprintln!("{} dead letters", letters.len());
        }
        DlqCommand::Retry { ids } => {
            let chosen: Vec<&DeadLetter> = letters
                .iter()
                .filter(|l| {
                    ids.is_empty()
                        || ids.iter().any(|id| Some(id) == l.summary.event_id.as_ref() || *id == l.summary.id)
                })
                .collect();
            let unknown: Vec<&String> = ids
                .iter()
                .filter(|id| !chosen.iter().any(|l| Some(*id) == l.summary.event_id.as_ref() || **id == l.summary.id))
                .collect();
            if !unknown.is_empty() {
                anyhow::bail!("no dead letter with id {unknown:?}; `catalogctl dlq list` shows them");
            }
            try_join_all(chosen.iter().map(|letter| {
                let headers = letter
                    .headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with("catalog_dlq_"))
                    .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
                let mut record = FutureRecord::<[u8], [u8]>::to(&kafka.kafka_topic).headers(headers);
                if let Some(key) = &letter.key {
                    record = record.key(key);
                }
                if let Some(payload) = &letter.payload {
                    record = record.payload(payload);
                }
                let producer = producer.clone();
                async move { producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e) }
            }))
            .await?;
            println!("re-produced {} dead letters to {}", chosen.len(), kafka.kafka_topic);
        }
    }
    Ok(())
}

/// Every message in the dead-letter topic up to its end offsets at the time of the call.
async fn read_all(kafka: &KafkaSettings) -> anyhow::Result<Vec<DeadLetter>> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka
            .client_config("catalogctl")
            .set("group.id", "catalogctl-dlq-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let topic = kafka.kafka_dlq_topic.as_str();
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in partitions_of(&consumer, topic)? {
            let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
            if high > low {
                remaining.insert(partition, high);
                assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            }
        }
        let mut letters = Vec::new();
        if remaining.is_empty() {
            return Ok(letters);
        }
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !remaining.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "timed out reading the dead-letter topic");
            let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
            let message = message?;
            if let Some(end) = remaining.get(&message.partition()) {
                if message.offset() + 1 >= *end {
                    remaining.remove(&message.partition());
                }
            }
            let headers: Vec<(String, Vec<u8>)> = message
                .headers()
                .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec())).collect())
                .unwrap_or_default();
            let text = |name: &str| {
                headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            let summary = Summary {
                id: format!("{}-{}", message.partition(), message.offset()),
                event_id: text("ce_id"),
                aggregate_id: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                event_type: text("ce_type"),
                reason: text(DLQ_REASON),
                source: text("catalog_dlq_source"),
            };
            letters.push(DeadLetter {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
                summary,
            });
        }
        Ok(letters)
    })
    .await?
}
