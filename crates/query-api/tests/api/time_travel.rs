//! `GET /api/v1/products/{id}?as_of=` and `?version=`: the product as it was, checked against
//! the event store. Random command sequences run through the real `CommandBus`; their stored
//! events are projected as the projector would; then, at random instants and at every version,
//! the API's answer must be `Product::replay` of the stored events up to that point.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use domain::{CategoryCommand, Currency, Product, ProductCommand, ProductImage, ProductStatus};
use event_store::CatalogEvent;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{admin_token, assert_problem, customer_token, product_updated, spawn_app, TestApp};
use crate::store::{product_event, Store};

/// xorshift64*: small, seeded, reproducible (the seed is printed; `TIME_TRAVEL_SEED` replays it).
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("TIME_TRAVEL_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("TIME_TRAVEL_SEED={seed}");
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `0..n`
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn subset<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
        items.iter().filter(|_| self.chance(50)).cloned().collect()
    }
}

const CURRENCIES: [(&str, u32); 4] = [("EUR", 2), ("JPY", 0), ("BHD", 3), ("USD", 2)];

fn price(rng: &mut Rng, currency: &str) -> Decimal {
    let digits = CURRENCIES.iter().find(|(code, _)| *code == currency).unwrap().1;
    Decimal::new(rng.range(1, 2_000_000), digits)
}

fn attributes(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for key in rng.subset(&["colour", "material", "size", "brand_name"]) {
        map.insert(key.to_owned(), rng.pick(&["red", "oak", "XL", "Acme", "brushed steel"]).to_string());
    }
    map
}

fn images(rng: &mut Rng) -> Vec<ProductImage> {
    (0..rng.below(3))
        .map(|n| ProductImage {
            url: format!("https://img.example.com/{}/{n}.jpg", rng.below(1000)),
            alt: rng.chance(50).then(|| format!("view {n}")),
        })
        .collect()
}

/// A random command for `product` (its state so far); `None` once it is deleted.
fn command(rng: &mut Rng, id: Uuid, product: &Product, categories: &[Uuid], sku_prefix: &str) -> ProductCommand {
    if product.id.is_none() {
        let currency = rng.pick(&CURRENCIES).0;
        return ProductCommand::Create {
            id,
            name: format!("Product {}", rng.below(1000)),
            description: rng.chance(50).then(|| "first description".to_owned()),
            price: price(rng, currency),
            currency: currency.into(),
            sku: rng.chance(50).then(|| format!("{sku_prefix}-{}", rng.below(1_000_000))),
            status: *rng.pick(&[None, Some(ProductStatus::Draft), Some(ProductStatus::Published)]),
            category_ids: rng.subset(categories),
            attributes: attributes(rng),
            images: images(rng),
            on_hand: rng.range(0, 20),
            allow_http_images: false,
        };
    }
    match rng.below(10) {
        0 => ProductCommand::Delete { expected_version: None },
        1..=2 => {
            let on_hand = product.on_hand as i64;
            let mut delta = rng.range(-on_hand, 20);
            if delta == 0 {
                delta = 1;
            }
            ProductCommand::AdjustStock { delta, reason: "stocktake".into(), expected_version: None }
        }
        _ => {
            let mut update = ProductCommand::Update {
                expected_version: None,
                name: None,
                description: None,
                price: None,
                currency: None,
                sku: None,
                status: None,
                category_ids: None,
                attributes: None,
                images: None,
                allow_http_images: false,
            };
            let ProductCommand::Update {
                name,
                description,
                price: new_price,
                currency,
                sku,
                status,
                category_ids,
                attributes: attrs,
                images: imgs,
                ..
            } = &mut update
            else {
                unreachable!()
            };
            // Each field with some chance; a status change in most updates, so states alternate.
            while name.is_none() && new_price.is_none() && status.is_none() && category_ids.is_none() && attrs.is_none()
            {
                if rng.chance(30) {
                    *name = Some(format!("Renamed {}", rng.below(1000)));
                }
                if rng.chance(20) {
                    *description = Some(format!("description {}", rng.below(1000)));
                }
                if rng.chance(30) {
                    // A currency change always comes with a price in its digits.
                    let code = if rng.chance(40) { rng.pick(&CURRENCIES).0 } else { product.currency.as_str() };
                    if code != product.currency {
                        *currency = Some(code.to_owned());
                    }
                    *new_price = Some(price(rng, code));
                }
                if rng.chance(15) {
                    *sku = Some(rng.chance(50).then(|| format!("{sku_prefix}-{}", rng.below(1_000_000))));
                }
                if rng.chance(50) {
                    // Not always an allowed transition: a refused one stores nothing, which is fine.
                    *status =
                        Some(*rng.pick(&[ProductStatus::Draft, ProductStatus::Published, ProductStatus::Archived]));
                }
                if rng.chance(25) {
                    *category_ids = Some(rng.subset(categories));
                }
                if rng.chance(20) {
                    *attrs = Some(attributes(rng));
                }
                if rng.chance(15) {
                    *imgs = Some(images(rng));
                }
            }
            update
        }
    }
}

/// A product as the events fold it, with its creation and last-change instants.
type Expected = (Product, DateTime<Utc>, DateTime<Utc>);

/// What the API must answer for the product `events` fold into (`None`: no product, 404).
fn expected(events: &[CatalogEvent]) -> Option<Expected> {
    let product = Product::replay(events.iter().map(product_event));
    if product.id.is_none() || product.deleted {
        return None;
    }
    Some((product, events[0].recorded_at, events.last().unwrap().recorded_at))
}

/// What a check found, so the test can tell that it saw every kind of answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// No product then (not created yet, deleted, or no such version): 404 to everyone.
    Missing,
    /// A published state: the same answer for admins and shoppers.
    Public,
    /// A draft or archived state: 200 for admins, 404 for shoppers.
    Hidden,
}

/// Asserts that the API's answer for `query` is `expected`, for an admin and for a shopper
/// (who sees only a published state).
async fn check(
    app: &TestApp,
    id: Uuid,
    query: &str,
    expected: Option<&Expected>,
    names: &BTreeMap<Uuid, String>,
) -> Seen {
    let path = format!("/api/v1/products/{id}?{query}");
    let response = app.get(&path).bearer_auth(admin_token()).send().await.unwrap();
    let Some((product, created_at, updated_at)) = expected else {
        assert_problem(response, 404).await;
        assert_eq!(app.read(&path, None).await.0, 404, "{query}");
        return Seen::Missing;
    };
    assert_eq!(response.status(), 200, "{query}");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), format!("\"{}\"", product.version), "{query}");
    let body: Value = response.json().await.unwrap();
    let currency = Currency::parse(&product.currency).unwrap();
    let category = |id: &Uuid| json!({"id": id, "name": names[id], "slug": names[id].to_lowercase()});
    let categories: Vec<Value> = product.category_ids.iter().map(category).collect();
    let images: Vec<Value> = product.images.iter().map(|image| json!({"url": image.url, "alt": image.alt})).collect();
    let want = json!({
        "id": id,
        "name": product.name,
        "description": product.description,
        "price": currency.render(product.price),
        "currency": product.currency,
        "sku": product.sku,
        "status": product.status,
        "categories": categories,
        "attributes": product.attributes,
        "images": images,
        "stock": {"on_hand": product.on_hand, "reserved": 0, "available": product.on_hand},
        "version": product.version,
    });
    let mut got = body.clone();
    let got_map = got.as_object_mut().unwrap();
    let created: DateTime<Utc> = got_map.remove("created_at").unwrap().as_str().unwrap().parse().unwrap();
    let updated: DateTime<Utc> = got_map.remove("updated_at").unwrap().as_str().unwrap().parse().unwrap();
    assert_eq!(got, want, "{query}");
    assert_eq!((created, updated), (*created_at, *updated_at), "{query}");

    let (status, shopper) = app.read(&path, Some(&customer_token())).await;
    if product.status == ProductStatus::Published {
        assert_eq!((status, &shopper), (200, &body), "{query}: a published state is public");
        Seen::Public
    } else {
        assert_eq!(status, 404, "{query}: a {} state is hidden from shoppers", product.status);
        Seen::Hidden
    }
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn past_states_are_the_fold_of_the_stored_events_up_to_that_point() {
    let app = spawn_app().await;
    let store = Store::new(&app);
    let mut rng = Rng::seeded();
    let mut seen = std::collections::BTreeMap::<Seen, usize>::new();
    let mut names = BTreeMap::new();
    let mut categories = Vec::new();
    for name in ["Lamps", "Desks", "Chairs"] {
        let id = Uuid::new_v4();
        store
            .category(
                id,
                CategoryCommand::Create {
                    id,
                    name: name.into(),
                    slug: name.to_lowercase(),
                    parent_id: None,
                    description: None,
                },
            )
            .await;
        store.project("Category", id).await;
        names.insert(id, name.to_owned());
        categories.push(id);
    }

    for n in 0..4 {
        let id = Uuid::new_v4();
        let mut product = Product::default();
        let mut accepted = 0;
        for _ in 0..rng.range(6, 14) {
            if product.deleted {
                break;
            }
            let command = command(&mut rng, id, &product, &categories, &format!("TT{n}"));
            if store.product(id, "tester", command).await {
                accepted += 1;
                product = Product::replay(store.events("Product", id).await.iter().map(product_event));
            }
            // Room between events for instants that fall between them.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let events = store.project("Product", id).await;
        assert_eq!(events.len(), accepted);
        assert!(events.windows(2).all(|pair| pair[0].recorded_at < pair[1].recorded_at), "distinct instants");

        // Every version, and one past the last.
        for version in 1..=events.len() + 1 {
            let upto = &events[..version.min(events.len())];
            let expected = if version <= events.len() { expected(upto) } else { None };
            *seen
                .entry(check(&app, id, &format!("version={version}"), expected.as_ref(), &names).await)
                .or_default() += 1;
        }
        // Each event's own instant (inclusive), the microsecond before it, and random instants
        // from just before the first to after the last.
        let first = events[0].recorded_at;
        let last = events.last().unwrap().recorded_at;
        let span = (last - first).num_microseconds().unwrap() + 2_000;
        let mut instants: Vec<DateTime<Utc>> = Vec::new();
        for event in &events {
            instants.push(event.recorded_at);
            instants.push(event.recorded_at - chrono::Duration::microseconds(1));
        }
        for _ in 0..8 {
            instants.push(
                first - chrono::Duration::microseconds(1_000) + chrono::Duration::microseconds(rng.range(0, span)),
            );
        }
        for at in instants {
            let upto: Vec<CatalogEvent> = events.iter().filter(|event| event.recorded_at <= at).cloned().collect();
            let expected = if upto.is_empty() { None } else { expected(&upto) };
            let query = format!("as_of={}", instant(at).replace('+', "%2B"));
            *seen.entry(check(&app, id, &query, expected.as_ref(), &names).await).or_default() += 1;
        }
        // The present, as time travel and as the current read agree.
        let now = expected(&events);
        check(&app, id, &format!("as_of={}", instant(Utc::now())), now.as_ref(), &names).await;
    }
    eprintln!("answers checked: {seen:?}");
    assert_eq!(seen.len(), 3, "every kind of answer was checked: {seen:?}");
}

#[tokio::test]
async fn time_travel_parameters_are_checked_and_answers_carry_their_version() {
    let app = spawn_app().await;
    let created = Utc::now() - chrono::Duration::hours(2);
    let id = Uuid::new_v4();
    app.apply(&[crate::helpers::product_created_with(id, json!({"status": "draft", "name": "Draft"}), created)]).await;
    app.apply(&[product_updated(id, 2, json!({"status": "published", "name": "Out"}))]).await;
    let path = format!("/api/v1/products/{id}");
    let admin = admin_token();

    // The same instant in another offset, encoded or (as a raw `+` reads) with a space.
    let an_hour_later = created + chrono::Duration::hours(1);
    let in_paris = an_hour_later.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap()).to_rfc3339();
    for query in [format!("as_of={}", in_paris.replace('+', "%2B")), format!("as_of={in_paris}"), "version=1".into()] {
        let response = app.get(&format!("{path}?{query}")).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(response.headers()["etag"], "\"1\"");
        assert_eq!(response.json::<Value>().await.unwrap()["name"], "Draft", "{query}");
        // A draft then: hidden from shoppers.
        assert_eq!(app.read(&format!("{path}?{query}"), None).await.0, 404, "{query}");
        let revalidated = app
            .get(&format!("{path}?{query}"))
            .bearer_auth(&admin)
            .header("if-none-match", "\"1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304);
    }
    assert_eq!(app.read(&format!("{path}?version=2"), None).await.1["name"], "Out");
    let before = instant(created - chrono::Duration::seconds(1));
    assert_eq!(app.read(&format!("{path}?as_of={before}"), Some(&admin)).await.0, 404, "did not exist yet");
    assert_eq!(app.read(&format!("{path}?version=3"), Some(&admin)).await.0, 404, "no such version yet");
    assert_eq!(app.read(&format!("/api/v1/products/{}?version=1", Uuid::new_v4()), Some(&admin)).await.0, 404);

    for (query, name) in [
        ("as_of=yesterday", "`as_of`"),
        ("as_of=2026-13-01T00:00:00Z", "`as_of`"),
        ("as_of=2026-01-01", "`as_of`"),
        ("as_of=", "`as_of`"),
        ("as_of=99999-01-01T00:00:00Z", "`as_of`"),
        ("version=0", "`version`"),
        ("version=-1", "`version`"),
        ("version=x", "`version`"),
        ("version=99999999999999999999", "`version`"),
        ("version=1&as_of=2026-01-01T00:00:00Z", "cannot be combined"),
        ("version=1&min_version=1", "cannot be combined"),
        ("min_version=1&as_of=2026-01-01T00:00:00Z", "cannot be combined"),
    ] {
        let response = app.get(&format!("{path}?{query}")).bearer_auth(&admin).send().await.unwrap();
        let body = assert_problem(response, 400).await;
        assert!(body["detail"].as_str().unwrap().contains(name), "{query}: {body}");
    }
}
