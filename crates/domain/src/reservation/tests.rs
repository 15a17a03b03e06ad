//! Given/when/then for every rule of the reservation and its saga steps.

use chrono::TimeZone;
use cqrs_es::test::TestFramework;

use super::*;

type ReservationTest = TestFramework<Reservation>;

fn id() -> Uuid {
    Uuid::from_u128(0xabc)
}

fn product(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

fn after(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn place(items: Vec<(Uuid, i64)>, ttl_seconds: Option<i64>) -> ReservationCommand {
    ReservationCommand::Place { id: id(), owner: "ann".into(), items, ttl_seconds, now: t0() }
}

fn item(n: u128, quantity: u64, state: ItemState) -> ReservationItem {
    ReservationItem { product_id: product(n), quantity, state }
}

/// Two products, 2 and 3 units, placed at `t0` for 60 s.
fn placed() -> ReservationEvent {
    ReservationEvent::ReservationPlaced {
        id: id(),
        owner: "ann".into(),
        items: vec![item(1, 2, ItemState::Pending), item(2, 3, ItemState::Pending)],
        expires_at: after(60),
    }
}

fn held() -> Vec<ReservationEvent> {
    vec![
        placed(),
        ReservationEvent::ReservationItemHeld { product_id: product(1) },
        ReservationEvent::ReservationItemHeld { product_id: product(2) },
        ReservationEvent::ReservationHeld {},
    ]
}

fn with(mut given: Vec<ReservationEvent>, more: ReservationEvent) -> Vec<ReservationEvent> {
    given.push(more);
    given
}

fn codes(error: ReservationError) -> Vec<(String, String)> {
    match error {
        ReservationError::Invalid(violations) => violations.0.into_iter().map(|v| (v.field, v.code)).collect(),
        other => panic!("expected violations, got {other:?}"),
    }
}

fn fold(events: Vec<ReservationEvent>) -> Reservation {
    crate::replay(events)
}

#[test]
fn placing_records_the_items_pending_with_the_deadline() {
    ReservationTest::with(())
        .given_no_previous_events()
        .when(place(vec![(product(1), 2), (product(2), 3)], Some(60)))
        .then_expect_events(vec![placed()]);
}

#[test]
fn the_default_time_to_live_is_fifteen_minutes() {
    let events = ReservationTest::with(())
        .given_no_previous_events()
        .when(place(vec![(product(1), 1)], None))
        .inspect_result()
        .unwrap();
    assert!(matches!(&events[0], ReservationEvent::ReservationPlaced { expires_at, .. } if *expires_at == after(900)));
}

#[test]
fn placing_checks_items_quantities_and_time_to_live_at_once() {
    let error = ReservationTest::with(())
        .given_no_previous_events()
        .when(place(vec![(product(1), 0), (product(1), -1)], Some(59)))
        .inspect_result()
        .unwrap_err();
    assert_eq!(
        codes(error),
        [
            ("items[0].quantity".into(), "too_small".into()),
            ("items[1].product_id".into(), "duplicate".into()),
            ("items[1].quantity".into(), "too_small".into()),
            ("ttl_seconds".into(), "out_of_range".into()),
        ]
    );
}

#[test]
fn a_reservation_needs_one_to_fifty_items_and_a_ttl_up_to_an_hour() {
    let none = ReservationTest::with(()).given_no_previous_events().when(place(vec![], Some(3_601)));
    assert_eq!(
        codes(none.inspect_result().unwrap_err()),
        [("items".into(), "count".into()), ("ttl_seconds".into(), "out_of_range".into())]
    );
    let fifty_one = (0..51).map(|n| (product(n + 1), 1)).collect();
    let too_many = ReservationTest::with(()).given_no_previous_events().when(place(fifty_one, Some(3_600)));
    assert_eq!(codes(too_many.inspect_result().unwrap_err()), [("items".into(), "count".into())]);
    let fifty = (0..50).map(|n| (product(n + 1), 1)).collect();
    assert!(ReservationTest::with(()).given_no_previous_events().when(place(fifty, Some(60))).inspect_result().is_ok());
}

#[test]
fn placing_twice_is_refused() {
    ReservationTest::with(())
        .given(vec![placed()])
        .when(place(vec![(product(1), 1)], None))
        .then_expect_error(ReservationError::AlreadyExists(id()));
}

#[test]
fn commands_on_a_reservation_never_placed_are_not_found() {
    ReservationTest::with(())
        .given_no_previous_events()
        .when(ReservationCommand::Cancel)
        .then_expect_error(ReservationError::NotFound);
}

#[test]
fn the_last_hold_makes_the_reservation_held() {
    ReservationTest::with(())
        .given(vec![placed()])
        .when(ReservationCommand::RecordHold { product_id: product(1) })
        .then_expect_events(vec![ReservationEvent::ReservationItemHeld { product_id: product(1) }]);
    ReservationTest::with(())
        .given(vec![placed(), ReservationEvent::ReservationItemHeld { product_id: product(1) }])
        .when(ReservationCommand::RecordHold { product_id: product(2) })
        .then_expect_events(vec![
            ReservationEvent::ReservationItemHeld { product_id: product(2) },
            ReservationEvent::ReservationHeld {},
        ]);
}

#[test]
fn a_repeated_hold_records_nothing() {
    ReservationTest::with(())
        .given(vec![placed(), ReservationEvent::ReservationItemHeld { product_id: product(1) }])
        .when(ReservationCommand::RecordHold { product_id: product(1) })
        .then_expect_events(vec![]);
}

#[test]
fn a_hold_for_a_reservation_cancelled_meanwhile_is_refused_so_the_saga_releases_it() {
    let cancelled = with(vec![placed()], ReservationEvent::ReservationReleased { cause: ReleaseCause::Cancelled });
    ReservationTest::with(())
        .given(cancelled)
        .when(ReservationCommand::RecordHold { product_id: product(1) })
        .then_expect_error(ReservationError::Closed(ReservationStatus::Released));
}

#[test]
fn a_refusal_rejects_the_reservation_with_the_reason_once() {
    let rejected = ReservationEvent::ReservationRejected { product_id: product(2), reason: "only 1 available".into() };
    ReservationTest::with(())
        .given(vec![placed(), ReservationEvent::ReservationItemHeld { product_id: product(1) }])
        .when(ReservationCommand::RecordRefusal { product_id: product(2), reason: "only 1 available".into() })
        .then_expect_events(vec![rejected.clone()]);
    ReservationTest::with(())
        .given(vec![placed(), rejected])
        .when(ReservationCommand::RecordRefusal { product_id: product(1), reason: "again".into() })
        .then_expect_events(vec![]);
}

#[test]
fn confirming_a_held_reservation_before_its_deadline_takes_it() {
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::Confirm { now: after(59) })
        .then_expect_events(vec![ReservationEvent::ReservationConfirmed {}]);
}

#[test]
fn confirming_twice_is_a_no_op() {
    ReservationTest::with(())
        .given(with(held(), ReservationEvent::ReservationConfirmed {}))
        .when(ReservationCommand::Confirm { now: after(61) })
        .then_expect_events(vec![]);
}

#[test]
fn confirming_after_the_deadline_is_refused_even_before_the_expiry_is_recorded() {
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::Confirm { now: after(60) })
        .then_expect_error(ReservationError::Expired(after(60)));
    let expired = with(held(), ReservationEvent::ReservationReleased { cause: ReleaseCause::Expired });
    ReservationTest::with(())
        .given(expired)
        .when(ReservationCommand::Confirm { now: after(61) })
        .then_expect_error(ReservationError::Expired(after(60)));
}

#[test]
fn confirming_what_is_not_held_is_refused() {
    ReservationTest::with(())
        .given(vec![placed()])
        .when(ReservationCommand::Confirm { now: after(1) })
        .then_expect_error(ReservationError::NotHeld(ReservationStatus::Pending));
    let cancelled = with(held(), ReservationEvent::ReservationReleased { cause: ReleaseCause::Cancelled });
    ReservationTest::with(())
        .given(cancelled)
        .when(ReservationCommand::Confirm { now: after(1) })
        .then_expect_error(ReservationError::NotHeld(ReservationStatus::Released));
}

#[test]
fn cancelling_releases_pending_and_held_reservations_and_repeats_are_no_ops() {
    let cancelled = ReservationEvent::ReservationReleased { cause: ReleaseCause::Cancelled };
    ReservationTest::with(())
        .given(vec![placed()])
        .when(ReservationCommand::Cancel)
        .then_expect_events(vec![cancelled.clone()]);
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::Cancel)
        .then_expect_events(vec![cancelled.clone()]);
    ReservationTest::with(())
        .given(with(held(), cancelled))
        .when(ReservationCommand::Cancel)
        .then_expect_events(vec![]);
}

#[test]
fn a_confirmed_reservation_cannot_be_cancelled() {
    ReservationTest::with(())
        .given(with(held(), ReservationEvent::ReservationConfirmed {}))
        .when(ReservationCommand::Cancel)
        .then_expect_error(ReservationError::AlreadyConfirmed);
}

#[test]
fn expiry_releases_only_after_the_deadline() {
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::Expire { now: after(59) })
        .then_expect_events(vec![]);
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::Expire { now: after(60) })
        .then_expect_events(vec![ReservationEvent::ReservationReleased { cause: ReleaseCause::Expired }]);
    ReservationTest::with(())
        .given(with(held(), ReservationEvent::ReservationConfirmed {}))
        .when(ReservationCommand::Expire { now: after(61) })
        .then_expect_events(vec![]);
}

#[test]
fn releasing_and_committing_are_recorded_once_and_only_in_their_state() {
    let rejected = with(
        vec![placed(), ReservationEvent::ReservationItemHeld { product_id: product(1) }],
        ReservationEvent::ReservationRejected { product_id: product(2), reason: "x".into() },
    );
    ReservationTest::with(())
        .given(rejected.clone())
        .when(ReservationCommand::RecordReleased)
        .then_expect_events(vec![ReservationEvent::ReservationStockReleased {}]);
    ReservationTest::with(())
        .given(with(rejected, ReservationEvent::ReservationStockReleased {}))
        .when(ReservationCommand::RecordReleased)
        .then_expect_events(vec![]);
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::RecordReleased)
        .then_expect_error(ReservationError::Closed(ReservationStatus::Held));
    ReservationTest::with(())
        .given(with(held(), ReservationEvent::ReservationConfirmed {}))
        .when(ReservationCommand::RecordCommitted)
        .then_expect_events(vec![ReservationEvent::ReservationStockCommitted {}]);
    ReservationTest::with(())
        .given(held())
        .when(ReservationCommand::RecordCommitted)
        .then_expect_error(ReservationError::Closed(ReservationStatus::Held));
}

#[test]
fn the_saga_reserves_item_by_item_then_waits_for_the_deadline() {
    assert_eq!(fold(vec![placed()]).next_step(t0()), SagaStep::Reserve { product_id: product(1), quantity: 2 });
    let one = fold(vec![placed(), ReservationEvent::ReservationItemHeld { product_id: product(1) }]);
    assert_eq!(one.next_step(t0()), SagaStep::Reserve { product_id: product(2), quantity: 3 });
    assert_eq!(fold(held()).next_step(after(59)), SagaStep::WaitUntil(after(60)));
    assert_eq!(fold(held()).next_step(after(60)), SagaStep::Expire);
    assert_eq!(fold(vec![placed()]).next_step(after(60)), SagaStep::Expire);
}

#[test]
fn the_saga_releases_every_item_after_a_rejection_cancel_or_expiry_and_commits_after_a_confirmation() {
    let both = vec![product(1), product(2)];
    let rejected =
        with(vec![placed()], ReservationEvent::ReservationRejected { product_id: product(1), reason: "gone".into() });
    assert_eq!(fold(rejected.clone()).next_step(t0()), SagaStep::Release(both.clone()));
    let expired = with(held(), ReservationEvent::ReservationReleased { cause: ReleaseCause::Expired });
    assert_eq!(fold(expired.clone()).next_step(after(61)), SagaStep::Release(both.clone()));
    let confirmed = with(held(), ReservationEvent::ReservationConfirmed {});
    assert_eq!(fold(confirmed.clone()).next_step(after(61)), SagaStep::Commit(both));
    for settled in [
        with(rejected, ReservationEvent::ReservationStockReleased {}),
        with(expired, ReservationEvent::ReservationStockReleased {}),
        with(confirmed, ReservationEvent::ReservationStockCommitted {}),
    ] {
        assert_eq!(fold(settled).next_step(after(61)), SagaStep::Done);
    }
    assert_eq!(Reservation::default().next_step(t0()), SagaStep::Done);
}

#[test]
fn item_states_follow_the_saga() {
    let rejected = fold(vec![
        placed(),
        ReservationEvent::ReservationItemHeld { product_id: product(1) },
        ReservationEvent::ReservationRejected { product_id: product(2), reason: "gone".into() },
        ReservationEvent::ReservationStockReleased {},
    ]);
    assert_eq!(rejected.items.iter().map(|i| i.state).collect::<Vec<_>>(), [ItemState::Released, ItemState::Rejected]);
    assert_eq!((rejected.status, rejected.reason.as_deref()), (ReservationStatus::Rejected, Some("gone")));
    let committed = fold(with(
        with(held(), ReservationEvent::ReservationConfirmed {}),
        ReservationEvent::ReservationStockCommitted {},
    ));
    assert!(committed.items.iter().all(|i| i.state == ItemState::Committed));
    assert_eq!(committed.version, 6);
}
