//! The reservation aggregate: a hold on stock of several products at once, all or nothing.
//!
//! It is also the saga's state. The process manager (in the projector) asks [`Reservation::next_step`]
//! what to do, sends the product stock commands, and records each outcome here, so a crash at
//! any point resumes from the events: the product steps are idempotent per reservation id, and
//! the reservation only moves forward.
//!
//! ```text
//! pending --every item held--> held --confirm--> confirmed (stock committed)
//!    |  \--an item refused--> rejected (holds released)
//!    \------cancel / expiry------> released (holds released) <--cancel / expiry-- held
//! ```

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::{FieldViolation, Violations};

/// Distinct products one reservation may hold at most.
pub const MAX_ITEMS: usize = 50;
/// Shortest and longest time a hold may live unconfirmed, and the default.
pub const MIN_TTL_SECONDS: i64 = 60;
pub const MAX_TTL_SECONDS: i64 = 3_600;
pub const DEFAULT_TTL_SECONDS: i64 = 900;
/// Largest quantity of one item: what a signed 64-bit column holds.
pub const MAX_QUANTITY: i64 = i64::MAX;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    #[default]
    Pending,
    /// Every item is held.
    Held,
    /// An item could not be held; the others are released.
    Rejected,
    /// The held stock is taken.
    Confirmed,
    /// Cancelled by its owner, or expired.
    Released,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Held => "held",
            Self::Rejected => "rejected",
            Self::Confirmed => "confirmed",
            Self::Released => "released",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    #[default]
    Pending,
    Held,
    /// This item is why the reservation was rejected.
    Rejected,
    Released,
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationItem {
    pub product_id: Uuid,
    pub quantity: u64,
    pub state: ItemState,
}

/// Why a reservation ended up released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseCause {
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReservationCommand {
    /// `items`: (product, quantity) as the client sent them; `now` is the service's clock.
    Place { id: Uuid, owner: String, items: Vec<(Uuid, i64)>, ttl_seconds: Option<i64>, now: DateTime<Utc> },
    /// The process manager held `product_id`'s units.
    RecordHold { product_id: Uuid },
    /// The process manager could not hold `product_id`'s units, for `reason`.
    RecordRefusal { product_id: Uuid, reason: String },
    /// The owner takes the held stock (paid).
    Confirm { now: DateTime<Utc> },
    /// The owner gives the holds back.
    Cancel,
    /// The process manager's timer: releases a reservation not confirmed by `expires_at`.
    Expire { now: DateTime<Utc> },
    /// The process manager released every item's hold (after a rejection, cancel or expiry).
    RecordReleased,
    /// The process manager committed every item's hold (after a confirmation).
    RecordCommitted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReservationEvent {
    ReservationPlaced {
        id: Uuid,
        owner: String,
        items: Vec<ReservationItem>,
        expires_at: DateTime<Utc>,
    },
    ReservationItemHeld {
        product_id: Uuid,
    },
    /// Follows the hold of the last item, in the same command.
    ReservationHeld {},
    ReservationRejected {
        product_id: Uuid,
        reason: String,
    },
    ReservationConfirmed {},
    ReservationReleased {
        cause: ReleaseCause,
    },
    /// Every hold of a rejected or released reservation is freed.
    ReservationStockReleased {},
    /// Every hold of a confirmed reservation is taken out of stock.
    ReservationStockCommitted {},
}

impl DomainEvent for ReservationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ReservationPlaced { .. } => "ReservationPlaced",
            Self::ReservationItemHeld { .. } => "ReservationItemHeld",
            Self::ReservationHeld { .. } => "ReservationHeld",
            Self::ReservationRejected { .. } => "ReservationRejected",
            Self::ReservationConfirmed { .. } => "ReservationConfirmed",
            Self::ReservationReleased { .. } => "ReservationReleased",
            Self::ReservationStockReleased { .. } => "ReservationStockReleased",
            Self::ReservationStockCommitted { .. } => "ReservationStockCommitted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReservationError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("reservation {0} already exists")]
    AlreadyExists(Uuid),
    #[error("reservation not found")]
    NotFound,
    /// Confirm needs every item held.
    #[error("the reservation is {}, not held", .0.as_str())]
    NotHeld(ReservationStatus),
    #[error("the reservation expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the reservation is confirmed; its stock is taken")]
    AlreadyConfirmed,
    /// A saga step for a reservation that has moved past it (cancelled meanwhile, say).
    #[error("the reservation is {}", .0.as_str())]
    Closed(ReservationStatus),
}

/// What the process manager does next for a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaStep {
    /// Hold this item's units (then record the outcome).
    Reserve { product_id: Uuid, quantity: u64 },
    /// The deadline passed: record the expiry (then release).
    Expire,
    /// Release every item's hold (then record it).
    Release(Vec<Uuid>),
    /// Commit every item's hold (then record it).
    Commit(Vec<Uuid>),
    /// Held: nothing to do before the deadline.
    WaitUntil(DateTime<Utc>),
    /// Settled: the saga is over.
    Done,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// `None` until placed.
    pub id: Option<Uuid>,
    /// The user id of who placed it.
    pub owner: String,
    pub items: Vec<ReservationItem>,
    pub expires_at: DateTime<Utc>,
    pub status: ReservationStatus,
    /// Why it was rejected: the product and the rule.
    pub reason: Option<String>,
    pub cause: Option<ReleaseCause>,
    /// The product holds are released or committed: nothing is left for the saga to do.
    pub settled: bool,
    pub version: u64,
}

impl Reservation {
    /// The saga's next step at `now`. Pure: the process manager runs it after every event and
    /// timer, so a repeat after a crash recomputes the same step.
    pub fn next_step(&self, now: DateTime<Utc>) -> SagaStep {
        let products = || self.items.iter().map(|item| item.product_id).collect();
        match self.status {
            _ if self.id.is_none() || self.settled => SagaStep::Done,
            ReservationStatus::Pending | ReservationStatus::Held if now >= self.expires_at => SagaStep::Expire,
            ReservationStatus::Pending => {
                match self.items.iter().find(|item| item.state == ItemState::Pending) {
                    Some(item) => SagaStep::Reserve { product_id: item.product_id, quantity: item.quantity },
                    // Unreachable by the fold (the last hold makes it held); waiting is harmless.
                    None => SagaStep::WaitUntil(self.expires_at),
                }
            }
            ReservationStatus::Held => SagaStep::WaitUntil(self.expires_at),
            ReservationStatus::Rejected | ReservationStatus::Released => SagaStep::Release(products()),
            ReservationStatus::Confirmed => SagaStep::Commit(products()),
        }
    }

    fn decide(&self, command: ReservationCommand) -> Result<Vec<ReservationEvent>, ReservationError> {
        if let ReservationCommand::Place { id, owner, items, ttl_seconds, now } = command {
            if self.id.is_some() {
                return Err(ReservationError::AlreadyExists(id));
            }
            return place(id, owner, items, ttl_seconds, now);
        }
        if self.id.is_none() {
            return Err(ReservationError::NotFound);
        }
        use ReservationStatus::*;
        let events = match command {
            ReservationCommand::Place { .. } => unreachable!("handled above"),
            ReservationCommand::RecordHold { product_id } => {
                if self.status != Pending {
                    return Err(ReservationError::Closed(self.status));
                }
                let pending: Vec<&ReservationItem> =
                    self.items.iter().filter(|item| item.state == ItemState::Pending).collect();
                if !pending.iter().any(|item| item.product_id == product_id) {
                    return Ok(vec![]); // held already, or not an item: nothing to record
                }
                let mut events = vec![ReservationEvent::ReservationItemHeld { product_id }];
                if pending.len() == 1 {
                    events.push(ReservationEvent::ReservationHeld {});
                }
                events
            }
            ReservationCommand::RecordRefusal { product_id, reason } => {
                if self.status != Pending || !self.items.iter().any(|item| item.product_id == product_id) {
                    return Ok(vec![]);
                }
                vec![ReservationEvent::ReservationRejected { product_id, reason }]
            }
            ReservationCommand::Confirm { now } => match self.status {
                Confirmed => vec![],
                Held if now < self.expires_at => vec![ReservationEvent::ReservationConfirmed {}],
                Held | Pending if now >= self.expires_at => return Err(ReservationError::Expired(self.expires_at)),
                Released if self.cause == Some(ReleaseCause::Expired) => {
                    return Err(ReservationError::Expired(self.expires_at))
                }
                other => return Err(ReservationError::NotHeld(other)),
            },
            ReservationCommand::Cancel => match self.status {
                Pending | Held => vec![ReservationEvent::ReservationReleased { cause: ReleaseCause::Cancelled }],
                Rejected | Released => vec![],
                Confirmed => return Err(ReservationError::AlreadyConfirmed),
            },
            ReservationCommand::Expire { now } => match self.status {
                Pending | Held if now >= self.expires_at => {
                    vec![ReservationEvent::ReservationReleased { cause: ReleaseCause::Expired }]
                }
                _ => vec![],
            },
            ReservationCommand::RecordReleased => match self.status {
                Rejected | Released if !self.settled => vec![ReservationEvent::ReservationStockReleased {}],
                Rejected | Released => vec![],
                other => return Err(ReservationError::Closed(other)),
            },
            ReservationCommand::RecordCommitted => match self.status {
                Confirmed if !self.settled => vec![ReservationEvent::ReservationStockCommitted {}],
                Confirmed => vec![],
                other => return Err(ReservationError::Closed(other)),
            },
        };
        Ok(events)
    }
}

fn place(
    id: Uuid,
    owner: String,
    items: Vec<(Uuid, i64)>,
    ttl_seconds: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Vec<ReservationEvent>, ReservationError> {
    let mut violations = Violations::default();
    if items.is_empty() || items.len() > MAX_ITEMS {
        violations.push(FieldViolation::new("items", "count", format!("give 1 to {MAX_ITEMS} items, one per product")));
    }
    let mut seen = BTreeSet::new();
    let mut held = Vec::with_capacity(items.len());
    for (index, (product_id, quantity)) in items.into_iter().enumerate() {
        if !seen.insert(product_id) {
            violations.push(FieldViolation::new(
                &format!("items[{index}].product_id"),
                "duplicate",
                "each product may appear once; give its total quantity",
            ));
        }
        match u64::try_from(quantity) {
            Ok(quantity) if quantity >= 1 => {
                held.push(ReservationItem { product_id, quantity, state: ItemState::Pending })
            }
            _ => violations.push(FieldViolation::new(
                &format!("items[{index}].quantity"),
                "too_small",
                "quantity must be at least 1",
            )),
        }
    }
    let ttl = ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        violations.push(FieldViolation::new(
            "ttl_seconds",
            "out_of_range",
            format!("ttl_seconds must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"),
        ));
    }
    violations.into_result().map_err(ReservationError::Invalid)?;
    // Microseconds: what Postgres keeps, so the read model holds exactly the deadline decided here.
    let expires_at = (now + Duration::seconds(ttl)).trunc_subsecs(6);
    Ok(vec![ReservationEvent::ReservationPlaced { id, owner, items: held, expires_at }])
}

impl Aggregate for Reservation {
    const TYPE: &'static str = "Reservation";
    type Command = ReservationCommand;
    type Event = ReservationEvent;
    type Error = ReservationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        let set_items = |items: &mut Vec<ReservationItem>, from: &[ItemState], to: ItemState| {
            for item in items.iter_mut().filter(|item| from.contains(&item.state)) {
                item.state = to;
            }
        };
        match event {
            ReservationEvent::ReservationPlaced { id, owner, items, expires_at } => {
                self.id = Some(id);
                self.owner = owner;
                self.items = items;
                self.expires_at = expires_at;
                self.status = ReservationStatus::Pending;
            }
            ReservationEvent::ReservationItemHeld { product_id } => {
                for item in self.items.iter_mut().filter(|item| item.product_id == product_id) {
                    item.state = ItemState::Held;
                }
            }
            ReservationEvent::ReservationHeld {} => self.status = ReservationStatus::Held,
            ReservationEvent::ReservationRejected { product_id, reason } => {
                for item in self.items.iter_mut().filter(|item| item.product_id == product_id) {
                    item.state = ItemState::Rejected;
                }
                self.status = ReservationStatus::Rejected;
                self.reason = Some(reason);
            }
            ReservationEvent::ReservationConfirmed {} => self.status = ReservationStatus::Confirmed,
            ReservationEvent::ReservationReleased { cause } => {
                self.status = ReservationStatus::Released;
                self.cause = Some(cause);
            }
            ReservationEvent::ReservationStockReleased {} => {
                set_items(&mut self.items, &[ItemState::Pending, ItemState::Held], ItemState::Released);
                self.settled = true;
            }
            ReservationEvent::ReservationStockCommitted {} => {
                set_items(&mut self.items, &[ItemState::Held], ItemState::Committed);
                self.settled = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
