//! `POST /api/v1/reservations`, `/confirm` and `/cancel` without the process manager: who may
//! act, what is refused, and that a refusal stores nothing. (The saga itself is tested with the
//! whole pipeline in the projector's `reservations` tests.)

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, TestApp};

async fn customer(app: &TestApp, name: &str) -> String {
    app.create_user(name, "customer-password-1", &[]).await;
    app.token_for(name, "customer-password-1").await
}

async fn reservation_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Reservation'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn any_signed_in_user_may_reserve_and_only_they_or_an_admin_may_confirm_or_cancel() {
    let app = spawn_app().await;
    let ann = customer(&app, "ann").await;
    let bob = customer(&app, "bob").await;
    let admin = app.admin_token().await;
    let body = json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 2}]});

    let anonymous = app.post("/api/v1/reservations").json(&body).send().await.unwrap();
    assert_problem(anonymous, 401).await;
    let accepted = app.post("/api/v1/reservations").bearer_auth(&ann).json(&body).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Someone else's reservation is as unknown as a made-up id.
    for (token, target) in [(&bob, id.clone()), (&ann, Uuid::new_v4().to_string()), (&ann, "nope".into())] {
        for action in ["confirm", "cancel"] {
            let response = app.post(&format!("/api/v1/reservations/{target}/{action}")).bearer_auth(token).send();
            assert_problem(response.await.unwrap(), 404).await;
        }
    }
    // Pending (nothing holds it yet): confirm is a conflict; the owner's cancel works, twice.
    let confirm = app.post(&format!("/api/v1/reservations/{id}/confirm")).bearer_auth(&ann).send().await.unwrap();
    assert_problem(confirm, 409).await;
    for _ in 0..2 {
        let cancel = app.post(&format!("/api/v1/reservations/{id}/cancel")).bearer_auth(&ann).send().await.unwrap();
        assert_eq!(cancel.status(), 200);
        assert_eq!(cancel.json::<Value>().await.unwrap(), json!({"id": id, "status": "released"}));
    }
    // An admin may act on anyone's.
    let by_admin = app.post(&format!("/api/v1/reservations/{id}/cancel")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(by_admin.status(), 200);
    assert_eq!(reservation_events(&app).await, 2, "placed, released: repeats record nothing");
}

#[tokio::test]
async fn a_bad_reservation_names_every_field_and_stores_nothing() {
    let app = spawn_app().await;
    let ann = customer(&app, "ann").await;
    let product = Uuid::new_v4();
    let fifty_one: Vec<Value> = (0..51).map(|_| json!({"product_id": Uuid::new_v4(), "quantity": 1})).collect();
    for (body, status) in [
        (json!({"items": [{"product_id": product, "quantity": 0}], "ttl_seconds": 59}), 422),
        (json!({"items": [{"product_id": product, "quantity": 1}, {"product_id": product, "quantity": 1}]}), 422),
        (json!({"items": []}), 422),
        (json!({"items": fifty_one, "ttl_seconds": 3_601}), 422),
        (json!({"items": [{"product_id": "not-a-uuid", "quantity": 1}]}), 422),
        (json!({"items": [{"product_id": product, "quantity": 1}], "extra": true}), 422),
        (json!({"items": [{"product_id": product, "quantity": 99_999_999_999_999_999_999_u128}]}), 422),
    ] {
        let response = app.post("/api/v1/reservations").bearer_auth(&ann).json(&body).send().await.unwrap();
        assert_problem(response, status).await;
    }
    let every = json!({"items": [{"product_id": product, "quantity": 0}, {"product_id": product, "quantity": 2}],
                       "ttl_seconds": 59});
    let response = app.post("/api/v1/reservations").bearer_auth(&ann).json(&every).send().await.unwrap();
    let problem = assert_problem(response, 422).await;
    assert_eq!(crate::helpers::error_fields(&problem), ["items[0].quantity", "items[1].product_id", "ttl_seconds"]);
    assert_eq!(reservation_events(&app).await, 0);
}

/// One customer cannot hold a catalog's stock in a flood of baskets: past
/// `RESERVATIONS_PER_USER` a minute the answer is 429 with `Retry-After` and nothing is stored;
/// another customer, and admins (who act for the shop), keep their own budgets.
#[tokio::test]
async fn a_customer_placing_reservations_too_fast_gets_429_and_stores_nothing() {
    let app = spawn_app_with(&["--reservations-per-user", "2"]).await;
    let ann = customer(&app, "ann").await;
    let bob = customer(&app, "bob").await;
    let admin = app.admin_token().await;
    let body = json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 1}]});
    let place = |token: &str| app.post("/api/v1/reservations").bearer_auth(token).json(&body).send();

    for _ in 0..2 {
        assert_eq!(place(&ann).await.unwrap().status(), 202);
    }
    let refused = place(&ann).await.unwrap();
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    assert_problem(refused, 429).await;
    assert_eq!(reservation_events(&app).await, 2, "the refused reservation stored nothing");

    assert_eq!(place(&bob).await.unwrap().status(), 202);
    for _ in 0..3 {
        assert_eq!(place(&admin).await.unwrap().status(), 202);
    }
}
