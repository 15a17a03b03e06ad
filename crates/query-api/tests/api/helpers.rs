use chrono::{DateTime, Utc};
use domain::{CategoryEvent, ProductEvent, Role};
use event_store::CatalogEvent;
use serde::Serialize;
use serde_json::{json, Value};
pub use test_support::eventually;
pub use test_support::http::{assert_problem, test_token, token_signed_by, OTHER_SIGNING_KEY};
use uuid::Uuid;

test_support::test_app! {
    /// A server on a database of its own, connected as a member of `catalog_query` only (its
    /// production role), with the read API's fixtures; its requests, pool (the owner's)
    /// and `stop` are [`TestServer`](test_support::http::TestServer)'s.
    TestApp: query_api as "query-api", role "catalog_query"
}

impl TestApp {
    /// Writes events to the read model in one committed transaction, as the projector does,
    /// then reads each product written with `?min_version=` (as a client that waits for its
    /// own write does), so that no cached listing from before the write is served after it.
    pub async fn apply(&self, events: &[CatalogEvent]) {
        let mut transaction = self.pool.begin().await.unwrap();
        read_model::apply_events(&mut transaction, events).await.expect("apply events");
        transaction.commit().await.unwrap();
        for event in events.iter().filter(|event| event.aggregate_type == "Product") {
            let path = format!("/api/v1/products/{}?min_version={}", event.aggregate_id, event.sequence);
            self.get(&path).bearer_auth(admin_token()).send().await.unwrap();
        }
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

    /// A product created with `fields` (see [`product_created_with`]), at version 1.
    pub async fn a_product_with(&self, fields: Value) -> Uuid {
        let id = Uuid::new_v4();
        self.apply(&[product_created_with(id, fields, Utc::now())]).await;
        id
    }

    /// A live category named `name` (slug: its name in lower case, spaces as dashes).
    pub async fn a_category(&self, name: &str, parent_id: Option<Uuid>) -> Uuid {
        let id = Uuid::new_v4();
        self.apply(&[category_created(id, name, parent_id)]).await;
        id
    }

    /// `GET path` with `token` as bearer when given: the status and the JSON body (`null` if none).
    pub async fn read(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.get(path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
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
            events.push(event(
                "User",
                id,
                2 + i as i64,
                "UserRoleGranted",
                json!({"UserRoleGranted": {"role": role}}),
                Utc::now(),
            ));
        }
        self.apply(&events).await;
        (id, token(id, token_role))
    }
}

/// A stored event as the projector would receive it.
pub fn event(
    aggregate_type: &str,
    id: Uuid,
    sequence: i64,
    event_type: &str,
    payload: Value,
    at: DateTime<Utc>,
) -> CatalogEvent {
    let version = if event_type == "UserRegistered" { domain::UserEvent::REGISTERED_VERSION } else { "1.0.0" };
    stored(aggregate_type, id, sequence, event_type, version, payload, at)
}

/// A domain event (`ProductEvent`, `CategoryEvent`) of aggregate `id` at `sequence`, stored in
/// its current version.
pub fn domain_event(
    aggregate_type: &str,
    id: Uuid,
    sequence: i64,
    event: &impl Serialize,
    at: DateTime<Utc>,
) -> CatalogEvent {
    let payload = serde_json::to_value(event).unwrap();
    let event_type =
        payload.as_object().and_then(|tagged| tagged.keys().next()).expect("an externally tagged event").clone();
    let version = if event_type == "ProductCreated" { ProductEvent::CREATED_VERSION } else { "1.0.0" };
    stored(aggregate_type, id, sequence, &event_type, version, payload, at)
}

/// A product created with the given fields over a published EUR lamp (`{"price": "1999",
/// "currency": "JPY"}`, `{"status": "draft"}`, ...), as a `ProductCreated` 2.0 event.
pub fn product_created_with(id: Uuid, fields: Value, at: DateTime<Utc>) -> CatalogEvent {
    let mut body = json!({"id": id, "name": "Lamp", "description": "About Lamp", "price": "19.99", "currency": "EUR",
                          "status": "published"});
    body.as_object_mut().unwrap().extend(fields.as_object().expect("an object of fields").clone());
    let event: ProductEvent =
        serde_json::from_value(json!({ "ProductCreated": body })).expect("a valid ProductCreated");
    domain_event("Product", id, 1, &event, at)
}

pub fn category_created(id: Uuid, name: &str, parent_id: Option<Uuid>) -> CatalogEvent {
    let event = CategoryEvent::CategoryCreated {
        id,
        name: name.into(),
        slug: name.to_lowercase().replace(' ', "-"),
        parent_id,
        description: String::new(),
    };
    domain_event("Category", id, 1, &event, Utc::now())
}

pub fn category_updated(id: Uuid, sequence: i64, changes: Value) -> CatalogEvent {
    let event: CategoryEvent = serde_json::from_value(json!({ "CategoryUpdated": changes })).unwrap();
    domain_event("Category", id, sequence, &event, Utc::now())
}

pub fn category_deleted(id: Uuid, sequence: i64) -> CatalogEvent {
    domain_event("Category", id, sequence, &CategoryEvent::CategoryDeleted {}, Utc::now())
}

fn stored(
    aggregate_type: &str,
    id: Uuid,
    sequence: i64,
    event_type: &str,
    version: &str,
    payload: Value,
    at: DateTime<Utc>,
) -> CatalogEvent {
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
    let payload =
        json!({"ProductCreated": {"id": id, "name": name, "description": format!("About {name}"), "price": price}});
    event("Product", id, 1, "ProductCreated", payload, at)
}

pub fn product_updated(id: Uuid, sequence: i64, changes: Value) -> CatalogEvent {
    event("Product", id, sequence, "ProductUpdated", json!({ "ProductUpdated": changes }), Utc::now())
}

pub fn product_deleted(id: Uuid, sequence: i64) -> CatalogEvent {
    event("Product", id, sequence, "ProductDeleted", json!({"ProductDeleted": {}}), Utc::now())
}

/// A token for a user nobody registered, with the admin role (query-api checks only the token).
pub fn admin_token() -> String {
    token(Uuid::new_v4(), Role::Admin)
}

pub fn customer_token() -> String {
    token(Uuid::new_v4(), Role::Customer)
}

pub fn token(user_id: Uuid, role: Role) -> String {
    test_token(user_id, role)
}
