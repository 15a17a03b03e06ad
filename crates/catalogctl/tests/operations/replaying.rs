use std::time::Duration;

use crate::support::{eventually, stderr, stdout, System};

#[tokio::test]
async fn replaying_everything_into_the_live_topic_changes_no_read_model() {
    let mut system = System::new().await;
    system.start_projector().await;
    for n in 0..5 {
        let id = system.create_product(&format!("Product {n}")).await;
        system.rename_product(id, &format!("Product {n}, renamed")).await;
    }
    system.wait_until_projected().await;
    let before = system.products_table().await;
    let history_before = system.history_table().await;
    assert_eq!(history_before.len(), 10);

    let output = system.catalogctl(&["replay", "--from-position", "0"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("replayed 10 events"), "{}", stdout(&output));

    eventually("the projector has consumed the replay", Duration::from_secs(60), || async {
        let status = system.catalogctl(&["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        // Committed offsets, not the lag: the test broker under-reports end offsets.
        let committed: i64 = status["consumer_lag"]
            .as_array()
            .map(|partitions| partitions.iter().filter_map(|p| p["committed_offset"].as_i64()).sum())
            .unwrap_or(0);
        committed == 20 // the 10 events, and the 10 replayed
    })
    .await;
    assert_eq!(system.products_table().await, before, "rows, versions and timestamps are unchanged");
    assert_eq!(system.history_table().await, history_before, "no history entry added or changed");
}

#[tokio::test]
async fn a_replay_to_another_topic_selects_by_aggregate_and_range() {
    let mut system = System::new().await;
    system.start_projector().await;
    let id = system.create_product("Lamp").await;
    system.rename_product(id, "Desk lamp").await;
    let _other = system.create_product("Chair").await;
    system.wait_until_projected().await;

    let topic = format!("{}.replay", system.db.topic());
    let output = system
        .catalogctl(&["replay", "--from-position", "0", "--aggregate-id", &id.to_string(), "--topic", &topic])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("replayed 2 events to {topic}")), "{}", stdout(&output));

    let bad = system.catalogctl(&["replay", "--from-position", "5", "--to-position", "1"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("range"), "{}", stderr(&bad));
}
