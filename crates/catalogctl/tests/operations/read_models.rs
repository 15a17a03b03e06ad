use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::{eventually, stderr, stdout, System};

#[tokio::test]
async fn a_rebuild_under_write_and_read_load_loses_no_write_fails_no_read_and_verifies() {
    let mut system = System::new().await;
    system.fill_store(5_000).await;
    system.start_projector().await;
    let query_api = system.start_query_api().await;
    let known = system.create_product("Known").await;
    system.wait_until_projected().await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = &stop;
        let system = &system;
        async move {
            let mut written = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = system.create_product("Written during the rebuild").await;
                system.rename_product(id, "Renamed during the rebuild").await;
                written.push(id);
            }
            written
        }
    };
    let reader = {
        let (stop, reads) = (stop.clone(), reads.clone());
        let client = reqwest::Client::new();
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for url in
                    [format!("{query_api}/api/v1/products/{known}"), format!("{query_api}/api/v1/products?limit=100")]
                {
                    match client.get(&url).send().await {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(format!("{url}: {}", response.status())),
                        Err(error) => failures.push(format!("{url}: {error}")),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures
        }
    };
    let rebuild = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let output = system.catalogctl(&["rebuild", "all"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        output
    };
    let (written, failures, output) = tokio::join!(writer, reader, rebuild);

    assert!(output.status.success(), "rebuild failed: {}", stderr(&output));
    for table in ["products", "product_history", "categories", "users"] {
        assert!(stdout(&output).contains(&format!("{table}: rebuilt from")), "{}", stdout(&output));
    }
    assert!(failures.is_empty(), "reads failed during the rebuild: {failures:?}");
    assert!(reads.load(Ordering::Relaxed) > 10, "the reader kept reading");
    assert!(!written.is_empty(), "the writer kept writing");

    system.wait_until_projected().await;
    for id in &written {
        assert_eq!(system.product_version(*id).await, 2, "a write during the rebuild is in the read model");
    }
    let verify = system.catalogctl(&["verify", "--settle-seconds", "5"]).await;
    assert!(verify.status.success(), "verify after the rebuild: {}{}", stdout(&verify), stderr(&verify));
}

#[tokio::test]
async fn verify_names_a_row_changed_by_hand_and_rebuild_repairs_it() {
    let mut system = System::new().await;
    system.start_projector().await;
    let tampered = system.create_product("Lamp").await;
    let untouched = system.create_product("Desk").await;
    system.rename_product(tampered, "Floor lamp").await;
    system.wait_until_projected().await;

    let clean = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert!(clean.status.success(), "{}{}", stdout(&clean), stderr(&clean));

    sqlx::query("UPDATE products SET name = 'Changed by hand' WHERE id = $1")
        .bind(tampered)
        .execute(&system.pool)
        .await
        .unwrap();
    let dirty = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert_eq!(dirty.status.code(), Some(1), "verify exits 1 on a difference");
    let lines: Vec<serde_json::Value> =
        stdout(&dirty).lines().map(|line| serde_json::from_str(line).expect("JSON lines")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["aggregate_id"], tampered.to_string());
    assert_eq!(lines[0]["field"], "name");
    assert_eq!(lines[0]["expected"], "Floor lamp");
    assert_eq!(lines[0]["actual"], "Changed by hand");
    assert!(!stdout(&dirty).contains(&untouched.to_string()));

    let rebuild = system.catalogctl(&["rebuild", "products"]).await;
    assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    let repaired = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert!(repaired.status.success(), "{}{}", stdout(&repaired), stderr(&repaired));
    let name: String = sqlx::query_scalar("SELECT name FROM products WHERE id = $1")
        .bind(tampered)
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(name, "Floor lamp");

    // The swapped-in table is the live one in every respect: its trigger (query-api's cache
    // and min_version waits depend on it) and the migration's index and constraint names.
    assert_eq!(
        table_objects(&system, "products").await,
        [
            "products_changed",
            "products_created_at_id_idx",
            "products_name_id_idx",
            "products_on_hand_check",
            "products_pkey",
            "products_pkey",
            "products_price_id_idx",
            "products_reserved_check",
            "products_search_document_attributes_category_ids_idx",
            "products_search_document_status_attributes_category_idx",
            "products_search_text_idx",
            "products_status_check",
            "products_status_created_at_id_idx",
            "products_updated_at_id_idx",
            "products_updated_at_idx",
            "products_version_check",
        ]
    );
}

/// A table's triggers, indexes and constraints, by name.
async fn table_objects(system: &System, table: &str) -> Vec<String> {
    let mut objects: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
         UNION ALL SELECT indexname::text FROM pg_indexes WHERE tablename = $1
         UNION ALL SELECT conname::text FROM pg_constraint WHERE conrelid = $1::regclass",
    )
    .bind(table)
    .fetch_all(&system.pool)
    .await
    .unwrap();
    objects.sort();
    objects
}

#[tokio::test]
async fn verify_names_changed_categories_and_missing_history_and_rebuild_repairs_both() {
    let mut system = System::new().await;
    system.start_projector().await;
    let category = system.create_category("Lamps", "lamps").await;
    system.rename_category(category, "Lights").await;
    let product = system.create_product("Lamp").await;
    system.rename_product(product, "Floor lamp").await;
    system.wait_until_projected().await;

    let clean = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert!(clean.status.success(), "{}{}", stdout(&clean), stderr(&clean));

    sqlx::query("UPDATE categories SET name = 'Changed by hand' WHERE id = $1")
        .bind(category)
        .execute(&system.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM product_history WHERE product_id = $1 AND version = 2")
        .bind(product)
        .execute(&system.pool)
        .await
        .unwrap();
    let dirty = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert_eq!(dirty.status.code(), Some(1), "verify exits 1 on a difference");
    let lines: Vec<serde_json::Value> =
        stdout(&dirty).lines().map(|line| serde_json::from_str(line).expect("JSON lines")).collect();
    let mut found: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let text = |key: &str| l[key].as_str().unwrap().to_owned();
            (text("table"), text("aggregate_id"), text("field"))
        })
        .collect();
    found.sort();
    let (category, product) = (category.to_string(), product.to_string());
    let expected = [
        ("categories".to_owned(), category.clone(), "name".to_owned()),
        ("product_history".to_owned(), product.clone(), "state".to_owned()),
        ("product_history".to_owned(), product.clone(), "v2".to_owned()),
        ("product_history".to_owned(), product.clone(), "version".to_owned()),
    ];
    assert_eq!(found, expected, "{lines:?}");
    let name = lines.iter().find(|l| l["field"] == "name").unwrap();
    assert_eq!((&name["expected"], &name["actual"]), (&json!("Lights"), &json!("Changed by hand")));
    let missing = lines.iter().find(|l| l["field"] == "v2").unwrap();
    assert_eq!(missing["expected"]["changes"], json!([{"field": "name", "from": "Lamp", "to": "Floor lamp"}]));
    assert_eq!(missing["actual"], serde_json::Value::Null);

    for target in ["categories", "history"] {
        let rebuild = system.catalogctl(&["rebuild", target]).await;
        assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    }
    let repaired = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert!(repaired.status.success(), "{}{}", stdout(&repaired), stderr(&repaired));
    assert_eq!(system.history_table().await.len(), 2);

    assert_eq!(
        table_objects(&system, "categories").await,
        ["categories_changed", "categories_pkey", "categories_pkey", "categories_version_check"]
    );
    assert_eq!(
        table_objects(&system, "product_history").await,
        [
            "product_history_pkey",
            "product_history_pkey",
            "product_history_product_id_at_idx",
            "product_history_version_check"
        ]
    );
}

#[tokio::test]
async fn an_interrupted_rebuild_leaves_the_live_tables_serving_and_a_later_one_succeeds() {
    let system = System::new().await;
    system.fill_store(60_000).await;
    // The first rebuild fills the live table (no projector runs in this test).
    let first = system.catalogctl(&["rebuild", "products"]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let before = system.products_table().await;
    assert_eq!(before.len(), 60_000);
    system.fill_store(1).await;

    let mut interrupted = system.catalogctl_command(&["rebuild", "products"]).spawn().unwrap();
    eventually("the rebuild is writing its shadow table", Duration::from_secs(60), || async {
        let rows: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN to_regclass('products_rebuild') IS NULL THEN NULL
                         ELSE (SELECT count(*) FROM products_rebuild LIMIT 1) END",
        )
        .fetch_one(&system.pool)
        .await
        .unwrap_or(None);
        rows.is_some_and(|n| n > 0)
    })
    .await;
    let pid = interrupted.id().unwrap();
    std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    let status = interrupted.wait().await.unwrap();
    assert!(!status.success(), "the rebuild was interrupted midway, not finished");

    assert_eq!(system.products_table().await, before, "the live table is untouched");
    let second = system.catalogctl(&["rebuild", "products"]).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(system.products_table().await.len(), 60_001);
    // No projector runs here, so the history has only what a rebuild puts there.
    let history = system.catalogctl(&["rebuild", "history"]).await;
    assert!(history.status.success(), "{}", stderr(&history));
    let verify = system.catalogctl(&["verify", "--settle-seconds", "1"]).await;
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
}

#[tokio::test]
async fn the_swap_never_queues_readers_behind_a_long_read_and_retries_until_it_can_lock() {
    let system = System::new().await;
    system.fill_store(200).await;
    // A long read holds the live table (as a slow report would) for a few seconds.
    let mut long_read = system.pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM products").execute(&mut *long_read).await.unwrap();

    let rebuild = tokio::spawn({
        let command = system.catalogctl_command(&["rebuild", "products"]).output();
        async move { command.await.unwrap() }
    });
    // Meanwhile, other readers keep reading: none may wait behind the swap's lock request for
    // long (before: the swap queued for the exclusive lock without a timeout, and every reader
    // queued behind it until the long read ended).
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let read = std::time::Instant::now();
        let mut connection = system.pool.acquire().await.unwrap();
        sqlx::query("SET statement_timeout = '2s'").execute(&mut *connection).await.unwrap();
        sqlx::query("SELECT count(*) FROM products")
            .execute(&mut *connection)
            .await
            .expect("a read during the rebuild");
        slowest = slowest.max(read.elapsed());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rebuild.is_finished(), "the swap cannot happen while the long read holds the table");
    long_read.commit().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), rebuild).await.expect("the rebuild finishes").unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(slowest < Duration::from_millis(500), "a read waited {slowest:?} (of {reads})");
    let text = stdout(&output);
    let attempt: u32 = text.split("(attempt ").nth(1).and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
    assert!(attempt > 1, "the swap timed out on its lock and retried: {text}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&system.pool).await.unwrap();
    assert_eq!(rows, 200);
}
