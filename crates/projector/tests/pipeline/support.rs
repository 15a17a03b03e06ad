//! What the pipeline tests share: a database of their own, topic names of their own, the
//! projector as a real child process, and a raw Kafka client to inject or read messages.

use std::process::Stdio;
use std::time::Duration;

use domain::{Product, ProductCommand};
use event_store::CatalogEvent;
use event_store::{CommandBus, EventMetadata};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use sqlx::PgPool;
pub use test_support::eventually;
use test_support::{kafka_brokers as brokers, TestDatabase};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// A database of the test's own and topic names no other test uses.
pub struct Pipeline {
    /// Kept for its `Drop`, which drops the database.
    _database: TestDatabase,
    /// The database owner's pool, for fixtures.
    pub pool: PgPool,
    /// The database as a member of `catalog_projector`, the projector's production role.
    pub database_url: String,
    /// The database as a member of `catalog_projector` and `catalog_command`: `--role all`
    /// also runs the reservations process manager, which appends events.
    pub all_roles_url: String,
    /// The database as members of `catalog_command` and `catalog_query`, for the APIs.
    pub command_url: String,
    pub query_url: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
}

impl Pipeline {
    pub async fn new() -> Self {
        let mut database = TestDatabase::new().await;
        Self {
            pool: database.pool.clone(),
            database_url: database.login_as("catalog_projector").await,
            all_roles_url: database.login_as_member_of(&["catalog_projector", "catalog_command"]).await,
            command_url: database.login_as("catalog_command").await,
            query_url: database.login_as("catalog_query").await,
            topic: database.topic(),
            dlq_topic: database.dlq_topic(),
            group: database.group(),
            _database: database,
        }
    }

    /// Starts the projector binary with `role` and extra flags.
    pub fn projector(&self, role: &str, extra: &[&str]) -> ProjectorProcess {
        self.projector_with_env(role, extra, &[])
    }

    /// [`Self::projector`] with extra environment variables.
    pub fn projector_with_env(&self, role: &str, extra: &[&str], env: &[(&str, &str)]) -> ProjectorProcess {
        let port = free_port();
        // Each role under the database role it has in production.
        let database_url = match role {
            "reservations" => &self.command_url,
            "all" => &self.all_roles_url,
            _ => &self.database_url,
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_projector"));
        command
            .args(["--addr", &format!("127.0.0.1:{port}"), "--role", role])
            .args(["--database-url", database_url, "--kafka-brokers", &brokers()])
            .args(["--kafka-topic", &self.topic, "--kafka-dlq-topic", &self.dlq_topic, "--group", &self.group])
            .args(["--session-timeout-ms", "6000"])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("start projector");
        ProjectorProcess { child, metrics_url: format!("http://127.0.0.1:{port}/metrics") }
    }

    pub fn commands(&self) -> CommandBus {
        CommandBus::new(self.pool.clone())
    }

    /// Creates a product through the domain and the event store (as command-api would).
    pub async fn create_product(&self, name: &str, price: &str) -> Uuid {
        let id = Uuid::new_v4();
        let price: Decimal = price.parse().unwrap();
        self.commands()
            .execute::<Product>(
                &id.to_string(),
                || ProductCommand::create_basic(id, name, None, price, "EUR"),
                EventMetadata::new("test"),
                true,
            )
            .await
            .expect("create product");
        id
    }

    pub async fn rename_product(&self, id: Uuid, name: &str) {
        self.commands()
            .execute::<Product>(
                &id.to_string(),
                || ProductCommand::edit_basics(None, Some(name.into()), None, None),
                EventMetadata::new("test"),
                true,
            )
            .await
            .expect("update product");
    }

    /// (name, price, version, deleted) of a product's read-model row; the price as the read
    /// model serves it (the currency's digits).
    pub async fn product_row(&self, id: Uuid) -> Option<(String, String, i64, bool)> {
        let view = read_model::products::get(&self.pool, id).await.unwrap()?;
        Some((view.name, view.price.to_string(), view.version, view.deleted))
    }

    pub async fn product_version(&self, id: Uuid) -> i64 {
        self.product_row(id).await.map_or(0, |row| row.2)
    }

    /// Every committed event in the store, in position order, as it would be published.
    /// (Not the publisher's horizon-bounded read: another test's open transaction would hide
    /// this test's latest events from that.)
    pub async fn stored_events(&self) -> Vec<CatalogEvent> {
        event_store::reads::by_position(&self.pool, &Default::default(), 0, 100_000).await.unwrap()
    }

    /// Asserts that every product's row equals the domain's fold of its events.
    pub async fn assert_read_model_matches_event_store(&self) {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'Product'")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        for id in ids {
            let folded: Product = self.commands().load(&id).await.unwrap();
            let row = self.product_row(id.parse().unwrap()).await.unwrap_or_else(|| panic!("no row for {id}"));
            assert_eq!(
                row,
                (folded.name.clone(), folded.price.to_string(), folded.version as i64, folded.deleted),
                "product {id}"
            );
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("producer")
    }

    /// Produces `event` to the test topic as the publisher does.
    pub async fn produce(&self, producer: &FutureProducer, event: &CatalogEvent) {
        projector::publisher::produce(producer, &self.topic, event).await.expect("produce");
    }

    /// A consumer of `topic` from the beginning, in a group of its own.
    pub fn reader(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("reader-{}", Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            // If the projector has not created the topic yet, notice it within a second
            // (the default re-check is minutes away).
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        consumer
    }
}

pub struct ProjectorProcess {
    child: Child,
    metrics_url: String,
}

impl ProjectorProcess {
    /// SIGKILL: no shutdown hook runs, nothing is flushed or committed.
    pub async fn kill_hard(&mut self) {
        self.child.kill().await.expect("kill -9 projector");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("projector stops").unwrap()
    }

    /// Waits until the process has joined its group and holds partitions, i.e. it has created
    /// the topics (a test producing earlier could have the broker auto-create them otherwise).
    pub async fn wait_until_assigned(&self) {
        eventually("the projector holds partitions", Duration::from_secs(60), || async {
            self.metric("projector_assigned_partitions").await > 0.0
        })
        .await;
    }

    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// A counter or gauge from the process's `/metrics` (0 if not yet reported).
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(response) = reqwest::get(&self.metrics_url).await else { return 0.0 };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|line| line.split([' ', '{']).next() == Some(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
