//! How the command bus appends: a command's events and the snapshot they complete are stored
//! together, and the publisher is woken after the commit, not inside it.

use std::time::Duration;

use chrono::Utc;
use domain::{Reservation, ReservationCommand};
use event_store::{CommandBus, EventMetadata};
use sqlx::postgres::{PgListener, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::spawn_app_with;

const CHANNEL: &str = "catalog_events_appended";

async fn run(bus: &CommandBus, id: Uuid, command: ReservationCommand) -> Option<u64> {
    bus.execute::<Reservation>(&id.to_string(), || command.clone(), EventMetadata::new("test"), false).await.unwrap()
}

/// The last hold of a reservation records two events (the item held, then the reservation
/// held). When they pass a snapshot point, the snapshot holds both: loading from it gives what
/// replaying every event gives, and the snapshot's last sequence is the command's last event.
#[tokio::test]
async fn a_command_whose_events_pass_a_snapshot_point_is_snapshotted_with_all_of_them() {
    let app = spawn_app_with(&[]).await;
    let bus = CommandBus::new(app.pool.clone()).with_snapshot_every(2);
    let (id, items) = (Uuid::new_v4(), [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()]);
    let place = ReservationCommand::Place {
        id,
        owner: "owner".into(),
        items: items.iter().map(|item| (*item, 1)).collect(),
        ttl_seconds: None,
        now: Utc::now(),
    };
    assert_eq!(run(&bus, id, place).await, Some(1));
    assert_eq!(run(&bus, id, ReservationCommand::RecordHold { product_id: items[0] }).await, Some(2));
    assert_eq!(run(&bus, id, ReservationCommand::RecordHold { product_id: items[1] }).await, Some(3));
    // From version 3, two events: 4 is a snapshot point, 5 the command's last event.
    assert_eq!(run(&bus, id, ReservationCommand::RecordHold { product_id: items[2] }).await, Some(5));

    let snapshot: (i64, i64) =
        sqlx::query_as("SELECT last_sequence, current_snapshot FROM snapshots WHERE aggregate_id = $1")
            .bind(id.to_string())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(snapshot, (5, 2), "the snapshot taken at 2, moved on to cover both events of the last command");
    let from_snapshot = bus.load::<Reservation>(&id.to_string()).await.unwrap();
    let replay = CommandBus::new(app.pool.clone()).with_snapshot_every(0);
    assert_eq!(from_snapshot, replay.load::<Reservation>(&id.to_string()).await.unwrap());
}

/// A command's append does not notify inside its transaction (that would serialise commits);
/// the bus notifies right after it. Any other writer's insert still notifies from the trigger.
#[tokio::test]
async fn the_publisher_is_woken_after_every_append() {
    let app = spawn_app_with(&[]).await;
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen(CHANNEL).await.unwrap();
    let bus = CommandBus::new(app.pool.clone());
    let id = Uuid::new_v4();
    run(&bus, id, place(id)).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(woken.is_ok_and(|n| n.is_ok()), "no wake-up after the command's append");

    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Test', 'other-writer', 1, 'Tested', '1.0', '{}', '{}')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(woken.is_ok_and(|n| n.is_ok()), "no wake-up after another writer's insert");
}

/// The deferred wake-up is the append statement's own: it does not leak into the next
/// transaction on the same connection, whose inserts notify from the trigger again.
#[tokio::test]
async fn the_append_statement_marks_only_its_own_transaction() {
    let app = spawn_app_with(&[]).await;
    // One connection: the check below runs where the append ran.
    let pool =
        PgPoolOptions::new().max_connections(1).connect_with((*app.pool.connect_options()).clone()).await.unwrap();
    let bus = CommandBus::new(pool.clone());
    let id = Uuid::new_v4();
    run(&bus, id, place(id)).await;
    let mark: Option<String> =
        sqlx::query_scalar("SELECT current_setting('catalog.append_wakeup', true)").fetch_one(&pool).await.unwrap();
    assert!(mark.unwrap_or_default().is_empty(), "the mark outlived the append statement");
}

/// A one-item reservation: any command that appends will do.
fn place(id: Uuid) -> ReservationCommand {
    ReservationCommand::Place {
        id,
        owner: "owner".into(),
        items: vec![(Uuid::new_v4(), 1)],
        ttl_seconds: None,
        now: Utc::now(),
    }
}
