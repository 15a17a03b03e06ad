//! Kafka client settings shared by the projector and catalogctl, and topic creation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;

pub const DEFAULT_TOPIC: &str = "catalog.events";
pub const DEFAULT_DLQ_TOPIC: &str = "catalog.events.dlq";
/// The producers' default `linger.ms`. The publisher hands a whole round to the client at
/// once, so batches fill without waiting; a longer linger only delays every round's first
/// send (the broker hop measured 7.8 ms at 5 ms).
pub const DEFAULT_LINGER_MS: u32 = 1;

#[derive(Debug, Clone, Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// The topic events are published to and projected from.
    #[arg(long, env = "KAFKA_TOPIC", default_value = DEFAULT_TOPIC)]
    pub kafka_topic: String,

    /// Where events that cannot be projected go, with the reason.
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = DEFAULT_DLQ_TOPIC)]
    pub kafka_dlq_topic: String,

    /// Partitions of the topics when they are created (they are never resized).
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub kafka_topic_partitions: i32,

    /// Replication factor of the topics when they are created; use 3 on a production cluster.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: i32,

    /// How long a produced message may wait for the broker's acknowledgement before the send
    /// fails (and the publisher retries the batch from its checkpoint).
    #[arg(long, env = "KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 30_000)]
    pub kafka_message_timeout_ms: u32,

    /// How long the producer waits for more messages before sending a partly filled batch
    /// (librdkafka's `linger.ms`): more latency for fewer, larger requests.
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = DEFAULT_LINGER_MS)]
    pub kafka_linger_ms: u32,
}

impl KafkaSettings {
    /// Settings every client gets: the brokers, and a client id naming the program.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.kafka_brokers).set("client.id", client_id);
        config
    }

    /// An idempotent producer waiting for all in-sync replicas: retries never duplicate or
    /// reorder within a partition. librdkafka does not enable idempotence by default.
    pub fn producer(&self, client_id: &str) -> anyhow::Result<FutureProducer> {
        Ok(self
            .client_config(client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.kafka_linger_ms.to_string())
            .set("message.timeout.ms", self.kafka_message_timeout_ms.to_string())
            .create()?)
    }

    /// Creates the event and dead-letter topics if they do not exist yet.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config("catalog-admin").create()?;
        let replication = || TopicReplication::Fixed(self.kafka_replication_factor);
        let topics = [
            NewTopic::new(&self.kafka_topic, self.kafka_topic_partitions, replication()),
            NewTopic::new(&self.kafka_dlq_topic, self.kafka_topic_partitions, replication()),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

/// Whether the brokers answer a metadata request within `timeout`, for `/ready`.
pub async fn ping(producer: &FutureProducer, timeout: Duration) -> Result<(), String> {
    use rdkafka::producer::Producer;
    let client = producer.clone();
    tokio::task::spawn_blocking(move || client.client().fetch_metadata(None, timeout).map(|_| ()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("broker unreachable: {e}"))
}

/// An idempotent producer that is replaced when it can no longer deliver. After messages time
/// out (the broker was unreachable longer than `KAFKA_MESSAGE_TIMEOUT_MS`), librdkafka's
/// idempotent producer bumps its epoch, and a broker may then fence it for good (seen with
/// tansu: every later send fails with `ProducerFenced`); librdkafka also has a fatal state from
/// which a producer never returns. A new producer gets a new producer id; what the old one may
/// have delivered is delivered again, which the projector's version rule skips.
#[derive(Clone)]
pub struct RenewableProducer {
    settings: KafkaSettings,
    client_id: String,
    current: Arc<Mutex<FutureProducer>>,
}

impl RenewableProducer {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> anyhow::Result<Self> {
        let producer = settings.producer(client_id)?;
        Ok(Self {
            settings: settings.clone(),
            client_id: client_id.to_owned(),
            current: Arc::new(Mutex::new(producer)),
        })
    }

    /// The producer to send with now (a cheap handle).
    pub fn get(&self) -> FutureProducer {
        self.current.lock().expect("producer lock").clone()
    }

    /// After a failed send: replaces the producer if `error` (anywhere in its chain) says it
    /// is fenced or timed out, or librdkafka reports it in its fatal state. The old one is
    /// dropped off the async runtime (dropping flushes, which may block).
    pub fn recover(&self, error: &anyhow::Error) {
        let kafka_error = error.chain().find_map(|e| e.downcast_ref::<KafkaError>());
        let code = kafka_error.and_then(KafkaError::rdkafka_error_code);
        let broken_by_error = matches!(
            code,
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::MessageTimedOut
                    | RDKafkaErrorCode::Fatal
            )
        );
        let mut current = self.current.lock().expect("producer lock");
        let fatal = current.client().fatal_error();
        if !broken_by_error && fatal.is_none() {
            return;
        }
        match self.settings.producer(&self.client_id) {
            Ok(fresh) => {
                tracing::warn!(?code, ?fatal, "replacing the Kafka producer");
                metrics::counter!("kafka_producer_renewals_total").increment(1);
                let old = std::mem::replace(&mut *current, fresh);
                std::thread::spawn(move || drop(old));
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot create a new Kafka producer"),
        }
    }
}
