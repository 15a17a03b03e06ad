//! Commands through the real event store (`event_store::CommandBus` on the test's database),
//! and the stored events projected the way the projector does: for tests that compare the API
//! with the events themselves.

use domain::{Category, CategoryCommand, Product, ProductCommand, ProductError, ProductEvent};
use event_store::{CatalogEvent, CommandBus, CommandError, EventMetadata};
use uuid::Uuid;

use crate::helpers::TestApp;

pub struct Store<'a> {
    app: &'a TestApp,
    bus: CommandBus,
}

impl<'a> Store<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self { app, bus: CommandBus::new(app.pool.clone()) }
    }

    /// Runs `command` on product `id` as `actor`: `true` if it recorded an event, `false` if the
    /// product refused it (other failures fail the test).
    pub async fn product(&self, id: Uuid, actor: &str, command: ProductCommand) -> bool {
        match self.bus.execute::<Product>(&id.to_string(), || command.clone(), EventMetadata::new(actor), true).await {
            Ok(version) => version.is_some(),
            Err(CommandError::Rejected(ProductError::Invalid(violations))) => {
                panic!("the test generated an invalid command {command:?}: {violations:?}")
            }
            Err(CommandError::Rejected(_)) => false,
            Err(other) => panic!("{command:?}: {other}"),
        }
    }

    pub async fn category(&self, id: Uuid, command: CategoryCommand) {
        self.bus
            .execute::<Category>(&id.to_string(), || command.clone(), EventMetadata::new("tester"), true)
            .await
            .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    }

    /// Every stored event of `aggregate_type` `id`, in order (as the event store reads them:
    /// upcast, with their recorded time and metadata).
    pub async fn events(&self, aggregate_type: &str, id: Uuid) -> Vec<CatalogEvent> {
        event_store::reads::aggregate_history(&self.app.pool, aggregate_type, &id.to_string(), 0, i64::MAX)
            .await
            .unwrap()
    }

    /// Projects every stored event of `aggregate_type` `id` into the read models and returns them.
    pub async fn project(&self, aggregate_type: &str, id: Uuid) -> Vec<CatalogEvent> {
        let events = self.events(aggregate_type, id).await;
        self.app.apply(&events).await;
        events
    }
}

/// A stored product event as the domain reads it.
pub fn product_event(event: &CatalogEvent) -> ProductEvent {
    serde_json::from_value(event.payload.clone()).expect("a product event")
}
