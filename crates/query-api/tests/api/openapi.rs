//! The OpenAPI document against the routes the server really answers: the read API's
//! [`Contract`] (see `test_support::openapi` for what its check proves and what it does not),
//! and what the document says about tokens, parameters and the read model's views.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use test_support::openapi::{self, Contract};

use uuid::Uuid;

use crate::helpers::{admin_token, product_updated, spawn_app};

/// The read API's contract; it probes the write API's paths and prefixes as unlisted.
const READ_API: Contract = Contract {
    title: "Catalog read API",
    operations: &[
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ready"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/{id}"),
        ("GET", "/api/v1/products/{id}/history"),
        ("GET", "/api/v1/categories"),
        ("GET", "/api/v1/categories/{id}"),
        ("GET", "/api/v1/users/{id}"),
        ("GET", "/api/v1/users/me"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/reservations/{id}"),
    ],
    unlisted: &[
        "/api/v1/reservations",
        "/api/v1/reservations/{id}/confirm",
        "/",
        "/api",
        "/api/v1",
        "/api/v1/users/{id}/roles/{role}",
        "/api/v1/auth/token",
        "/openapi.yaml",
        "/api/v1/openapi.json",
        "/api/v1/products/{id}/stock-adjustments",
        "/api/v1/products/{id}/history/{version}",
        "/api/v1/categories/{id}/products",
    ],
    built: query_api::app::openapi,
};

#[tokio::test]
async fn the_document_and_the_routes_are_exactly_the_read_api() {
    let app = spawn_app().await;
    READ_API.check(&app).await;
}

#[tokio::test]
async fn profiles_and_history_need_the_bearer_scheme_and_products_take_it_optionally() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    for path in ["/api/v1/users/{id}", "/api/v1/products/{id}/history"] {
        let operation = &spec["paths"][path]["get"];
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        for status in ["200", "401", "403", "404", "503"] {
            assert!(operation["responses"][status].is_object(), "GET {path} documents {status}");
        }
    }
    for (path, statuses) in
        [("/api/v1/users/me", &["200", "401", "404"][..]), ("/api/v1/users", &["200", "400", "401", "403"])]
    {
        let operation = &spec["paths"][path]["get"];
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        for status in statuses {
            assert!(operation["responses"][status].is_object(), "GET {path} documents {status}");
        }
    }
    for (path, statuses) in [
        ("/api/v1/products", &["200", "400", "401", "403", "503"][..]),
        ("/api/v1/products/{id}", &["200", "304", "400", "401", "404", "503"]),
    ] {
        let operation = &spec["paths"][path]["get"];
        assert_eq!(operation["security"], json!([{}, {"bearer": []}]), "{path}: anonymous, or with a token");
        let documented: BTreeSet<&str> =
            operation["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(documented, statuses.iter().copied().collect(), "{path}");
    }
    for path in ["/api/v1/categories", "/api/v1/categories/{id}"] {
        assert!(spec["paths"][path]["get"]["security"].is_null(), "{path} needs no token");
    }
    let detail = &spec["paths"]["/api/v1/products/{id}"]["get"]["parameters"];
    let names: BTreeSet<&str> = detail.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["id", "min_version", "as_of", "version", "If-None-Match"]));
    let status = spec["paths"]["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .expect("status is documented");
    assert_eq!(spec["components"]["schemas"]["Status"]["enum"], json!(["draft", "published", "archived"]), "{status}");
    let limit = spec["paths"]["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit is documented");
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    // Every listing parameter, each described; `attr.<key>` by its most common key.
    let listing = spec["paths"]["/api/v1/products"]["get"]["parameters"].as_array().unwrap();
    let names: BTreeSet<&str> = listing.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "q",
            "category",
            "currency",
            "price_min",
            "price_max",
            "in_stock",
            "status",
            "attr.brand",
            "sort",
            "facets",
            "limit",
            "cursor",
            "offset"
        ])
    );
    for parameter in listing {
        assert_eq!(parameter["in"], "query", "{parameter}");
        assert!(parameter["description"].as_str().is_some_and(|d| d.len() > 20), "{parameter}");
    }
    let offset = listing.iter().find(|p| p["name"] == "offset").unwrap();
    assert_eq!((offset["deprecated"].clone(), offset["schema"]["maximum"].clone()), (json!(true), json!(10000)));
    let sort = listing.iter().find(|p| p["name"] == "sort").unwrap();
    let orders = &spec["components"]["schemas"][sort["schema"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap()];
    assert_eq!(
        orders["enum"],
        json!(["relevance", "price", "-price", "name", "-name", "created", "-created", "updated", "-updated"])
    );
    let description = spec["paths"]["/api/v1/products"]["get"]["description"].as_str().unwrap();
    assert!(description.contains("attr.<key>=<value>"), "{description}");
    let ok = &spec["paths"]["/api/v1/products"]["get"]["responses"]["200"];
    assert!(ok["headers"]["Link"].is_object(), "the next page's Link header is documented");
}

/// Real answers of every operation, checked against the schema the document gives for their
/// status (what schemathesis checks in CI, here with known data that fills every field): no
/// field left out of a schema or missing from an answer, types, formats, enums and bounds.
#[tokio::test]
async fn every_answer_matches_its_documented_schema() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    let lighting = app.a_category("Lighting", None).await;
    let desk = app.a_category("Desk lamps", Some(lighting)).await;
    let id = app
        .a_product_with(json!({
            "sku": "LAMP-1", "category_ids": [desk], "attributes": {"colour": "brass"},
            "images": [{"url": "https://img.example.com/1.jpg", "alt": "Lit"}, {"url": "https://img.example.com/2.jpg"}],
            "on_hand": 3, "price": "1.500", "currency": "BHD",
        }))
        .await;
    let draft = app.a_product_with(json!({"status": "draft"})).await;
    app.apply(&[product_updated(id, 2, json!({"name": "Desk lamp", "sku": null}))]).await;
    let lamp = json!({"name": "Espresso lamp", "category_ids": [lighting], "attributes": {"brand": "Lumen"}});
    app.a_product_with(lamp).await;
    let (_, first) = app.read("/api/v1/products?limit=1", None).await;
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let (user, customer) = app.a_user("ann", &[], domain::Role::Customer).await;
    let admin = admin_token();

    let product = format!("/api/v1/products/{id}");
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("/api/v1/products", "/api/v1/products".into(), None, 200),
        ("/api/v1/products", "/api/v1/products?status=draft".into(), Some(&admin), 200),
        ("/api/v1/products", "/api/v1/products?status=draft".into(), None, 403),
        ("/api/v1/products", "/api/v1/products?limit=0".into(), None, 400),
        ("/api/v1/products", "/api/v1/products?limit=1&q=lamp&facets=category,brand,price".into(), None, 200),
        ("/api/v1/products", "/api/v1/products?limit=1&sort=-price&in_stock=true".into(), Some(&admin), 200),
        ("/api/v1/products", format!("/api/v1/products?limit=1&cursor={cursor}"), None, 200),
        ("/api/v1/products", "/api/v1/products?q=espreso&facets=brand".into(), None, 200),
        ("/api/v1/products", "/api/v1/products?attr.colour=%00".into(), None, 400),
        ("/api/v1/products", "/api/v1/products?cursor=forged".into(), None, 400),
        ("/api/v1/products", "/api/v1/products".into(), Some("not-a-token"), 401),
        ("/api/v1/products/{id}", product.clone(), None, 200),
        ("/api/v1/products/{id}", format!("{product}?version=1"), None, 200),
        ("/api/v1/products/{id}", format!("/api/v1/products/{draft}"), Some(&admin), 200),
        ("/api/v1/products/{id}", format!("/api/v1/products/{draft}"), None, 404),
        ("/api/v1/products/{id}", format!("{product}?as_of=never"), None, 400),
        ("/api/v1/products/{id}/history", format!("{product}/history"), Some(&admin), 200),
        ("/api/v1/products/{id}/history", format!("{product}/history?limit=1"), Some(&admin), 200),
        ("/api/v1/products/{id}/history", format!("{product}/history"), Some(&customer), 403),
        ("/api/v1/products/{id}/history", format!("{product}/history"), None, 401),
        ("/api/v1/products/{id}/history", format!("{product}/history?cursor=x"), Some(&admin), 400),
        ("/api/v1/products/{id}/history", format!("/api/v1/products/{}/history", Uuid::new_v4()), Some(&admin), 404),
        ("/api/v1/categories", "/api/v1/categories".into(), None, 200),
        ("/api/v1/categories/{id}", format!("/api/v1/categories/{lighting}"), None, 200),
        ("/api/v1/categories/{id}", format!("/api/v1/categories/{}", Uuid::new_v4()), None, 404),
        ("/api/v1/users/{id}", format!("/api/v1/users/{user}"), Some(&customer), 200),
    ];
    for (template, path, token, status) in cases {
        let (served, body) = app.read(&path, token).await;
        assert_eq!(served, status, "{path}: {body}");
        let mut response = &spec["paths"][template]["get"]["responses"][status.to_string()];
        if let Some(reference) = response["$ref"].as_str() {
            response = &spec["components"]["responses"][reference.rsplit('/').next().unwrap()];
        }
        let content = response["content"].as_object().unwrap_or_else(|| panic!("{template} documents {status}"));
        let schema = &content.values().next().unwrap()["schema"];
        if let Err(error) = conforms(&spec, schema, &body, "") {
            panic!("GET {path} ({status}) does not match its schema: {error}\n{body:#}");
        }
    }
    // The check itself catches what it is for.
    let (_, body) = app.read(&product, None).await;
    let schema = json!({"$ref": "#/components/schemas/Product"});
    assert_eq!(conforms(&spec, &schema, &body, ""), Ok(()));
    for (field, bad) in
        [("extra", json!(1)), ("status", json!("gone")), ("id", json!("x")), ("stock", json!({"on_hand": -1}))]
    {
        let mut wrong = body.clone();
        wrong[field] = bad;
        assert!(conforms(&spec, &schema, &wrong, "").is_err(), "{field}");
    }
    let mut wrong = body.clone();
    wrong["attributes"]["size"] = json!(3);
    assert!(conforms(&spec, &schema, &wrong, "").is_err(), "attribute values are strings");
    let mut wrong = body.clone();
    wrong.as_object_mut().unwrap().remove("sku");
    assert!(conforms(&spec, &schema, &wrong, "").is_err(), "sku is always sent");

    // Every field of the read API's own types is always sent (`null` when empty).
    for name in [
        "Product",
        "Page",
        "Facets",
        "CategoryFacet",
        "ValueFacet",
        "PriceFacet",
        "CategoryRef",
        "Image",
        "Stock",
        "CategoryNode",
        "HistoryPage",
        "HistoryItem",
        "Change",
        "User",
    ] {
        let schema = &spec["components"]["schemas"][name];
        let described: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let required: BTreeSet<&str> =
            schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, described, "{name}: every field is always present");
    }
}

/// `value` against `schema` for the keywords this document uses; objects must not carry
/// properties their schema does not describe.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return conforms(spec, &spec["components"]["schemas"][name], value, at);
    }
    for keyword in ["oneOf", "anyOf"] {
        if let Some(options) = schema[keyword].as_array() {
            if !options.iter().any(|option| conforms(spec, option, value, at).is_ok()) {
                return Err(format!("{at}: {value} matches none of {keyword}"));
            }
        }
    }
    for option in schema["allOf"].as_array().into_iter().flatten() {
        conforms(spec, option, value, at)?;
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let number_allowed = kind == "integer" && allowed.contains(&"number");
    if !(allowed.is_empty() || allowed.contains(&kind) || number_allowed) {
        return Err(format!("{at}: {value} is {kind}, not {allowed:?}"));
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if number < minimum {
            return Err(format!("{at}: {number} < {minimum}"));
        }
    }
    if let (Some(maximum), Some(number)) = (schema["maximum"].as_f64(), value.as_f64()) {
        if number > maximum {
            return Err(format!("{at}: {number} > {maximum}"));
        }
    }
    if let (Some(format), Some(text)) = (schema["format"].as_str(), value.as_str()) {
        let valid = match format {
            "uuid" => text.parse::<Uuid>().is_ok(),
            "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            _ => true,
        };
        if !valid {
            return Err(format!("{at}: {text:?} is not a {format}"));
        }
    }
    if let Value::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            conforms(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
    }
    let properties = schema["properties"].as_object();
    // A schema with neither (like `Change`'s any-value `from` and `to`) says nothing of fields.
    let describes_fields = properties.is_some() || schema["additionalProperties"].is_object();
    if let (Value::Object(fields), true) = (value, describes_fields) {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(required.as_str().unwrap()) {
                return Err(format!("{at}: required `{required}` is missing"));
            }
        }
        for (name, field) in fields {
            let path = format!("{at}.{name}");
            match (properties.and_then(|p| p.get(name)), &schema["additionalProperties"]) {
                (Some(property), _) => conforms(spec, property, field, &path)?,
                (None, additional) if additional.is_object() => conforms(spec, additional, field, &path)?,
                (None, _) => return Err(format!("{path} is not in the schema")),
            }
        }
    }
    Ok(())
}
