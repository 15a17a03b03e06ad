//! The catalog's events (categories, products with SKU, currency, status, categories,
//! attributes, images and stock) through the whole pipeline: event store, publisher, Kafka,
//! projector, and every read model they feed.

use std::collections::BTreeMap;
use std::time::Duration;

use domain::{Category, CategoryCommand, Product, ProductCommand, ProductImage, ProductStatus};
use event_store::EventMetadata;
use read_model::categories::{self, Categories};
use read_model::history::{self, History};
use read_model::products::{self, Products};
use read_model::projection::ReadModel;
use read_model::users::Users;
use read_model::verify;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::support::{eventually, Pipeline};

async fn verify_all(pipeline: &Pipeline) {
    let settle = Duration::from_secs(5);
    let mut differences = verify::verify::<Products>(&pipeline.pool, settle).await.unwrap();
    differences.extend(verify::verify::<History>(&pipeline.pool, settle).await.unwrap());
    differences.extend(verify::verify::<Categories>(&pipeline.pool, settle).await.unwrap());
    differences.extend(verify::verify::<Users>(&pipeline.pool, settle).await.unwrap());
    assert!(differences.is_empty(), "{differences:#?}");
}

async fn wait_for<M: ReadModel>(pipeline: &Pipeline, id: Uuid, version: i64) {
    eventually(&format!("{} {id} reaches version {version}", M::TABLE), Duration::from_secs(60), || async {
        M::load(&pipeline.pool, &[id]).await.unwrap().get(&id).map(M::version) == Some(version)
    })
    .await;
}

#[tokio::test]
async fn categories_and_products_with_every_new_field_reach_their_read_models_through_kafka() {
    let pipeline = Pipeline::new().await;
    let _projector = pipeline.projector("all", &[]);
    let commands = pipeline.commands();
    let metadata = || EventMetadata::new("admin-1");

    let lighting = Uuid::new_v4();
    let lamps = Uuid::new_v4();
    let tree = [(lighting, "Lighting", "lighting", None), (lamps, "Lamps", "lamps", Some(lighting))];
    for (id, name, slug, parent_id) in tree {
        let create =
            || CategoryCommand::Create { id, name: name.into(), slug: slug.into(), parent_id, description: None };
        commands.execute::<Category>(&id.to_string(), create, metadata(), true).await.expect("create category");
    }

    let id = Uuid::new_v4();
    let price: Decimal = "1.500".parse().unwrap();
    let attributes = BTreeMap::from([("colour".to_owned(), "brass".to_owned())]);
    let images = vec![ProductImage { url: "https://img.example/lamp.png".into(), alt: Some("A lamp".into()) }];
    let create = || ProductCommand::Create {
        id,
        name: "Lamp".into(),
        description: Some("Brass".into()),
        price,
        currency: "BHD".into(),
        sku: Some("LAMP-1".into()),
        status: Some(ProductStatus::Draft),
        category_ids: vec![lamps],
        attributes: attributes.clone(),
        images: images.clone(),
        on_hand: 4,
        allow_http_images: false,
    };
    commands.execute::<Product>(&id.to_string(), create, metadata(), true).await.expect("create product");
    let adjust = || ProductCommand::AdjustStock { delta: -3, reason: "sold".into(), expected_version: None };
    commands.execute::<Product>(&id.to_string(), adjust, metadata(), true).await.expect("adjust stock");
    let update = |status: Option<ProductStatus>, currency: Option<&str>| ProductCommand::Update {
        expected_version: None,
        name: None,
        description: None,
        price: None,
        currency: currency.map(str::to_owned),
        sku: None,
        status,
        category_ids: None,
        attributes: None,
        images: None,
        allow_http_images: false,
    };
    let publish = || update(Some(ProductStatus::Published), None);
    commands.execute::<Product>(&id.to_string(), publish, metadata(), true).await.expect("publish");
    let in_euros = || update(None, Some("EUR"));
    commands.execute::<Product>(&id.to_string(), in_euros, metadata(), true).await.expect("change currency");
    let rename = || CategoryCommand::Update {
        expected_version: None,
        name: Some("Lamps and lanterns".into()),
        slug: None,
        description: None,
        parent: Some(None),
    };
    commands.execute::<Category>(&lamps.to_string(), rename, metadata(), true).await.expect("rename and move");

    wait_for::<Products>(&pipeline, id, 4).await;
    wait_for::<History>(&pipeline, id, 4).await;
    wait_for::<Categories>(&pipeline, lamps, 2).await;

    let product = products::get(&pipeline.pool, id).await.unwrap().unwrap();
    assert_eq!((product.price.to_string().as_str(), product.currency.as_str()), ("1.50", "EUR"));
    assert_eq!((product.sku.as_deref(), product.on_hand), (Some("LAMP-1"), 1));
    assert_eq!(product.status, ProductStatus::Published);
    assert_eq!(product.category_ids, vec![lamps]);
    assert_eq!((&product.attributes, &product.images), (&attributes, &images));
    assert_eq!(json!(product.price), json!("1.50"));

    let category = categories::get(&pipeline.pool, lamps).await.unwrap().unwrap();
    assert_eq!((category.name.as_str(), category.parent_id, category.version), ("Lamps and lanterns", None, 2));
    let summaries = categories::summaries(&pipeline.pool, &product.category_ids).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!((summaries[0].name.as_str(), summaries[0].slug.as_str()), ("Lamps and lanterns", "lamps"));
    let counts = categories::product_counts(&pipeline.pool).await.unwrap();
    assert_eq!((counts.get(&lamps), counts.get(&lighting)), (Some(&1), None));
    let live: Vec<Uuid> = categories::all_live(&pipeline.pool).await.unwrap().iter().map(|c| c.id).collect();
    assert_eq!(live.len(), 2);

    let entries = history::page(&pipeline.pool, id, 10, None).await.unwrap();
    let summary: Vec<(i64, &str, Option<&str>)> =
        entries.iter().map(|e| (e.version, e.r#type.as_str(), e.actor.as_deref())).collect();
    assert_eq!(
        summary,
        [
            (4, "ProductUpdated", Some("admin-1")),
            (3, "ProductUpdated", Some("admin-1")),
            (2, "ProductStockAdjusted", Some("admin-1")),
            (1, "ProductCreated", Some("admin-1"))
        ]
    );
    let currency: Vec<(&str, &serde_json::Value, &serde_json::Value)> =
        entries[0].changes.iter().map(|c| (c.field.as_str(), &c.from, &c.to)).collect();
    assert_eq!(currency, [("currency", &json!("BHD"), &json!("EUR")), ("price", &json!("1.500"), &json!("1.50"))]);
    let status = &entries[1].changes;
    assert_eq!((status.len(), status[0].field.as_str()), (1, "status"));
    assert_eq!((&status[0].from, &status[0].to), (&json!("draft"), &json!("published")));
    assert_eq!(entries[2].changes[0].field, "on_hand");
    assert_eq!(history::page(&pipeline.pool, id, 1, Some(3)).await.unwrap()[0].version, 2);

    let at_two = history::at_version(&pipeline.pool, id, 2).await.unwrap().unwrap();
    assert_eq!((at_two.status, at_two.on_hand, at_two.version), (ProductStatus::Draft, 1, 2));
    let now = history::as_of(&pipeline.pool, id, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(now, product);
    let before = entries[3].at - chrono::Duration::microseconds(1);
    assert_eq!(history::as_of(&pipeline.pool, id, before).await.unwrap(), None);

    // Deleting leaves tombstones everywhere, and history shows the deleted state.
    let delete = || ProductCommand::Delete { expected_version: None };
    commands.execute::<Product>(&id.to_string(), delete, metadata(), true).await.expect("delete");
    wait_for::<History>(&pipeline, id, 5).await;
    wait_for::<Products>(&pipeline, id, 5).await;
    assert!(history::as_of(&pipeline.pool, id, chrono::Utc::now()).await.unwrap().unwrap().deleted);
    assert!(categories::product_counts(&pipeline.pool).await.unwrap().is_empty());

    assert_time_travel_matches_the_event_store(&pipeline, id).await;
    verify_all(&pipeline).await;
    pipeline.assert_read_model_matches_event_store().await;
}

/// At every version, at every instant an event was recorded and just before it, the history
/// gives what folding the event store's events up to there gives.
async fn assert_time_travel_matches_the_event_store(pipeline: &Pipeline, id: Uuid) {
    let events =
        event_store::reads::aggregate_history(&pipeline.pool, "Product", &id.to_string(), 0, i64::MAX).await.unwrap();
    let fold_until = |until: &dyn Fn(&event_store::CatalogEvent) -> bool| {
        let mut view = None;
        for event in events.iter().take_while(|e| until(e)) {
            view = Some(products::apply(view, event).unwrap());
        }
        view
    };
    for event in &events {
        let at_version = history::at_version(&pipeline.pool, id, event.sequence).await.unwrap();
        assert_eq!(at_version, fold_until(&|e| e.sequence <= event.sequence), "version {}", event.sequence);
        for at in [event.recorded_at, event.recorded_at - chrono::Duration::microseconds(1)] {
            let as_of = history::as_of(&pipeline.pool, id, at).await.unwrap();
            assert_eq!(as_of, fold_until(&|e| e.recorded_at <= at), "as of {at}");
        }
    }
    assert_eq!(history::at_version(&pipeline.pool, id, events.len() as i64 + 1).await.unwrap(), None);
}
