use std::time::Duration;

use futures::future::join_all;
use uuid::Uuid;

use crate::support::{eventually, Pipeline, ProjectorProcess};

/// `products` renamed `renames` times each, concurrently; returns their ids.
async fn write_products(pipeline: &Pipeline, products: usize, renames: usize) -> Vec<Uuid> {
    join_all((0..products).map(|i| async move {
        let id = pipeline.create_product(&format!("Product {i}"), "10.00").await;
        for n in 0..renames {
            pipeline.rename_product(id, &format!("Product {i} v{}", n + 2)).await;
        }
        id
    }))
    .await
}

async fn all_at_version(pipeline: &Pipeline, ids: &[Uuid], version: i64) -> bool {
    for id in ids {
        if pipeline.product_version(*id).await != version {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_projector_killed_mid_stream_resumes_with_nothing_missing_and_nothing_applied_twice() {
    let pipeline = Pipeline::new().await;
    let mut projector = pipeline.projector("all", &["--project-batch-size", "20"]);
    let writes = write_products(&pipeline, 40, 4);
    let killer = async {
        eventually("the projector has applied some events", Duration::from_secs(60), || async {
            projector.metric("projector_events_applied_total").await >= 20.0
        })
        .await;
        projector.kill_hard().await;
    };
    let (ids, ()) = tokio::join!(writes, killer);

    let _restarted = pipeline.projector("all", &[]);
    eventually("every product reaches version 5", Duration::from_secs(90), || all_at_version(&pipeline, &ids, 5)).await;
    pipeline.assert_read_model_matches_event_store().await;
}

#[tokio::test]
async fn two_projectors_in_one_group_share_the_partitions_and_apply_every_event_once() {
    let pipeline = Pipeline::new().await;
    let one = pipeline.projector("all", &[]);
    let two = pipeline.projector("all", &[]);
    eventually("the group has split the six partitions between both", Duration::from_secs(90), || async {
        let (a, b) =
            (one.metric("projector_assigned_partitions").await, two.metric("projector_assigned_partitions").await);
        a > 0.0 && b > 0.0 && a + b == 6.0
    })
    .await;

    let ids = write_products(&pipeline, 30, 1).await;
    eventually("every product reaches version 2", Duration::from_secs(60), || all_at_version(&pipeline, &ids, 2)).await;

    let (a, b) = (applied(&one).await, applied(&two).await);
    assert_eq!(a + b, 60.0, "each of the 60 events applied exactly once ({a} + {b})");
    assert!(a > 0.0 && b > 0.0, "both projectors did work ({a}, {b})");
    pipeline.assert_read_model_matches_event_store().await;
}

async fn applied(projector: &ProjectorProcess) -> f64 {
    projector.metric("projector_events_applied_total").await + projector.metric("projector_events_healed_total").await
}

#[tokio::test]
async fn a_stopped_projector_exits_cleanly_and_its_successor_starts_after_what_it_applied() {
    let pipeline = Pipeline::new().await;
    let mut first = pipeline.projector("all", &[]);
    let ids = write_products(&pipeline, 10, 0).await;
    eventually("the products are projected", Duration::from_secs(60), || all_at_version(&pipeline, &ids, 1)).await;
    assert!(first.stop().await.success(), "SIGTERM ends the projector with exit 0");

    let second = pipeline.projector("all", &[]);
    let later = write_products(&pipeline, 1, 0).await;
    eventually("the next product is projected", Duration::from_secs(60), || all_at_version(&pipeline, &later, 1)).await;
    assert_eq!(second.metric("projector_events_skipped_total").await, 0.0, "no applied event was delivered again");
    assert_eq!(applied(&second).await, 1.0);
}
