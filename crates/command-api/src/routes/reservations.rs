//! `POST /api/v1/reservations` (hold stock of several products, all or nothing) and its
//! confirm and cancel. The holding itself is asynchronous: the process manager (in the
//! projector) reacts to the reservation's events; the read API shows how far it got.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::reservation::{DEFAULT_TTL_SECONDS, MAX_ITEMS, MAX_TTL_SECONDS, MIN_TTL_SECONDS};
use domain::{Reservation, ReservationCommand, ReservationError, Role};
use event_store::CommandError;
use http_api::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized,
    UnprocessableEntity, UnsupportedMediaType,
};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::parse_id;
use crate::app::AppState;
use crate::extract::{ApiJson, IdempotencyKey, RequestContext};
use crate::failures::store_failure;

/// Namespace for reservation ids derived from an idempotency key (see [`create`]).
const IDEMPOTENT_RESERVATION_NAMESPACE: Uuid = Uuid::from_u128(0x7d1c_0b8e_4a4f_4f0e_9c63_2a3f_1f0c_9b11);

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "items": [{"product_id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "quantity": 2}], "ttl_seconds": 900
}))]
pub struct CreateReservation {
    /// 1 to 50 items, each product at most once.
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<RequestedItem>,
    /// How long the hold lasts unconfirmed: 60 to 3600 seconds; 900 when absent.
    #[serde(default)]
    #[schema(nullable = false, minimum = 60, maximum = 3600, default = 900)]
    ttl_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedItem {
    product_id: Uuid,
    /// At least 1.
    #[schema(minimum = 1)]
    quantity: i64,
}

/// A reservation and where it stands.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "7d1c0b8e-4a4f-4f0e-9c63-2a3f1f0c9b11", "status": "pending"}))]
pub struct ReservationState {
    id: Uuid,
    #[schema(value_type = String, pattern = "^(pending|held|rejected|confirmed|released)$")]
    status: domain::ReservationStatus,
}

/// Reserve stock (any signed-in user).
///
/// Accepted at once (202, `pending`); the process manager then holds every item or none:
/// `GET /api/v1/reservations/{id}` on the read API turns `held`, or `rejected` with the reason
/// (an unknown product, not enough available). A hold not confirmed within `ttl_seconds` is
/// released. With an `Idempotency-Key` the id is derived from the key, so a retry never
/// reserves twice. A customer may place `RESERVATIONS_PER_USER` reservations a minute (then 429
/// with `Retry-After`), so one account cannot hold the stock in a flood of baskets.
#[utoipa::path(
    post,
    path = "/api/v1/reservations",
    tag = "reservations",
    operation_id = "createReservation",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
         pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request",
         example = "checkout-1042"),
    ),
    request_body(content = CreateReservation, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the items are being held", body = ReservationState,
         headers(
            ("Location" = String, description = "The reservation on the read API: `/api/v1/reservations/{id}`"),
            ("Idempotent-Replayed" = String,
             description = "`true` when this is the stored response of an earlier request with the same key"),
         )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 429, response = TooManyRequests),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    IdempotencyKey(key): IdempotencyKey,
    context: RequestContext,
    ApiJson(request): ApiJson<CreateReservation>,
) -> Result<Response, ApiError> {
    if principal.role != Role::Admin {
        state.reservation_limiter.check(&principal.user_id)?;
    }
    let scope = format!("POST /api/v1/reservations {}", principal.user_id);
    let hash = state.idempotency.fingerprint(&request);
    let id = match &key {
        Some(key) => Uuid::new_v5(&IDEMPOTENT_RESERVATION_NAMESPACE, format!("{scope}\n{key}").as_bytes()),
        None => Uuid::new_v4(),
    };
    state
        .idempotency
        .run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
            let now = Utc::now();
            let command = || ReservationCommand::Place {
                id,
                owner: principal.user_id.to_string(),
                items: request.items.iter().map(|item| (item.product_id, item.quantity)).collect(),
                ttl_seconds: request.ttl_seconds,
                now,
            };
            state
                .commands
                .execute::<Reservation>(
                    &id.to_string(),
                    command,
                    context.metadata(principal.user_id.to_string()),
                    false,
                )
                .await
                .map_err(reservation_failure)?;
            metrics::counter!("reservations_placed_total").increment(1);
            let headers = [(header::LOCATION, format!("/api/v1/reservations/{id}"))];
            let body = ReservationState { id, status: domain::ReservationStatus::Pending };
            Ok((StatusCode::ACCEPTED, headers, Json(body)).into_response())
        })
        .await
}

/// Confirm a held reservation (its owner or an admin).
///
/// The held stock is taken for good (`on_hand` goes down once the process manager commits it).
/// 200 when `held`, and again for a reservation already confirmed; 409 when it is still
/// `pending`, was `rejected` or `released`, or its hold expired (`expires_at` passed, even if the
/// release has not happened yet). Someone else's reservation is 404.
#[utoipa::path(
    post,
    path = "/api/v1/reservations/{id}/confirm",
    tag = "reservations",
    operation_id = "confirmReservation",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The reservation's id (anything else is 404)")),
    responses(
        (status = 200, description = "Confirmed", body = ReservationState),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    context: RequestContext,
) -> Result<Response, ApiError> {
    let id = owned(&state, &principal, &id).await?;
    let now = Utc::now();
    change(&state, &principal, &context, id, move || ReservationCommand::Confirm { now }).await?;
    metrics::counter!("reservations_total", "outcome" => "confirmed").increment(1);
    Ok(Json(ReservationState { id, status: domain::ReservationStatus::Confirmed }).into_response())
}

/// Cancel a reservation (its owner or an admin).
///
/// Its holds are released (asynchronously, by the process manager). 200 for a `pending` or
/// `held` reservation and again for one already `released` or `rejected`; 409 once confirmed.
/// Someone else's reservation is 404.
#[utoipa::path(
    post,
    path = "/api/v1/reservations/{id}/cancel",
    tag = "reservations",
    operation_id = "cancelReservation",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The reservation's id (anything else is 404)")),
    responses(
        (status = 200, description = "Cancelled (or already over)", body = ReservationState),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    context: RequestContext,
) -> Result<Response, ApiError> {
    let id = owned(&state, &principal, &id).await?;
    let recorded = change(&state, &principal, &context, id, || ReservationCommand::Cancel).await?;
    if recorded.is_some() {
        metrics::counter!("reservations_total", "outcome" => "cancelled").increment(1);
    }
    let status = state.commands.load::<Reservation>(&id.to_string()).await.map_err(store_failure)?.status;
    Ok(Json(ReservationState { id, status }).into_response())
}

/// The reservation's id if it exists and `principal` may act on it; 404 otherwise, the same
/// answer for someone else's reservation as for none.
async fn owned(state: &AppState, principal: &Principal, raw: &str) -> Result<Uuid, ApiError> {
    let id = parse_id(raw, "reservation")?;
    let reservation = state.commands.load::<Reservation>(&id.to_string()).await.map_err(store_failure)?;
    let mine = principal.role == Role::Admin || reservation.owner == principal.user_id.to_string();
    match reservation.id {
        Some(_) if mine => Ok(id),
        _ => Err(ApiError::NotFound("reservation")),
    }
}

async fn change(
    state: &AppState,
    principal: &Principal,
    context: &RequestContext,
    id: Uuid,
    command: impl Fn() -> ReservationCommand,
) -> Result<Option<u64>, ApiError> {
    state
        .commands
        .execute::<Reservation>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), true)
        .await
        .map_err(reservation_failure)
}

fn reservation_failure(error: CommandError<ReservationError>) -> ApiError {
    match error {
        CommandError::Rejected(ReservationError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(ReservationError::NotFound) => ApiError::NotFound("reservation"),
        CommandError::Rejected(rule) => ApiError::Conflict(rule.to_string()),
        CommandError::Conflict => ApiError::Conflict("the reservation kept changing concurrently; retry".into()),
        CommandError::Store(e) => store_failure(e),
    }
}

// The documented limits are the domain's.
const _: () = assert!(MAX_ITEMS == 50 && MIN_TTL_SECONDS == 60 && MAX_TTL_SECONDS == 3_600);
const _: () = assert!(DEFAULT_TTL_SECONDS == 900);
