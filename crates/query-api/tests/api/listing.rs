//! `GET /api/v1/products` as a search: text (words, stems, prefixes, typos), filters, sorts,
//! cursor pages over a catalog that changes between them, totals and facets, and what a shopper
//! may see of all that.

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    admin_token, assert_problem, customer_token, event, product_created_with, product_deleted, product_updated,
    spawn_app, spawn_app_with, TestApp,
};

/// `GET /api/v1/products?<query>` as `token` (anonymous when `None`), which must be 200.
async fn list(app: &TestApp, query: &str, token: Option<&str>) -> Value {
    let (status, body) = app.read(&format!("/api/v1/products?{query}"), token).await;
    assert_eq!(status, 200, "?{query}: {body}");
    body
}

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|item| item["name"].as_str().unwrap().to_owned()).collect()
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().parse().unwrap()).collect()
}

/// A published EUR product named `name` with `fields`, without a description unless given.
async fn named(app: &TestApp, name: &str, fields: Value) -> Uuid {
    let mut all = json!({"name": name, "description": ""});
    all.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    app.a_product_with(all).await
}

#[tokio::test]
async fn a_search_matches_words_stems_prefixes_skus_attributes_descriptions_and_typos() {
    let app = spawn_app().await;
    named(&app, "Espresso machine", json!({"description": "Brews strong coffee"})).await;
    named(&app, "Running shoes", json!({"attributes": {"brand": "Acme", "colour": "red"}})).await;
    named(&app, "Desk lamp", json!({"sku": "LAMP-1", "description": "A warm light"})).await;
    named(&app, "Floor lamp", json!({"sku": "LAMP-2"})).await;
    named(&app, "Reading light", json!({"description": "Clamps to a desk lamp arm"})).await;
    named(&app, "Hidden espresso cups", json!({"status": "draft"})).await;

    let found = |q: &'static str| {
        let app = &app;
        async move {
            let mut found = names(&list(app, &format!("q={}", urlencode(q)), None).await);
            found.sort();
            found
        }
    };
    assert_eq!(found("espresso").await, ["Espresso machine"], "a word of the name; never a draft");
    assert_eq!(found("ESPRESSO Machine").await, ["Espresso machine"], "case does not matter");
    assert_eq!(found("espr").await, ["Espresso machine"], "the last word as a prefix");
    assert_eq!(found("machines").await, ["Espresso machine"], "by stem");
    assert_eq!(found("runni").await, ["Running shoes"], "a prefix of the word as written (its stem is run)");
    assert_eq!(found("coffee").await, ["Espresso machine"], "the description");
    assert_eq!(found("acme").await, ["Running shoes"], "an attribute value");
    assert_eq!(found("red shoes").await, ["Running shoes"], "words of several fields");
    assert_eq!(found("LAMP-1").await, ["Desk lamp"], "the SKU");
    assert_eq!(found("lamp-").await, ["Desk lamp", "Floor lamp", "Reading light"]);
    assert_eq!(found("the espresso").await, ["Espresso machine"], "stop words do not have to match");
    assert_eq!(found("espreso").await, ["Espresso machine"], "a typo");
    assert_eq!(found("runing shoes").await, ["Running shoes"], "a typo among words");
    assert_eq!(found("lamp ").await, ["Desk lamp", "Floor lamp", "Reading light"], "a finished word");
    assert!(found("zzyzx").await.is_empty(), "nothing like it");
    // Text without a letter or digit searches nothing: the plain listing.
    assert_eq!(list(&app, "q=%21%21", None).await["total"], 5);

    // Relevance: a match in the name ranks above one in the description.
    assert_eq!(names(&list(&app, "q=lamp", None).await)[2], "Reading light");
    // The search's items are the products as `GET /api/v1/products/{id}` shows them.
    let page = list(&app, "q=desk+lamp&sort=name", None).await;
    for item in page["items"].as_array().unwrap() {
        let (_, detail) = app.read(&format!("/api/v1/products/{}", item["id"].as_str().unwrap()), None).await;
        assert_eq!(item, &detail);
    }
}

#[tokio::test]
async fn filters_combine_and_categories_include_their_descendants() {
    let app = spawn_app().await;
    let home = app.a_category("Home", None).await;
    let lighting = app.a_category("Lighting", Some(home)).await;
    let desk = app.a_category("Desk lamps", Some(lighting)).await;
    let kitchen = app.a_category("Kitchen", None).await;
    let a = named(
        &app,
        "A",
        json!({"category_ids": [desk], "price": "15.00", "on_hand": 3, "attributes": {"brand": "Lumen", "colour": "red"}}),
    )
    .await;
    let b =
        named(&app, "B", json!({"category_ids": [lighting], "price": "45.00", "attributes": {"brand": "Lumen"}})).await;
    let c = named(
        &app,
        "C",
        json!({"category_ids": [kitchen], "price": "12.00", "on_hand": 1, "attributes": {"brand": "Acme", "colour": "blue"}}),
    )
    .await;
    let d = named(&app, "D", json!({"price": "1500", "currency": "JPY", "attributes": {"colour": "red"}})).await;
    let e = named(&app, "E", json!({"category_ids": [desk], "price": "15.00", "status": "draft"})).await;

    let matching = |query: &'static str, token: Option<String>| {
        let app = &app;
        async move {
            let page = list(app, query, token.as_deref()).await;
            assert_eq!(page["total"], page["items"].as_array().unwrap().len(), "{query}");
            let mut found = ids(&page);
            found.sort();
            found
        }
    };
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids
    };
    assert_eq!(matching("category=lighting", None).await, sorted(vec![a, b]), "by slug, with subcategories");
    assert_eq!(matching(leak(format!("category={home}")), None).await, sorted(vec![a, b]), "by id, two levels down");
    assert_eq!(matching(leak(format!("category={desk}")), None).await, vec![a]);
    assert_eq!(matching("category=nowhere", None).await, Vec::<Uuid>::new());
    assert_eq!(matching("category=lighting", Some(admin_token())).await, sorted(vec![a, b, e]));
    assert_eq!(matching("currency=JPY", None).await, vec![d]);
    assert_eq!(matching("currency=EUR&price_min=12&price_max=15", None).await, sorted(vec![a, c]), "inclusive");
    assert_eq!(matching("currency=EUR&price_min=15.0001", None).await, vec![b]);
    assert_eq!(matching("currency=JPY&price_max=1499", None).await, Vec::<Uuid>::new());
    assert_eq!(matching("in_stock=true", None).await, sorted(vec![a, c]));
    assert_eq!(matching("in_stock=false", None).await, sorted(vec![b, d]));
    assert_eq!(matching("attr.colour=red", None).await, sorted(vec![a, d]));
    assert_eq!(matching("attr.colour=red&attr.colour=blue", None).await, sorted(vec![a, c, d]), "values: or");
    assert_eq!(matching("attr.colour=red&attr.brand=Lumen", None).await, vec![a], "keys: and");
    assert_eq!(matching("attr.colour=red&attr.colour=blue&attr.brand=Acme", None).await, vec![c]);
    assert_eq!(matching("attr.brand=lumen", None).await, Vec::<Uuid>::new(), "values compare exactly");
    assert_eq!(matching("attr.size=L", None).await, Vec::<Uuid>::new());
    assert_eq!(
        matching("category=home&attr.brand=Lumen&in_stock=true&currency=EUR&price_max=20&q=a", None).await,
        vec![a],
        "everything at once"
    );
    assert_eq!(matching("status=draft", Some(admin_token())).await, vec![e]);
    let (status, _) = app.read("/api/v1/products?status=draft&category=lighting", Some(&customer_token())).await;
    assert_eq!(status, 403);
}

/// A product's id, name, price, creation and update time.
type Sorted = (Uuid, &'static str, &'static str, DateTime<Utc>, DateTime<Utc>);

#[tokio::test]
async fn every_sort_is_total_with_ties_broken_by_id_in_its_direction() {
    let app = spawn_app().await;
    let start = Utc::now() - Span::hours(1);
    let mut products: Vec<Sorted> = Vec::new();
    // Pairs of equal names, prices, creation and update times, in every combination.
    for (i, (name, price)) in
        [("Bowl", "5.00"), ("Bowl", "9.00"), ("Cup", "5.00"), ("Cup", "9.00"), ("Apron", "7.00"), ("Apron", "7.00")]
            .into_iter()
            .enumerate()
    {
        let id = Uuid::new_v4();
        let created = start + Span::minutes((i / 2) as i64);
        let updated = start + Span::minutes(10 + (i % 3) as i64);
        app.apply(&[
            product_created_with(id, json!({"name": name, "price": price}), created),
            event("Product", id, 2, "ProductUpdated", json!({"ProductUpdated": {"description": "x"}}), updated),
        ])
        .await;
        products.push((id, name, price, created, updated));
    }
    type Key = fn(&Sorted) -> String;
    let cases: [(&str, Key); 4] = [
        ("price", |p| format!("{:0>8}", p.2)),
        ("name", |p| p.1.to_owned()),
        ("created", |p| p.3.to_rfc3339()),
        ("updated", |p| p.4.to_rfc3339()),
    ];
    for (sort, key) in cases {
        let mut expected = products.clone();
        expected.sort_by_key(|p| (key(p), p.0));
        let expected: Vec<Uuid> = expected.iter().map(|p| p.0).collect();
        let mut descending = expected.clone();
        descending.reverse();
        assert_eq!(ids(&list(&app, &format!("sort={sort}"), None).await), expected, "{sort}");
        assert_eq!(ids(&list(&app, &format!("sort=-{sort}"), None).await), descending, "-{sort}");
        // Page by page (two at a time) gives the same order.
        for (sort, expected) in [(sort.to_owned(), &expected), (format!("-{sort}"), &descending)] {
            assert_eq!(&all_pages(&app, &format!("sort={sort}&limit=2"), None).await, expected, "{sort} in pages");
        }
    }
    assert_eq!(
        ids(&list(&app, "", None).await),
        ids(&list(&app, "sort=created", None).await),
        "created is the default without q"
    );
    // Relevance ties (the same words in the same fields) are broken by id, descending.
    let mut bowls: Vec<Uuid> = products.iter().filter(|p| p.1 == "Bowl").map(|p| p.0).collect();
    bowls.sort();
    bowls.reverse();
    assert_eq!(ids(&list(&app, "q=bowl", None).await), bowls);
    assert_eq!(all_pages(&app, "q=bowl&limit=1", None).await, bowls);
}

/// Every item id of every page, following `Link` from `query`.
async fn all_pages(app: &TestApp, query: &str, token: Option<&str>) -> Vec<Uuid> {
    let mut found = Vec::new();
    let mut path = format!("/api/v1/products?{query}");
    for _ in 0..100 {
        let mut request = app.get(&path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let link = response.headers().get("link").map(|link| link.to_str().unwrap().to_owned());
        let page: Value = response.json().await.unwrap();
        found.extend(ids(&page));
        match (link, page["next_cursor"].as_str()) {
            (Some(link), Some(cursor)) => {
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                assert!(link.contains(&format!("cursor={cursor}")), "{link}");
                path = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
            }
            (None, None) => return found,
            (link, cursor) => panic!("Link {link:?} and next_cursor {cursor:?} disagree"),
        }
    }
    panic!("more than 100 pages")
}

#[tokio::test]
async fn cursor_pages_list_each_product_once_while_products_move() {
    let app = spawn_app().await;
    let mut by_price = Vec::new();
    for i in 1..=12 {
        by_price.push(named(&app, &format!("p{i:02}"), json!({"price": format!("{i}.00")})).await);
    }
    let page = |query: String| {
        let app = &app;
        async move { list(app, &query, None).await }
    };
    let first = page("sort=price&limit=4".into()).await;
    assert_eq!(ids(&first), by_price[..4]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();

    // Between pages: a product already seen becomes the dearest, one not yet seen the cheapest,
    // one not yet seen is deleted, one is renamed, and a new one is created.
    let [seen, unseen, deleted, renamed] = [by_price[1], by_price[9], by_price[5], by_price[6]];
    app.apply(&[product_updated(seen, 2, json!({"price": "100.00"}))]).await;
    app.apply(&[product_updated(unseen, 2, json!({"price": "0.50"}))]).await;
    app.apply(&[product_deleted(deleted, 2)]).await;
    app.apply(&[product_updated(renamed, 2, json!({"name": "p07 renamed"}))]).await;
    let created = named(&app, "new", json!({"price": "5.50"})).await;

    let second = page(format!("sort=price&limit=4&cursor={cursor}")).await;
    assert_eq!(ids(&second), [by_price[4], by_price[6], by_price[7], by_price[8]], "p06 is gone, the others in place");
    assert_eq!(second["items"][1]["name"], "p07 renamed", "shown as it is now");
    let third = page(format!("sort=price&limit=4&cursor={}", second["next_cursor"].as_str().unwrap())).await;
    assert_eq!(ids(&third), by_price[9..], "p10 keeps the place it had when the listing began");
    assert_eq!(third["items"][0]["price"], "0.50", "shown as it is now");
    assert_eq!(third["next_cursor"], Value::Null);

    let mut listed: Vec<Uuid> = [ids(&first), ids(&second), ids(&third)].concat();
    let mut expected: Vec<Uuid> = by_price.iter().copied().filter(|id| *id != deleted).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "every product once: none twice, none skipped");
    assert!(!listed.contains(&created), "created after the listing began");
    // A new listing sees the catalog as it is now.
    let fresh = all_pages(&app, "sort=price&limit=5", None).await;
    assert_eq!(fresh.len(), 12);
    assert_eq!(fresh[0], unseen);
    assert_eq!(fresh[11], seen);
    assert!(fresh.contains(&created));

    // A product that a shopper may no longer see is left out of later pages.
    let shopper_first = page("sort=-price&limit=2".into()).await;
    let hidden = by_price[11];
    assert_eq!(ids(&shopper_first), [seen, hidden]);
    let next = page(format!("sort=-price&limit=2&cursor={}", shopper_first["next_cursor"].as_str().unwrap())).await;
    app.apply(&[product_updated(by_price[10], 2, json!({"status": "draft"}))]).await;
    let after = page(format!("sort=-price&limit=2&cursor={}", shopper_first["next_cursor"].as_str().unwrap())).await;
    assert_eq!(ids(&next), [by_price[10], by_price[8]]);
    assert_eq!(ids(&after), [by_price[8]], "the draft is left out, its place is kept");
    assert_eq!(after["next_cursor"], next["next_cursor"]);
}

#[tokio::test]
async fn offsets_still_work_up_to_ten_thousand_and_cursors_are_checked() {
    let app = spawn_app().await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(named(&app, &format!("p{i}"), json!({})).await);
    }
    let page = list(&app, "limit=2&offset=2", None).await;
    assert_eq!(ids(&page), all[2..4]);
    assert_eq!((page["offset"].clone(), page["total"].clone()), (json!(2), json!(5)));
    let rest = list(&app, &format!("limit=2&cursor={}", page["next_cursor"].as_str().unwrap()), None).await;
    assert_eq!(ids(&rest), all[4..], "an offset page's cursor continues after it");
    assert_eq!(list(&app, "offset=10000", None).await["items"], json!([]));
    assert_eq!(list(&app, "offset=10000", None).await["total"], 5);

    let cursor = list(&app, "limit=2&sort=name", None).await["next_cursor"].as_str().unwrap().to_owned();
    let forged = query_api::listing::Cursor {
        position: read_model::search::Position { key: read_model::search::SortKey::Name("p2".into()), id: Uuid::max() },
        frozen_at: Utc::now(),
        fuzzy: false,
        fingerprint: query_api::listing::ListRequest::parse(&[("sort".into(), "name".into())], false)
            .unwrap()
            .fingerprint(),
    }
    .encode(read_model::search::Sort::Name);
    assert_eq!(names(&list(&app, &format!("sort=name&cursor={forged}"), None).await), ["p3", "p4"], "a position");
    for (query, why) in [
        (format!("sort=price&cursor={cursor}"), "another sort"),
        (format!("sort=name&q=p&cursor={cursor}"), "another filter"),
        (format!("sort=name&cursor={cursor}&offset=0"), "with an offset"),
        (format!("sort=name&cursor={cursor}"), "an admin's listing differs"),
        ("cursor=bm90IGpzb24".to_owned(), "not JSON"),
        ("cursor=%00%01".to_owned(), "not base64"),
        (format!("cursor={}", "A".repeat(5000)), "too long"),
        (format!("sort=name&cursor={}", cursor.replace('e', "f")), "damaged"),
    ] {
        let token = (why == "an admin's listing differs").then(admin_token);
        let mut request = app.get(&format!("/api/v1/products?{query}"));
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let body = assert_problem(request.send().await.unwrap(), 400).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("`cursor`") || detail.contains("`offset`"), "{why}: {body}");
    }
}

#[tokio::test]
async fn bad_or_hostile_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let many_attributes: String = (0..1000).map(|i| format!("attr.k{i}=v&")).collect();
    for (query, name) in [
        ("q=".to_owned() + &"a".repeat(201), "q"),
        ("q=".to_owned() + &"lamp+".repeat(2000), "q"),
        ("q=a+b+c+d+e+f+g+h+i+j+k".to_owned(), "q"),
        (many_attributes, "attr.k50"),
        ("attr.Brand=x".to_owned(), "attr.Brand"),
        ("attr.brand=".to_owned(), "attr.brand"),
        ("attr.brand=".to_owned() + &"x".repeat(201), "attr.brand"),
        ("sort=relevance".to_owned(), "sort"),
        ("sort=popular".to_owned(), "sort"),
        ("category=%25".to_owned(), "category"),
        ("currency=eur".to_owned(), "currency"),
        ("currency=XTS".to_owned(), "currency"),
        ("price_min=10".to_owned(), "price_min"),
        ("currency=EUR&price_max=1e9".to_owned(), "price_max"),
        ("currency=EUR&price_min=-1".to_owned(), "price_min"),
        ("currency=EUR&price_min=99999999999999999999".to_owned(), "price_min"),
        ("currency=EUR&price_min=3&price_max=2".to_owned(), "price_max"),
        ("in_stock=1".to_owned(), "in_stock"),
        ("facets=colour".to_owned(), "facets"),
        ("facets=".to_owned(), "facets"),
        ("offset=10001".to_owned(), "offset"),
        ("limit=101".to_owned(), "limit"),
        ("q=lamp%00".to_owned(), "q"),
        ("attr.brand=%00".to_owned(), "attr.brand"),
    ] {
        let response = app.get(&format!("/api/v1/products?{query}")).send().await.unwrap();
        let body = assert_problem(response, 400).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("`{name}`")), "{}: {body}", &query[..query.len().min(60)]);
    }
    // Unknown parameters are still ignored, and the longest search still answers.
    assert_eq!(list(&app, "colour=red&page=2", None).await["total"], 0);
    list(&app, &format!("q={}", "%C3%A9".repeat(200)), None).await;
    list(&app, &format!("q={}", ["x"; 10].join("+")), None).await;
}

#[tokio::test]
async fn facets_count_the_query_and_every_filter_but_their_own_and_only_what_the_reader_sees() {
    let app = spawn_app().await;
    let home = app.a_category("Home", None).await;
    let lighting = app.a_category("Lighting", Some(home)).await;
    let desk = app.a_category("Desk lamps", Some(lighting)).await;
    let kitchen = app.a_category("Kitchen", None).await;
    let lamp = |categories: Vec<Uuid>, brand: &str, price: &str| json!({"category_ids": categories, "attributes": {"brand": brand}, "price": price, "description": "a lamp"});
    named(&app, "A", lamp(vec![desk], "Lumen", "15.00")).await;
    named(&app, "B", lamp(vec![lighting], "Lumen", "45.00")).await;
    named(&app, "C", lamp(vec![kitchen], "Acme", "120.00")).await;
    named(&app, "E", lamp(vec![desk, lighting], "Acme", "25.00")).await;
    let mut draft = lamp(vec![desk, kitchen], "Lumen", "8.00");
    draft["status"] = json!("draft");
    named(&app, "D", draft).await;
    named(&app, "F", json!({"name": "Kettle", "category_ids": [kitchen], "attributes": {"brand": "Acme"}})).await;

    let query = "q=lamp&facets=category,brand,price&category=lighting&attr.brand=Lumen&currency=EUR\
                 &price_min=10&price_max=30";
    let shopper = list(&app, query, None).await;
    assert_eq!(names(&shopper), ["A"]);
    let facets = &shopper["facets"];
    assert_eq!(
        facets["category"],
        json!([{"id": desk, "name": "Desk lamps", "count": 1}, {"id": home, "name": "Home", "count": 1},
               {"id": lighting, "name": "Lighting", "count": 1}]),
        "without the category filter: Lumen lamps from 10 to 30"
    );
    assert_eq!(
        facets["brand"],
        json!([{"value": "Acme", "count": 1}, {"value": "Lumen", "count": 1}]),
        "without the brand filter: lamps in lighting from 10 to 30"
    );
    assert_eq!(
        facets["price"],
        json!([{"min": "10", "max": "20", "count": 1}, {"min": "20", "max": "50", "count": 1}]),
        "without the price filter: Lumen lamps in lighting"
    );

    // Everything, for a shopper and for an admin (who also sees the draft).
    let all = list(&app, "q=lamp&facets=category,brand,price", None).await;
    assert_eq!(
        all["facets"]["category"],
        json!([{"id": home, "name": "Home", "count": 3}, {"id": lighting, "name": "Lighting", "count": 3},
               {"id": desk, "name": "Desk lamps", "count": 2}, {"id": kitchen, "name": "Kitchen", "count": 1}]),
        "a product in a category and its parent counts once"
    );
    assert_eq!(all["facets"]["brand"], json!([{"value": "Acme", "count": 2}, {"value": "Lumen", "count": 2}]));
    assert_eq!(
        all["facets"]["price"],
        json!([{"min": "10", "max": "20", "count": 1}, {"min": "20", "max": "50", "count": 2},
               {"min": "100", "max": "200", "count": 1}])
    );
    let admin = list(&app, "q=lamp&facets=brand,price", Some(&admin_token())).await;
    assert_eq!(admin["facets"]["brand"], json!([{"value": "Lumen", "count": 3}, {"value": "Acme", "count": 2}]));
    assert_eq!(admin["facets"]["price"][0], json!({"min": "5", "max": "10", "count": 1}));
    assert_eq!(admin["facets"]["category"], Value::Null, "not asked for");
    assert_eq!(list(&app, "q=lamp", None).await["facets"], Value::Null);
    // A price facet names open-ended ranges with a null max.
    named(&app, "Chandelier", json!({"price": "2000000.00", "description": "a lamp"})).await;
    let priced = list(&app, "q=lamp&facets=price", None).await;
    assert_eq!(
        priced["facets"]["price"].as_array().unwrap().last().unwrap(),
        &json!({"min": "1000000", "max": null, "count": 1})
    );
}

#[tokio::test]
async fn total_is_exact_up_to_the_limit_and_an_estimate_beyond() {
    let app = spawn_app_with(&["--list-exact-total-limit", "3"]).await;
    for i in 0..5 {
        named(&app, &format!("lamp {i}"), json!({"price": if i < 3 { "1.00" } else { "2.00" }})).await;
    }
    named(&app, "draft lamp", json!({"status": "draft"})).await;

    let over = list(&app, "limit=2", None).await;
    assert_eq!(over["total_is_estimate"], true);
    assert!(over["total"].as_i64().unwrap() >= 4, "{over}");
    let searched = list(&app, "limit=2&q=lamp", None).await;
    assert_eq!(searched["total_is_estimate"], true);
    assert!(searched["total"].as_i64().unwrap() >= 4, "{searched}");

    let exact = list(&app, "limit=2&currency=EUR&price_max=1", None).await;
    assert_eq!((exact["total"].clone(), exact["total_is_estimate"].clone()), (json!(3), json!(false)));
    let next = list(
        &app,
        &format!("limit=2&currency=EUR&price_max=1&cursor={}", exact["next_cursor"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!((next["total"].clone(), next["total_is_estimate"].clone()), (json!(3), json!(false)));
    // Facets without filters of their own count every match anyway: that total is exact.
    let faceted = list(&app, "limit=2&q=lamp&facets=brand", None).await;
    assert_eq!((faceted["total"].clone(), faceted["total_is_estimate"].clone()), (json!(5), json!(false)));
    let searched = list(&app, "limit=1&q=lamp+0", None).await;
    assert_eq!((searched["total"].clone(), searched["total_is_estimate"].clone()), (json!(1), json!(false)));
    // A search sorted by a column counts in the page's own statement, the same way.
    let sorted = list(&app, "limit=2&q=lamp&sort=price", None).await;
    assert_eq!(names(&sorted).len(), 2);
    assert_eq!(sorted["total_is_estimate"], true, "{sorted}");
    assert!(sorted["total"].as_i64().unwrap() >= 4, "{sorted}");
    let sorted = list(&app, "limit=2&q=lamp&sort=-price&currency=EUR&price_max=1", None).await;
    assert_eq!((sorted["total"].clone(), sorted["total_is_estimate"].clone()), (json!(3), json!(false)));
    let offset = list(&app, "limit=2&offset=2&q=lamp&sort=price&currency=EUR&price_max=1", None).await;
    assert_eq!(
        (names(&offset).len(), offset["total"].clone(), offset["total_is_estimate"].clone()),
        (1, json!(3), json!(false))
    );
    let beyond = list(&app, "limit=2&offset=4&q=lamp&sort=price&currency=EUR&price_max=1", None).await;
    assert_eq!((names(&beyond).len(), beyond["total"].clone()), (0, json!(3)));
}

#[tokio::test]
async fn beyond_the_sample_relevance_ranks_a_sample_and_facets_are_scaled_estimates() {
    let app = spawn_app_with(&["--list-sample", "3"]).await;
    for (i, brand) in ["Acme", "Acme", "Acme", "Lumen", "Lumen"].into_iter().enumerate() {
        named(&app, &format!("lamp {i}"), json!({"attributes": {"brand": brand}, "price": format!("{}.00", i + 1)}))
            .await;
    }
    named(&app, "Kettle", json!({"attributes": {"brand": "Acme"}})).await;

    // Relevance ranks the first three matches the index finds, over pages, each once.
    let mut listed = Vec::new();
    let mut page = list(&app, "q=lamp&limit=2", None).await;
    loop {
        listed.extend(ids(&page));
        assert_eq!((page["total"].clone(), page["total_is_estimate"].clone()), (json!(5), json!(false)), "{page}");
        let Some(cursor) = page["next_cursor"].as_str() else { break };
        page = list(&app, &format!("q=lamp&limit=2&cursor={cursor}"), None).await;
    }
    assert_eq!(listed.len(), 3, "a sample of three: {listed:?}");
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 3, "no product twice");
    let offset = list(&app, "q=lamp&limit=2&offset=2", None).await;
    assert_eq!((ids(&offset).len(), offset["total"].clone()), (1, json!(5)), "the sample ends, the total does not");
    // Other orders list every match.
    assert_eq!(names(&list(&app, "q=lamp&sort=price", None).await), ["lamp 0", "lamp 1", "lamp 2", "lamp 3", "lamp 4"]);

    // Facets count four matches (one more than the sample) and scale them to the five.
    let faceted = list(&app, "q=lamp&facets=brand,price", None).await;
    assert_eq!(faceted["facets"]["estimated"], true, "{faceted}");
    assert_eq!((faceted["total"].clone(), faceted["total_is_estimate"].clone()), (json!(5), json!(false)));
    let brands: i64 = faceted["facets"]["brand"].as_array().unwrap().iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert!((4..=6).contains(&brands), "about five in all: {faceted}");
    // A facet with a filter of its own samples on its own.
    let filtered = list(&app, "q=lamp&facets=brand&attr.brand=Lumen", None).await;
    assert_eq!(names(&filtered).len(), 2);
    assert_eq!(filtered["facets"]["estimated"], true, "brand ignores attr.brand: five lamps: {filtered}");
    // Within the sample, counts are exact.
    let few = list(&app, "q=lamp&facets=brand&attr.brand=Lumen&price_min=5&currency=EUR", None).await;
    assert_eq!(few["facets"]["estimated"], false, "{few}");
    assert_eq!(few["facets"]["brand"], json!([{"value": "Lumen", "count": 1}]));
}

/// A query-string value.
fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn leak(query: String) -> &'static str {
    Box::leak(query.into_boxed_str())
}
