//! A running Catalog for catalogctl to operate on: a database and topics of the test's own, the
//! projector (in-process, publish and project), and optionally query-api; catalogctl itself runs
//! as the real binary.

use std::process::Output;
use std::time::Duration;

use clap::Parser;
use domain::{Category, CategoryCommand, Product, ProductCommand};
use event_store::{CommandBus, EventMetadata};
use rust_decimal::Decimal;
use service_runtime::telemetry;
use sqlx::PgPool;
pub use test_support::eventually;
use test_support::http::{server_args, TestServer};
use test_support::{kafka_brokers, serve, TestDatabase};
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct System {
    pub db: TestDatabase,
    pub pool: PgPool,
    stops: Vec<oneshot::Sender<()>>,
    /// Told to stop when dropped.
    servers: Vec<TestServer>,
}

impl System {
    /// A migrated database, no services yet.
    pub async fn new() -> Self {
        let db = TestDatabase::new().await;
        Self { pool: db.pool.clone(), db, stops: Vec::new(), servers: Vec::new() }
    }

    /// Starts the projector (publish and project) in this process.
    pub async fn start_projector(&mut self) {
        let settings = projector::Settings::try_parse_from([
            "projector",
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            &self.db.url,
            "--kafka-brokers",
            &kafka_brokers(),
            "--kafka-topic",
            &self.db.topic(),
            "--kafka-dlq-topic",
            &self.db.dlq_topic(),
            "--group",
            &self.db.group(),
            "--session-timeout-ms",
            "6000",
            "--project-max-attempts",
            "2",
        ])
        .unwrap();
        let (stop, stopped) = oneshot::channel();
        let pool = service_runtime::database::pool(&settings.database).unwrap();
        tokio::spawn(projector::run(settings, pool, telemetry::init_metrics(), async move {
            let _ = stopped.await;
        }));
        self.stops.push(stop);
    }

    /// Starts query-api in this process; returns its base URL.
    pub async fn start_query_api(&mut self) -> String {
        let args = server_args("query-api", &self.db.url, &[]);
        let server = serve!(query_api, args).await;
        let base = server.base.clone();
        self.servers.push(server);
        base
    }

    /// Runs catalogctl against this system and returns its output.
    pub async fn catalogctl(&self, args: &[&str]) -> Output {
        self.catalogctl_command(args).output().await.expect("run catalogctl")
    }

    pub fn catalogctl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalogctl"));
        command
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env("KAFKA_BROKERS", kafka_brokers())
            .env("KAFKA_TOPIC", self.db.topic())
            .env("KAFKA_DLQ_TOPIC", self.db.dlq_topic())
            .env("PROJECTOR_GROUP", self.db.group())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    pub async fn create_product(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        let price: Decimal = "10.00".parse().unwrap();
        CommandBus::new(self.pool.clone())
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
        CommandBus::new(self.pool.clone())
            .execute::<Product>(
                &id.to_string(),
                || ProductCommand::edit_basics(None, Some(name.into()), None, None),
                EventMetadata::new("test"),
                true,
            )
            .await
            .expect("rename product");
    }

    pub async fn create_category(&self, name: &str, slug: &str) -> Uuid {
        let id = Uuid::new_v4();
        CommandBus::new(self.pool.clone())
            .execute::<Category>(
                &id.to_string(),
                || {
                    let (name, slug) = (name.into(), slug.into());
                    CategoryCommand::Create { id, name, slug, parent_id: None, description: None }
                },
                EventMetadata::new("test"),
                true,
            )
            .await
            .expect("create category");
        id
    }

    pub async fn rename_category(&self, id: Uuid, name: &str) {
        CommandBus::new(self.pool.clone())
            .execute::<Category>(
                &id.to_string(),
                || CategoryCommand::Update {
                    expected_version: None,
                    name: Some(name.into()),
                    slug: None,
                    description: None,
                    parent: None,
                },
                EventMetadata::new("test"),
                true,
            )
            .await
            .expect("rename category");
    }

    /// Appends `count` valid product-created events straight into the store, fast.
    pub async fn fill_store(&self, count: i64) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'Product', id::text, 1, 'ProductCreated', '1.0.0',
                    json_build_object('ProductCreated', json_build_object(
                        'id', id, 'name', 'Filler ' || n, 'description', '', 'price', '5.00')),
                    '{}'
               FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, $1) AS n) AS filler",
        )
        .bind(count)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// The whole products table, for before/after comparisons.
    pub async fn products_table(&self) -> Vec<(Uuid, String, String, i64, bool, String)> {
        sqlx::query_as("SELECT id, name, price::text, version, deleted, updated_at::text FROM products ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// The whole product history table (without the jsonb columns), for before/after comparisons.
    pub async fn history_table(&self) -> Vec<(Uuid, i64, String, String, Option<String>)> {
        sqlx::query_as("SELECT product_id, version, type, at::text, actor FROM product_history ORDER BY 1, 2")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    pub async fn product_version(&self, id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT version FROM products WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// Waits until the projector has applied every product and category event in the store to
    /// products, product history and categories.
    pub async fn wait_until_projected(&self) {
        eventually("the read models have caught up with the event store", Duration::from_secs(90), || async {
            let behind: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT aggregate_type, aggregate_id, max(sequence) AS version FROM events
                                         WHERE aggregate_type IN ('Product', 'Category')
                                         GROUP BY aggregate_type, aggregate_id) e
                  LEFT JOIN products p ON e.aggregate_type = 'Product' AND p.id::text = e.aggregate_id
                  LEFT JOIN (SELECT product_id, max(version) AS version FROM product_history GROUP BY product_id) h
                         ON e.aggregate_type = 'Product' AND h.product_id::text = e.aggregate_id
                  LEFT JOIN categories c ON e.aggregate_type = 'Category' AND c.id::text = e.aggregate_id
                  WHERE CASE e.aggregate_type
                          WHEN 'Product' THEN p.version IS DISTINCT FROM e.version
                                           OR h.version IS DISTINCT FROM e.version
                          ELSE c.version IS DISTINCT FROM e.version
                        END",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            behind == 0
        })
        .await;
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        self.servers.clear();
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
