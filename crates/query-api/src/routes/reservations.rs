//! `GET /api/v1/reservations/{id}`: a stock reservation, for its owner or an admin, with
//! `min_version` read-your-writes.

use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::Role;
use http_api::openapi::{BadRequest, NotFound, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::reservations::{self, ReservationView};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{integer_param, query_params, IfNoneMatch, Params};
use crate::app::AppState;
use crate::cache::Change;

/// A stock reservation as its owner sees it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "7d1c0b8e-4a4f-4f0e-9c63-2a3f1f0c9b11", "status": "held",
    "items": [{"product_id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "quantity": 2, "state": "held"}],
    "expires_at": "2026-11-30T12:15:00Z", "version": 4
}))]
pub struct Reservation {
    id: Uuid,
    /// `pending` (holding in progress), `held` (every item held), `rejected` (an item could not
    /// be held; every hold released; see `reason`), `confirmed` (the stock is taken), `released`
    /// (cancelled by its owner, or expired).
    #[schema(value_type = String, pattern = "^(pending|held|rejected|confirmed|released)$")]
    status: domain::ReservationStatus,
    items: Vec<Item>,
    /// A hold not confirmed by then is released.
    #[schema(value_type = String, format = DateTime)]
    expires_at: DateTime<Utc>,
    /// Why it was rejected: the product and the rule. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<String>,
    #[schema(minimum = 1)]
    version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Item {
    product_id: Uuid,
    #[schema(minimum = 1)]
    quantity: u64,
    /// `pending`, `held`, `rejected` (the item that could not be held), `released` or `committed`.
    #[schema(value_type = String, pattern = "^(pending|held|rejected|released|committed)$")]
    state: domain::reservation::ItemState,
}

impl From<ReservationView> for Reservation {
    fn from(view: ReservationView) -> Self {
        Self {
            id: view.id,
            status: view.status,
            items: view
                .items
                .into_iter()
                .map(|item| Item { product_id: item.product_id, quantity: item.quantity, state: item.state })
                .collect(),
            expires_at: view.expires_at,
            reason: view.reason,
            version: view.version,
        }
    }
}

/// Get a reservation.
///
/// For its owner or an admin; to anyone else it is 404, as if it did not exist. The answer
/// follows the process manager asynchronously: after `POST /api/v1/reservations` it is
/// `pending`, then `held` or `rejected`. `?min_version=N` waits (briefly) until the read model
/// holds version N or later, then 503 with `Retry-After`. `If-None-Match` answers 304.
#[utoipa::path(
    get,
    path = "/api/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "getReservation",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The reservation's id (anything else is 404)"),
        ("min_version" = Option<i64>, Query, minimum = 1, nullable = false,
         description = "Wait until the reservation is at this version or later"),
        ("If-None-Match" = Option<String>, Header, nullable = false,
         description = "Entity tags the client holds (`\"3\"`, `W/\"3\"`, a list, or `*`): 304 if one is current",
         example = "\"1\""),
    ),
    responses(
        (status = 200, description = "The reservation", body = Reservation,
         headers(("ETag" = String, description = "The reservation's version, quoted"))),
        (status = 304, description = "`If-None-Match` names the current version; no body",
         headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let params = query_params(query)?;
    let min_version = integer_param(&params, "min_version", 1, i64::MAX)?;
    let id: Uuid = path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or(ApiError::NotFound("reservation"))?;
    // Someone else's reservation is indistinguishable from none, with or without a wait: ids
    // are not secrets, but what others hold is.
    let user = principal.user_id.to_string();
    let visible = |view: &ReservationView| principal.role == Role::Admin || view.owner == user;
    let view = match min_version {
        Some(version) => wait_for(&state, id, version, visible).await?,
        None => reservations::get(&state.pool, id).await?.filter(visible),
    };
    let view = view.ok_or(ApiError::NotFound("reservation"))?;
    Ok(super::versioned(&if_none_match, view.version, &Reservation::from(view)))
}

/// The reservation once the read model holds it at `version` or later, woken by the read
/// store's announcements, for at most the configured wait; then 503. A reservation that does
/// not exist and one that is not `visible` wait alike, so the answer's timing tells them apart
/// no more than its status does.
async fn wait_for(
    state: &AppState,
    id: Uuid,
    version: i64,
    visible: impl Fn(&ReservationView) -> bool,
) -> Result<Option<ReservationView>, ApiError> {
    let deadline = Instant::now() + state.min_version_wait;
    let mut changes = state.products.changes();
    loop {
        let current = reservations::get(&state.pool, id).await?.filter(&visible);
        if current.as_ref().is_some_and(|view| view.version >= version) {
            return Ok(current);
        }
        loop {
            match tokio::time::timeout_at(deadline.into(), changes.recv()).await {
                Ok(Ok(Change::Reservation { id: changed, version: reached }))
                    if changed == id && reached >= version =>
                {
                    break
                }
                Ok(Ok(Change::Resync) | Err(RecvError::Lagged(_))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Closed)) | Err(_) => {
                    return Err(ApiError::Unavailable {
                        reason: format!("the read model has not reached version {version} of this reservation yet"),
                        retry_after_secs: 1,
                    })
                }
            }
        }
    }
}
