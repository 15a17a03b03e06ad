use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::Role;
use http_api::tokens::TokenKeys;
use event_store::CatalogEvent;
use serde_json::{json, Value};
pub use test_support::eventually;
pub use test_support::http::{assert_problem, TEST_JWT_SECRET};
use uuid::Uuid;

test_support::test_app! {
    /// A server on a database of its own, with the read API's fixtures; its requests, pool
    /// and `stop` are [`TestServer`](test_support::http::TestServer)'s.
    TestApp: query_api as "query-api"
}

impl TestApp {
    /// Writes events to the read model in one committed transaction, as the projector does.
    pub async fn apply(&self, events: &[CatalogEvent]) {
        let mut transaction = self.pool.begin().await.unwrap();
        read_model::apply_events(&mut transaction, events).await.expect("apply events");
        transaction.commit().await.unwrap();
    }

    /// A live product named `name` at version 1, created at `at`.
    pub async fn a_product_at(&self, name: &str, price: &str, at: DateTime<Utc>) -> Uuid {
        let id = Uuid::new_v4();
        self.apply(&[product_created(id, name, price, at)]).await;
        id
    }

    pub async fn a_product(&self, name: &str, price: &str) -> Uuid {
        self.a_product_at(name, price, Utc::now()).await
    }

    /// A registered user (customer, plus `extra_roles`) and a bearer token naming `token_role`.
    pub async fn a_user(&self, username: &str, extra_roles: &[Role], token_role: Role) -> (Uuid, String) {
        let id = Uuid::new_v4();
        let mut events = vec![event(
            "User",
            id,
            1,
            "UserRegistered",
            json!({"UserRegistered": {"id": id, "username": username, "email": format!("{username}@example.com"),
                                      "password_hash": "$argon2id$v=19$secret-hash"}}),
            Utc::now(),
        )];
        for (i, role) in extra_roles.iter().enumerate() {
            events.push(event("User", id, 2 + i as i64, "UserRoleGranted", json!({"UserRoleGranted": {"role": role}}), Utc::now()));
        }
        self.apply(&events).await;
        (id, token(id, token_role))
    }
}

/// A stored event as the projector would receive it.
pub fn event(aggregate_type: &str, id: Uuid, sequence: i64, event_type: &str, payload: Value, at: DateTime<Utc>) -> CatalogEvent {
    let version = if event_type == "UserRegistered" { domain::UserEvent::REGISTERED_VERSION } else { "1.0.0" };
    CatalogEvent::from_stored(
        Uuid::new_v4(),
        aggregate_type.into(),
        id.to_string(),
        sequence,
        event_type.into(),
        version.into(),
        payload,
        json!({}),
        sequence,
        at,
    )
}

pub fn product_created(id: Uuid, name: &str, price: &str, at: DateTime<Utc>) -> CatalogEvent {
    let payload = json!({"ProductCreated": {"id": id, "name": name, "description": format!("About {name}"), "price": price}});
    event("Product", id, 1, "ProductCreated", payload, at)
}

pub fn product_updated(id: Uuid, sequence: i64, changes: Value) -> CatalogEvent {
    event("Product", id, sequence, "ProductUpdated", json!({ "ProductUpdated": changes }), Utc::now())
}

pub fn product_deleted(id: Uuid, sequence: i64) -> CatalogEvent {
    event("Product", id, sequence, "ProductDeleted", json!({"ProductDeleted": {}}), Utc::now())
}

pub fn token(user_id: Uuid, role: Role) -> String {
    TokenKeys::new(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(600)).issue(user_id, role).unwrap()
}
