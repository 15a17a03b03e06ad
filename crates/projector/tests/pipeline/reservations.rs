//! Stock reservations end to end: the process manager (`--role reservations`) as a child
//! process on the real broker and Postgres, reservations placed and confirmed through the
//! event store as command-api does, and the invariants checked on the aggregates and the read
//! models.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::reservation::ItemState;
use domain::{Product, ProductCommand, Reservation, ReservationCommand, ReservationStatus};
use event_store::{CommandBus, EventMetadata};
use futures::StreamExt;
use read_model::products::Products;
use read_model::reservations::Reservations;
use read_model::verify;
use reqwest::{Client, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::end_to_end::{admin_token, start_apis};
use crate::support::{eventually, Pipeline};

const PRODUCTS: usize = 10;
const UNITS: u64 = 50;
const RESERVATIONS: usize = 500;

/// A small deterministic generator, so a failing basket can be replayed.
struct Baskets(u64);

impl Baskets {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }

    /// 1 to 3 distinct products, 1 to 3 units each.
    fn basket(&mut self, products: &[Uuid]) -> Vec<(Uuid, i64)> {
        let mut basket: Vec<(Uuid, i64)> = Vec::new();
        let size = 1 + self.next(3);
        while (basket.len() as u64) < size {
            let product = products[self.next(products.len() as u64) as usize];
            if basket.iter().all(|(id, _)| *id != product) {
                basket.push((product, 1 + self.next(3) as i64));
            }
        }
        basket
    }
}

async fn stocked_products(commands: &CommandBus, count: usize, units: u64) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = Uuid::new_v4();
        let price: Decimal = "9.99".parse().unwrap();
        let command = || match ProductCommand::create_basic(id, format!("Product {n}"), None, price, "EUR") {
            ProductCommand::Create { id, name, description, price, currency, .. } => ProductCommand::Create {
                id,
                name,
                description,
                price,
                currency,
                sku: None,
                status: None,
                category_ids: vec![],
                attributes: Default::default(),
                images: vec![],
                on_hand: units as i64,
                allow_http_images: false,
            },
            _ => unreachable!(),
        };
        commands.execute::<Product>(&id.to_string(), command, EventMetadata::new("test"), false).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Places `count` reservations of random baskets, up to 50 at once, as command-api would.
async fn place_many(commands: &CommandBus, products: &[Uuid], count: usize, seed: u64) -> Vec<Uuid> {
    let mut baskets = Baskets(seed);
    let orders: Vec<(Uuid, Vec<(Uuid, i64)>)> =
        (0..count).map(|_| (Uuid::new_v4(), baskets.basket(products))).collect();
    futures::stream::iter(orders.clone())
        .for_each_concurrent(50, |(id, items)| async move {
            let now = Utc::now();
            let place = || ReservationCommand::Place {
                id,
                owner: "shopper".into(),
                items: items.clone(),
                ttl_seconds: Some(3_600),
                now,
            };
            commands.execute::<Reservation>(&id.to_string(), place, EventMetadata::new("test"), false).await.unwrap();
        })
        .await;
    orders.into_iter().map(|(id, _)| id).collect()
}

async fn load_all(commands: &CommandBus, ids: &[Uuid]) -> Vec<Reservation> {
    futures::stream::iter(ids.iter().copied())
        .map(|id| async move { commands.load::<Reservation>(&id.to_string()).await.unwrap() })
        .buffered(32)
        .collect()
        .await
}

/// Held (and waiting for its owner), or over with every hold released or committed.
fn at_rest(reservation: &Reservation) -> bool {
    reservation.status == ReservationStatus::Held || reservation.settled
}

async fn wait_at_rest(commands: &CommandBus, ids: &[Uuid], within: Duration) -> Vec<Reservation> {
    let deadline = Instant::now() + within;
    loop {
        let all = load_all(commands, ids).await;
        let busy = all.iter().filter(|r| !at_rest(r)).count();
        if busy == 0 {
            return all;
        }
        assert!(Instant::now() < deadline, "{busy} of {} reservations still in flight", ids.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The invariants, on the aggregates: no product held or gave away more than it had,
/// what it gave away is what was confirmed, and what it holds is what held reservations hold.
async fn assert_stock_invariants(commands: &CommandBus, products: &[Uuid], reservations: &[Reservation]) {
    let mut held: HashMap<Uuid, u64> = HashMap::new();
    let mut confirmed: HashMap<Uuid, u64> = HashMap::new();
    for reservation in reservations {
        assert!(at_rest(reservation), "{:?} is not at rest", reservation);
        let tally = match reservation.status {
            ReservationStatus::Held => &mut held,
            ReservationStatus::Confirmed => &mut confirmed,
            _ => {
                assert!(reservation.items.iter().all(|i| matches!(i.state, ItemState::Released | ItemState::Rejected)));
                continue;
            }
        };
        for item in &reservation.items {
            *tally.entry(item.product_id).or_default() += item.quantity;
        }
    }
    for id in products {
        let product: Product = commands.load(&id.to_string()).await.unwrap();
        let (held, confirmed) = (held.get(id).copied().unwrap_or(0), confirmed.get(id).copied().unwrap_or(0));
        assert_eq!(UNITS, product.on_hand + confirmed, "product {id}: on hand before = after + confirmed");
        assert_eq!(product.reserved(), held, "product {id}: reserved = sum of held quantities");
        assert!(held + confirmed <= UNITS, "product {id} oversold: {held} held + {confirmed} confirmed");
    }
}

/// The read models agree with the event store, stock holds included (`catalogctl verify`).
async fn assert_read_models_verify(pipeline: &Pipeline) {
    let settle = Duration::from_secs(60);
    let mut differences = verify::verify::<Products>(&pipeline.pool, settle).await.unwrap();
    differences.extend(verify::verify::<Reservations>(&pipeline.pool, settle).await.unwrap());
    differences.extend(verify::stock_holds(&pipeline.pool, settle).await.unwrap());
    assert!(differences.is_empty(), "{differences:#?}");
}

/// Confirms every other held reservation and cancels the rest, as their owners would.
async fn confirm_or_cancel(commands: &CommandBus, reservations: &[Reservation]) -> usize {
    let held: Vec<Uuid> =
        reservations.iter().filter(|r| r.status == ReservationStatus::Held).filter_map(|r| r.id).collect();
    futures::stream::iter(held.iter().enumerate())
        .for_each_concurrent(32, |(n, id)| async move {
            let now = Utc::now();
            let command = move || {
                if n % 2 == 0 {
                    ReservationCommand::Confirm { now }
                } else {
                    ReservationCommand::Cancel
                }
            };
            commands
                .execute::<Reservation>(&id.to_string(), command, EventMetadata::new("shopper"), true)
                .await
                .unwrap();
        })
        .await;
    held.len()
}

async fn contention(crashes: bool) {
    let pipeline = Pipeline::new().await;
    let commands = pipeline.commands();
    let products = stocked_products(&commands, PRODUCTS, UNITS).await;
    let mut publisher = pipeline.projector("publish", &[]);
    let mut projector = pipeline.projector("project", &[]);
    let mut managers = [pipeline.projector("reservations", &[]), pipeline.projector("reservations", &[])];
    projector.wait_until_assigned().await;

    let placing = place_many(&commands, &products, RESERVATIONS, 0x5eed);
    let chaos = async {
        if !crashes {
            return;
        }
        // Two instances at once throughout; each is killed -9 once, the projector once.
        for (after, victim) in [(1, 0), (2, 2), (3, 1)] {
            tokio::time::sleep(Duration::from_secs(after)).await;
            match victim {
                2 => {
                    projector.kill_hard().await;
                    projector = pipeline.projector("project", &[]);
                }
                n => {
                    managers[n].kill_hard().await;
                    managers[n] = pipeline.projector("reservations", &[]);
                }
            }
        }
    };
    let (ids, ()) = tokio::join!(placing, chaos);

    let at_rest = wait_at_rest(&commands, &ids, Duration::from_secs(240)).await;
    let rejected = at_rest.iter().filter(|r| r.status == ReservationStatus::Rejected).count();
    assert!(rejected > 0 && rejected < RESERVATIONS, "the stock should run out part way: {rejected} rejected");
    for reservation in at_rest.iter().filter(|r| r.status == ReservationStatus::Rejected) {
        let reason = reservation.reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("product ") && reason.contains("available"), "{reason}");
    }
    assert_stock_invariants(&commands, &products, &at_rest).await;

    let settled = confirm_or_cancel(&commands, &at_rest).await;
    assert!(settled > 0);
    let after = wait_at_rest(&commands, &ids, Duration::from_secs(240)).await;
    assert!(after.iter().all(|r| r.settled), "every confirm and cancel is settled");
    assert_stock_invariants(&commands, &products, &after).await;
    assert_read_models_verify(&pipeline).await;
    let _ = publisher.stop().await;
}

#[tokio::test]
async fn five_hundred_concurrent_reservations_never_oversell() {
    contention(false).await;
}

#[tokio::test]
async fn reservations_converge_with_the_process_manager_killed_twice_and_the_projector_once() {
    contention(true).await;
}

#[tokio::test]
async fn an_expired_hold_is_released_after_a_restart_that_spanned_its_deadline() {
    let pipeline = Pipeline::new().await;
    let commands = pipeline.commands();
    let products = stocked_products(&commands, 1, 5).await;
    let id = Uuid::new_v4();
    // A 60 s hold placed 55 s ago: it expires 5 s from now.
    let placed_at = Utc::now() - chrono::TimeDelta::seconds(55);
    let place = || ReservationCommand::Place {
        id,
        owner: "shopper".into(),
        items: vec![(products[0], 5)],
        ttl_seconds: Some(60),
        now: placed_at,
    };
    commands.execute::<Reservation>(&id.to_string(), place, EventMetadata::new("test"), false).await.unwrap();
    let mut everything = pipeline.projector("all", &[]);
    let held =
        || async { commands.load::<Reservation>(&id.to_string()).await.unwrap().status == ReservationStatus::Held };
    eventually("the reservation is held", Duration::from_secs(60), held).await;
    let product: Product = commands.load(&products[0].to_string()).await.unwrap();
    assert_eq!(product.available(), 0);

    everything.kill_hard().await;
    let deadline = placed_at + chrono::TimeDelta::seconds(60);
    let wait = (deadline - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(wait).await;
    let restarted = Instant::now();
    let everything = pipeline.projector("all", &[]);
    eventually("the hold is released", Duration::from_secs(30), || async {
        commands.load::<Reservation>(&id.to_string()).await.unwrap().settled
    })
    .await;
    let released_after = restarted.elapsed();
    // The process boots, connects and sweeps within seconds; the bound is 5 s.
    assert!(released_after < Duration::from_secs(8), "released {released_after:?} after the restart");
    let reservation: Reservation = commands.load(&id.to_string()).await.unwrap();
    assert_eq!(reservation.status, ReservationStatus::Released);
    assert_eq!(reservation.cause, Some(domain::reservation::ReleaseCause::Expired));
    assert_eq!(everything.metric("reservation_holds_expired_total").await, 1.0);
    let product: Product = commands.load(&products[0].to_string()).await.unwrap();
    assert_eq!((product.on_hand, product.reserved(), product.available()), (5, 0, 5));
    eventually("available stock returns in the read model", Duration::from_secs(30), || async {
        read_model::products::get(&pipeline.pool, products[0]).await.unwrap().is_some_and(|p| p.reserved == 0)
    })
    .await;
}

/// Through both APIs: place, see it held, confirm; over-ask and see why it was rejected; cancel;
/// someone else sees nothing; an adjustment cannot take held stock.
#[tokio::test]
async fn reservations_through_the_apis() {
    let pipeline = Pipeline::new().await;
    let apis = start_apis(&pipeline).await;
    let (_admin, admin) = admin_token(&pipeline, &apis).await;
    let everything = pipeline.projector("all", &[]);
    let client = Client::new();
    let products = stocked_products(&pipeline.commands(), 2, 5).await;
    let shopper = register(&client, &apis.command, "shopper").await;
    let stranger = register(&client, &apis.command, "stranger").await;

    let place = |token: String, body: Value, key: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/v1/reservations", apis.command);
        async move { client.post(url).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await.unwrap() }
    };
    let body =
        json!({"items": [{"product_id": products[0], "quantity": 2}, {"product_id": products[1], "quantity": 1}]});
    let accepted = place(shopper.clone(), body.clone(), "checkout-1").await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = accepted.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["status"], "pending");
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/reservations/{id}"));
    // The same key again: the same reservation, not a second one.
    let again: Value = place(shopper.clone(), body, "checkout-1").await.json().await.unwrap();
    assert_eq!(again["id"], id.as_str());

    let get = |token: String, id: String| {
        let client = client.clone();
        let url = format!("{}/api/v1/reservations/{id}", apis.query);
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let held = wait_for_status(&get, &shopper, &id, "held").await;
    assert_eq!(held["items"][0]["state"], "held");
    assert!(held["expires_at"].is_string());
    assert_eq!(get(stranger.clone(), id.clone()).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(admin.clone(), id.clone()).await.status(), StatusCode::OK);
    let stock = product_stock(&client, &apis.query, products[0]).await;
    assert_eq!(stock, json!({"on_hand": 5, "reserved": 2, "available": 3}));

    // Taking away held stock is a conflict; what is available may go.
    let adjust = |delta: i64| {
        let client = client.clone();
        let url = format!("{}/api/v1/products/{}/stock-adjustments", apis.command, products[0]);
        let admin = admin.clone();
        async move {
            client.post(url).bearer_auth(admin).json(&json!({"delta": delta, "reason": "count"})).send().await.unwrap()
        }
    };
    let refused = adjust(-4).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert_eq!(adjust(-3).await.status(), StatusCode::OK);

    let act = |token: String, id: String, what: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/v1/reservations/{id}/{what}", apis.command);
        async move { client.post(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(act(stranger.clone(), id.clone(), "confirm").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(act(shopper.clone(), id.clone(), "confirm").await.status(), StatusCode::OK);
    assert_eq!(act(shopper.clone(), id.clone(), "confirm").await.status(), StatusCode::OK, "idempotent");
    assert_eq!(act(shopper.clone(), id.clone(), "cancel").await.status(), StatusCode::CONFLICT);
    eventually("the confirmed stock is taken", Duration::from_secs(30), || async {
        product_stock(&client, &apis.query, products[0]).await == json!({"on_hand": 0, "reserved": 0, "available": 0})
    })
    .await;

    // More than there is: rejected, with the product and the reason; nothing stays held.
    let greedy =
        json!({"items": [{"product_id": products[1], "quantity": 1}, {"product_id": products[0], "quantity": 1}]});
    let greedy: Value = place(shopper.clone(), greedy, "checkout-2").await.json().await.unwrap();
    let greedy_id = greedy["id"].as_str().unwrap().to_owned();
    let rejected = wait_for_status(&get, &shopper, &greedy_id, "rejected").await;
    let reason = rejected["reason"].as_str().unwrap();
    assert!(reason.contains(&products[0].to_string()) && reason.contains("available"), "{reason}");
    eventually("the other item's hold is released", Duration::from_secs(30), || async {
        product_stock(&client, &apis.query, products[1]).await["reserved"] == 0
    })
    .await;

    // Cancel a held one: its stock comes back.
    let small = json!({"items": [{"product_id": products[1], "quantity": 4}], "ttl_seconds": 60});
    let small: Value = place(shopper.clone(), small, "checkout-3").await.json().await.unwrap();
    let small_id = small["id"].as_str().unwrap().to_owned();
    wait_for_status(&get, &shopper, &small_id, "held").await;
    assert_eq!(act(shopper.clone(), small_id.clone(), "cancel").await.status(), StatusCode::OK);
    assert_eq!(act(shopper.clone(), small_id.clone(), "cancel").await.status(), StatusCode::OK, "idempotent");
    assert_eq!(act(shopper.clone(), small_id.clone(), "confirm").await.status(), StatusCode::CONFLICT);
    wait_for_status(&get, &shopper, &small_id, "released").await;
    // The status changes with the cancel; the item's hold a moment later, with the release.
    eventually("the item's hold is released", Duration::from_secs(30), || async {
        let body: Value = get(shopper.clone(), small_id.clone()).await.json().await.unwrap();
        body["items"][0]["state"] == "released"
    })
    .await;
    eventually("cancelled stock is available again", Duration::from_secs(30), || async {
        product_stock(&client, &apis.query, products[1]).await == json!({"on_hand": 4, "reserved": 0, "available": 4})
    })
    .await;

    // Bad input: 422 with every field, nothing stored; no token: 401.
    let bad = json!({"items": [{"product_id": products[0], "quantity": 0}, {"product_id": products[0], "quantity": 1}],
                     "ttl_seconds": 5});
    let refused = place(shopper.clone(), bad, "checkout-4").await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["items[0].quantity", "items[1].product_id", "ttl_seconds"]);
    let anonymous =
        client.post(format!("{}/api/v1/reservations", apis.command)).json(&json!({"items": []})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Reservation'")
            .fetch_one(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(stored, 3);

    // Every step is visible in the process manager's metrics.
    assert_eq!(everything.metric("reservations_total").await, 3.0, "held twice, rejected once");
    // Histograms reach /metrics at the recorder's next upkeep (every 5 s).
    eventually("saga step latencies are reported", Duration::from_secs(15), || async {
        // Five items reserved, one commit, two releases (a step retried after a lost race
        // counts again).
        everything.metric("reservation_saga_step_duration_seconds_count").await >= 8.0
    })
    .await;
}

async fn register(client: &Client, command: &str, username: &str) -> String {
    let password = "a-long-enough-password";
    let registered = client
        .post(format!("{command}/api/v1/users"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": password}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{:?}", registered.text().await);
    let login: Value = client
        .post(format!("{command}/api/v1/auth/token"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().unwrap().to_owned()
}

async fn wait_for_status<F, Fut>(get: &F, token: &str, id: &str, status: &str) -> Value
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = get(token.to_owned(), id.to_owned()).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            if body["status"] == status {
                return body;
            }
            assert!(Instant::now() < deadline, "still {body}");
        }
        assert!(Instant::now() < deadline, "reservation {id} never became {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn product_stock(client: &Client, query: &str, id: Uuid) -> Value {
    let product: Value =
        client.get(format!("{query}/api/v1/products/{id}")).send().await.unwrap().json().await.unwrap();
    product["stock"].clone()
}
