//! `catalogctl import`: products from NDJSON and CSV files through the import code the API uses,
//! with a summary, a report of the failed lines and exit code 1 when any failed.

use std::path::PathBuf;

use domain::Product;
use event_store::CommandBus;
use serde_json::{json, Value};

use crate::support::{stderr, stdout, System};

/// A directory of this test's own for its files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("catalogctl-import-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn event_count(system: &System) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&system.pool).await.unwrap()
}

#[tokio::test]
async fn import_upserts_a_file_reports_failed_lines_and_fails_when_a_line_did() {
    let system = System::new().await;
    let lighting = system.create_category("Lighting", "lighting").await;
    let dir = scratch("ndjson");
    let file = dir.join("products.ndjson");
    let lines = [
        json!({"sku": "LAMP-1", "name": "Desk lamp", "price": "19.90", "category_slugs": ["lighting"], "stock": 4}),
        json!({"sku": "CHAIR-1", "name": "Chair", "price": 45}),
        json!({"sku": "TABLE-1", "name": "Table", "price": 90, "category_slugs": ["tables"]}),
    ];
    std::fs::write(&file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let path = file.to_str().unwrap();

    let output = system.catalogctl(&["import", path]).await;
    assert_eq!(output.status.code(), Some(1), "a failed line fails the run: {}", stderr(&output));
    let summary = stdout(&output);
    assert!(summary.contains("2 created, 0 updated, 0 unchanged, 1 errors"), "{summary}");
    assert!(summary.contains("products/s"), "{summary}");
    let report_path = dir.join("products.ndjson.errors.ndjson");
    assert!(summary.contains(report_path.to_str().unwrap()), "{summary}");
    let report: Vec<Value> =
        std::fs::read_to_string(&report_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(report.len(), 1);
    assert_eq!((report[0]["line"].as_u64(), report[0]["sku"].as_str()), (Some(3), Some("TABLE-1")));
    assert_eq!(report[0]["errors"][0]["code"], "unknown_category");

    let created: (String, Value) = sqlx::query_as(
        "SELECT aggregate_id, metadata::jsonb FROM events WHERE event_type = 'ProductCreated' ORDER BY sequence LIMIT 1",
    )
    .fetch_one(&system.pool)
    .await
    .unwrap();
    assert_eq!(created.1["actor"], "catalogctl");
    let products: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'ProductCreated'")
            .fetch_all(&system.pool)
            .await
            .unwrap();
    let mut lamp = None;
    for id in &products {
        let product = CommandBus::new(system.pool.clone()).load::<Product>(id).await.unwrap();
        if product.sku.as_deref() == Some("LAMP-1") {
            lamp = Some(product);
        }
    }
    let lamp = lamp.expect("LAMP-1 imported");
    assert_eq!((lamp.on_hand, lamp.category_ids.clone()), (4, vec![lighting]));

    // Again, with the bad line fixed: the others are unchanged and nothing else is written.
    let fixed = [&lines[0], &lines[1], &json!({"sku": "TABLE-1", "name": "Table", "price": 90})];
    std::fs::write(&file, fixed.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let events = event_count(&system).await;
    let output = system.catalogctl(&["import", path]).await;
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("1 created, 0 updated, 2 unchanged, 0 errors"), "{}", stdout(&output));
    assert_eq!(event_count(&system).await, events + 1);
    assert_eq!(std::fs::read_to_string(&report_path).unwrap(), "", "the report is rewritten, empty");

    // What the import wrote folds into the read models like any other events.
    let rebuild = system.catalogctl(&["rebuild", "all"]).await;
    assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    let verify = system.catalogctl(&["verify", "--settle-seconds", "0"]).await;
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&system.pool).await.unwrap();
    assert_eq!(rows, 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn import_reads_csv_by_extension_or_by_flag_and_refuses_a_bad_header() {
    let system = System::new().await;
    system.create_category("Lighting", "lighting").await;
    system.create_category("Desks", "desks").await;
    let dir = scratch("csv");
    let csv = "sku,name,price,category_slugs,attributes.colour,stock\n\
               LAMP-1,Desk lamp,19.90,lighting|desks,brass,3\n\
               CHAIR-1,Chair,45,,,\n";
    let by_extension = dir.join("products.csv");
    std::fs::write(&by_extension, csv).unwrap();
    let output = system.catalogctl(&["import", by_extension.to_str().unwrap()]).await;
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("2 created, 0 updated, 0 unchanged, 0 errors"), "{}", stdout(&output));

    let by_flag = dir.join("products.txt");
    std::fs::write(&by_flag, csv.replace("brass", "steel")).unwrap();
    let report = dir.join("report.ndjson");
    let args = ["import", by_flag.to_str().unwrap(), "--format", "csv", "--report", report.to_str().unwrap()];
    let output = system.catalogctl(&args).await;
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("0 created, 1 updated, 1 unchanged, 0 errors"), "{}", stdout(&output));
    assert!(report.exists());

    let unknown = system.catalogctl(&["import", by_flag.to_str().unwrap()]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("--format"), "{}", stderr(&unknown));

    let bad_header = dir.join("bad.csv");
    std::fs::write(&bad_header, "name,colour\nLamp,red\n").unwrap();
    let output = system.catalogctl(&["import", bad_header.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("sku column"), "{}", stderr(&output));
    assert!(stderr(&output).contains("unknown column \"colour\""), "{}", stderr(&output));
    std::fs::remove_dir_all(dir).unwrap();
}
