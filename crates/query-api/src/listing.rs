//! The parameters of `GET /api/v1/products` as a listing request: parsed, bounded and checked
//! (every bad parameter is a 400 naming it), and the opaque cursor that continues a listing.
//!
//! A cursor is base64url JSON: the sort, the position of the last row served, the instant the
//! listing is frozen at, whether the text search went fuzzy, and a fingerprint of the filter
//! and sort it was issued for. It is not secret and not signed: a forged one can only start a
//! page somewhere else in the same listing, which any client may ask for anyway; one that does
//! not decode, or belongs to another filter or sort, is a 400.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use domain::{Currency, ProductStatus, Role};
use http_api::problem::ApiError;
use read_model::search::{FacetRequest, Position, Sort, SortKey};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// `offset` is deprecated; it keeps working this far.
pub const MAX_OFFSET: i64 = 10_000;
/// Longest `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words (separated by white space) in `q`.
pub const MAX_QUERY_WORDS: usize = 10;
/// Most `attr.<key>` parameters in one request (values of all keys together).
pub const MAX_ATTRIBUTE_PARAMS: usize = 50;
/// Longest attribute value, as the write side allows.
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 200;
/// Longest cursor this API hands out is far below this.
const MAX_CURSOR_CHARS: usize = 2048;
/// Prices are stored as `numeric(18,4)`: bounds beyond are refused rather than compared.
const MAX_PRICE: i64 = 100_000_000_000_000;

/// The prefix of attribute filters: `attr.colour=red`.
pub const ATTRIBUTE_PREFIX: &str = "attr.";

/// What a listing request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub limit: i64,
    pub offset: Option<i64>,
    pub cursor: Option<Cursor>,
    pub q: Option<String>,
    pub sort: Sort,
    /// A category id, or a slug.
    pub category: Option<CategoryRef>,
    pub currency: Option<String>,
    pub price_min: Option<Decimal>,
    pub price_max: Option<Decimal>,
    pub in_stock: Option<bool>,
    /// `None`: every status (admins only).
    pub statuses: Option<Vec<ProductStatus>>,
    /// By key (sorted), each key's values in the order given, without repeats.
    pub attributes: Vec<(String, Vec<String>)>,
    pub facets: FacetRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CategoryRef {
    Id(Uuid),
    Slug(String),
}

/// The state a listing continues from.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub position: Position,
    pub frozen_at: DateTime<Utc>,
    pub fuzzy: bool,
    pub fingerprint: String,
}

fn bad(name: &str, rule: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("query parameter `{name}` {rule}"))
}

impl ListRequest {
    /// Parses the query string's pairs (in order; a repeated parameter other than `attr.<key>`
    /// counts once, with its last value) for a reader who is an admin or not. Unknown
    /// parameters are ignored.
    pub fn parse(pairs: &[(String, String)], admin: bool) -> Result<Self, ApiError> {
        let mut single: HashMap<&str, &str> = HashMap::new();
        let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
        let mut attribute_params = 0;
        for (name, value) in pairs {
            if let Some(key) = name.strip_prefix(ATTRIBUTE_PREFIX) {
                attribute_params += 1;
                if attribute_params > MAX_ATTRIBUTE_PARAMS {
                    return Err(bad(
                        name,
                        format!("is one `attr.` parameter too many: at most {MAX_ATTRIBUTE_PARAMS}"),
                    ));
                }
                if !valid_attribute_key(key) {
                    return Err(bad(name, "must name an attribute key: 1 to 40 of a-z, 0-9 and _"));
                }
                let chars = value.chars().count();
                if chars == 0 || chars > MAX_ATTRIBUTE_VALUE_CHARS || value.contains('\0') {
                    return Err(bad(
                        name,
                        format!("must be 1 to {MAX_ATTRIBUTE_VALUE_CHARS} characters, none of them NUL"),
                    ));
                }
                match attributes.iter_mut().find(|(known, _)| known == key) {
                    Some((_, values)) if values.contains(value) => {}
                    Some((_, values)) => values.push(value.clone()),
                    None => attributes.push((key.to_owned(), vec![value.clone()])),
                }
            } else {
                single.insert(name, value);
            }
        }
        attributes.sort_by(|a, b| a.0.cmp(&b.0));

        let limit = integer(&single, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let offset = integer(&single, "offset", 0, i64::MAX)?;
        if offset.is_some_and(|offset| offset > MAX_OFFSET) {
            return Err(bad(
                "offset",
                format!("must be at most {MAX_OFFSET} (it is deprecated): follow `next_cursor` to page further"),
            ));
        }
        let q = match single.get("q") {
            None => None,
            Some(raw) => {
                if raw.chars().count() > MAX_QUERY_CHARS {
                    return Err(bad("q", format!("must be at most {MAX_QUERY_CHARS} characters")));
                }
                if raw.contains('\0') {
                    return Err(bad("q", "must not contain NUL characters"));
                }
                if raw.split_whitespace().count() > MAX_QUERY_WORDS {
                    return Err(bad("q", format!("must have at most {MAX_QUERY_WORDS} words")));
                }
                // Nothing to search for (blank, or only punctuation): no text filter at all.
                raw.chars().any(char::is_alphanumeric).then(|| (*raw).to_owned())
            }
        };
        let sort = match single.get("sort") {
            None if q.is_some() => Sort::Relevance,
            None => Sort::Created,
            Some(raw) => Sort::parse(raw.trim()).ok_or_else(|| {
                bad(
                    "sort",
                    format!(
                        "must be one of {}, not {raw:?}",
                        Sort::ALL.iter().map(|sort| sort.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?,
        };
        if sort == Sort::Relevance && q.is_none() {
            return Err(bad("sort", "can be `relevance` only with a search text `q`"));
        }
        let category = match single.get("category").map(|raw| raw.trim()) {
            None => None,
            Some(raw) => Some(match raw.parse::<Uuid>() {
                Ok(id) => CategoryRef::Id(id),
                Err(_) if valid_slug(raw) => CategoryRef::Slug(raw.to_owned()),
                Err(_) => return Err(bad("category", format!("must be a category id or slug, not {raw:?}"))),
            }),
        };
        let currency = match single.get("currency") {
            None => None,
            Some(raw) => Some(
                Currency::parse(raw.trim())
                    .map_err(|violation| bad("currency", format!("is not usable: {}", violation.message)))?
                    .code()
                    .to_owned(),
            ),
        };
        let price_min = price(&single, "price_min")?;
        let price_max = price(&single, "price_max")?;
        for (name, given) in [("price_min", price_min.is_some()), ("price_max", price_max.is_some())] {
            if given && currency.is_none() {
                return Err(bad(name, "needs `currency`: prices compare only within one currency"));
            }
        }
        if let (Some(min), Some(max)) = (price_min, price_max) {
            if max < min {
                return Err(bad("price_max", "must not be below `price_min`"));
            }
        }
        let in_stock = match single.get("in_stock").map(|raw| raw.trim()) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(raw) => return Err(bad("in_stock", format!("must be true or false, not {raw:?}"))),
        };
        let status = match single.get("status") {
            None => None,
            Some(raw) => Some(
                raw.trim()
                    .parse::<ProductStatus>()
                    .map_err(|_| bad("status", format!("must be draft, published or archived, not {raw:?}")))?,
            ),
        };
        let statuses = match (admin, status) {
            (true, status) => status.map(|status| vec![status]),
            (false, None | Some(ProductStatus::Published)) => Some(vec![ProductStatus::Published]),
            (false, Some(_)) => return Err(ApiError::Forbidden(Role::Admin.as_str())),
        };
        let facets = match single.get("facets") {
            None => FacetRequest::default(),
            Some(raw) => {
                let mut facets = FacetRequest::default();
                for name in raw.split(',').map(str::trim) {
                    match name {
                        "category" => facets.category = true,
                        "brand" => facets.brand = true,
                        "price" => facets.price = true,
                        _ => {
                            return Err(bad(
                                "facets",
                                format!("must list facets among category, brand and price, not {name:?}"),
                            ))
                        }
                    }
                }
                facets
            }
        };

        let mut request = ListRequest {
            limit,
            offset,
            cursor: None,
            q,
            sort,
            category,
            currency,
            price_min,
            price_max,
            in_stock,
            statuses,
            attributes,
            facets,
        };
        if let Some(raw) = single.get("cursor") {
            if offset.is_some() {
                return Err(bad("cursor", "cannot be combined with `offset`"));
            }
            let cursor = Cursor::decode(raw, sort)
                .ok_or_else(|| bad("cursor", "is not a cursor this API returned (pass `next_cursor` as it is)"))?;
            if cursor.fingerprint != request.fingerprint() {
                return Err(bad(
                    "cursor",
                    "was returned for another listing: keep every other parameter (but `limit`) as it was",
                ));
            }
            request.cursor = Some(cursor);
        }
        Ok(request)
    }

    /// What a cursor is tied to: the filter, the reader's statuses and the sort (not the page
    /// size or facets). FNV-1a over a canonical text: stable across builds and restarts.
    pub fn fingerprint(&self) -> String {
        let canonical = self.canonical().to_string();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in canonical.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// What the listing cache keys a page by: everything the answer depends on, in full (a
    /// hash could be made to collide): the filter, statuses and sort, page size, offset and
    /// facets. `None` for pages it does not cache: those continuing a cursor.
    pub fn cache_key(&self) -> Option<String> {
        if self.cursor.is_some() {
            return None;
        }
        let facets = [self.facets.category, self.facets.brand, self.facets.price];
        Some(serde_json::json!([self.canonical(), self.limit, self.offset.unwrap_or(0), facets]).to_string())
    }

    /// The filter, the reader's statuses and the sort, canonically.
    fn canonical(&self) -> serde_json::Value {
        serde_json::json!([
            self.q,
            self.sort.as_str(),
            match &self.category {
                None => String::new(),
                Some(CategoryRef::Id(id)) => id.to_string(),
                Some(CategoryRef::Slug(slug)) => slug.clone(),
            },
            self.currency,
            self.price_min.map(|price| price.normalize().to_string()),
            self.price_max.map(|price| price.normalize().to_string()),
            self.in_stock,
            self.statuses.as_ref().map(|statuses| statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            self.attributes,
        ])
    }
}

fn integer(params: &HashMap<&str, &str>, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    raw.trim().parse::<i64>().ok().filter(|value| (min..=max).contains(value)).map(Some).ok_or_else(|| {
        let range = if max == i64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
        bad(name, format!("must be an integer {range}, not {raw:?}"))
    })
}

/// A price bound: a plain decimal number ≥ 0 (`12`, `12.5`), at most 4 fraction digits.
fn price(params: &HashMap<&str, &str>, name: &str) -> Result<Option<Decimal>, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    let trimmed = raw.trim();
    let plain = !trimmed.is_empty()
        && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.')
        && trimmed.chars().filter(|c| *c == '.').count() <= 1
        && trimmed.chars().any(|c| c.is_ascii_digit());
    plain
        .then(|| trimmed.parse::<Decimal>().ok())
        .flatten()
        .filter(|value| value.scale() <= 4 && *value < Decimal::from(MAX_PRICE))
        .map(Some)
        .ok_or_else(|| bad(name, format!("must be a decimal number of at least 0 such as 19.99, not {raw:?}")))
}

fn valid_attribute_key(key: &str) -> bool {
    (1..=40).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_slug(slug: &str) -> bool {
    (1..=100).contains(&slug.len())
        && slug
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The cursor's wire form.
#[derive(Serialize, Deserialize)]
struct Wire {
    /// The sort.
    s: String,
    /// The sort key of the last row: RFC 3339 (microseconds) for times, a decimal string for prices,
    /// the name, or the bits of a relevance score.
    k: serde_json::Value,
    /// The last row's id.
    i: Uuid,
    /// The instant the listing is frozen at.
    t: DateTime<Utc>,
    /// Fuzzy text search.
    z: bool,
    /// The listing's fingerprint.
    f: String,
}

impl Cursor {
    pub fn encode(&self, sort: Sort) -> String {
        let key = match &self.position.key {
            SortKey::Rank(rank) => serde_json::json!(rank.to_bits()),
            SortKey::Price(price) => serde_json::json!(price.to_string()),
            SortKey::Name(name) => serde_json::json!(name),
            SortKey::At(at) => serde_json::json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        };
        let wire = Wire {
            s: sort.as_str().to_owned(),
            k: key,
            i: self.position.id,
            t: self.frozen_at,
            z: self.fuzzy,
            f: self.fingerprint.clone(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// A cursor for `sort`, or `None` if `raw` is not one.
    pub fn decode(raw: &str, sort: Sort) -> Option<Cursor> {
        if raw.len() > MAX_CURSOR_CHARS {
            return None;
        }
        let wire: Wire = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw.trim()).ok()?).ok()?;
        if Sort::parse(&wire.s)? != sort {
            return None;
        }
        let key = match sort {
            Sort::Relevance => {
                let rank = f32::from_bits(u32::try_from(wire.k.as_u64()?).ok()?);
                if !rank.is_finite() {
                    return None;
                }
                SortKey::Rank(rank)
            }
            Sort::Price | Sort::PriceDesc => SortKey::Price(wire.k.as_str()?.parse().ok()?),
            Sort::Name | Sort::NameDesc => {
                SortKey::Name(wire.k.as_str().filter(|name| !name.contains('\0'))?.to_owned())
            }
            Sort::Created | Sort::CreatedDesc | Sort::Updated | Sort::UpdatedDesc => {
                SortKey::At(DateTime::parse_from_rfc3339(wire.k.as_str()?).ok()?.with_timezone(&Utc))
            }
        };
        Some(Cursor { position: Position { key, id: wire.i }, frozen_at: wire.t, fuzzy: wire.z, fingerprint: wire.f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)], admin: bool) -> Result<ListRequest, ApiError> {
        let pairs: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ListRequest::parse(&pairs, admin)
    }

    fn rejects(query: &[(&str, &str)], name: &str) {
        match parse(query, true) {
            Err(ApiError::BadRequest(detail)) => assert!(detail.contains(&format!("`{name}`")), "{query:?}: {detail}"),
            other => panic!("{query:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_unknown_parameters() {
        let request = parse(&[("whatever", "1")], false).unwrap();
        assert_eq!((request.limit, request.offset, request.sort), (20, None, Sort::Created));
        assert_eq!(request.statuses, Some(vec![ProductStatus::Published]));
        assert_eq!(parse(&[("q", "lamp")], false).unwrap().sort, Sort::Relevance);
        assert_eq!(parse(&[("q", " !! ")], false).unwrap().q, None, "nothing to search for");
    }

    #[test]
    fn attributes_group_by_key_and_are_bounded() {
        let request = parse(
            &[("attr.colour", "red"), ("attr.brand", "Acme"), ("attr.colour", "blue"), ("attr.colour", "red")],
            true,
        )
        .unwrap();
        assert_eq!(
            request.attributes,
            vec![
                ("brand".to_owned(), vec!["Acme".to_owned()]),
                ("colour".to_owned(), vec!["red".into(), "blue".into()])
            ]
        );
        let many: Vec<(String, String)> =
            (0..=MAX_ATTRIBUTE_PARAMS).map(|i| ("attr.k".to_owned(), format!("v{i}"))).collect();
        assert!(ListRequest::parse(&many, true).is_err());
        rejects(&[("attr.Colour", "red")], "attr.Colour");
        rejects(&[("attr.", "red")], "attr.");
        rejects(&[("attr.colour", "")], "attr.colour");
    }

    #[test]
    fn bad_values_name_their_parameter() {
        rejects(&[("limit", "0")], "limit");
        rejects(&[("offset", "10001")], "offset");
        rejects(&[("sort", "relevance")], "sort");
        rejects(&[("sort", "cheapest")], "sort");
        rejects(&[("q", &"a".repeat(201))], "q");
        rejects(&[("q", "a b c d e f g h i j k")], "q");
        rejects(&[("q", "lamp\0")], "q");
        rejects(&[("attr.colour", "red\0")], "attr.colour");
        rejects(&[("category", "Not A Slug")], "category");
        rejects(&[("currency", "XXX")], "currency");
        rejects(&[("price_min", "1")], "price_min");
        for bad in ["-1", "1e3", "x", "", "1.23456", "NaN", "1.2.3", "."] {
            rejects(&[("currency", "EUR"), ("price_max", bad)], "price_max");
        }
        rejects(&[("currency", "EUR"), ("price_min", "5"), ("price_max", "4")], "price_max");
        rejects(&[("in_stock", "yes")], "in_stock");
        rejects(&[("status", "gone")], "status");
        rejects(&[("facets", "category,colour")], "facets");
        rejects(&[("cursor", "not-a-cursor")], "cursor");
        rejects(&[("cursor", "x"), ("offset", "0")], "cursor");
        assert!(matches!(parse(&[("status", "draft")], false), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn the_cache_key_holds_everything_the_page_depends_on() {
        let key = |query: &[(&str, &str)]| parse(query, false).unwrap().cache_key().unwrap();
        let base = key(&[("q", "lamp")]);
        assert_eq!(key(&[("q", "lamp"), ("unknown", "x")]), base, "unknown parameters change nothing");
        assert_eq!(key(&[("q", "lamp"), ("offset", "0")]), base, "offset 0 is the first page");
        let others = [
            key(&[("q", "lamp ")]),
            key(&[("q", "lamps")]),
            key(&[("q", "lamp"), ("limit", "21")]),
            key(&[("q", "lamp"), ("offset", "1")]),
            key(&[("q", "lamp"), ("sort", "price")]),
            key(&[("q", "lamp"), ("facets", "brand")]),
            key(&[("q", "lamp"), ("facets", "brand,price")]),
            key(&[("q", "lamp"), ("in_stock", "true")]),
            key(&[("q", "lamp"), ("category", "lighting")]),
            key(&[("q", "lamp"), ("currency", "EUR")]),
            key(&[("q", "lamp"), ("currency", "EUR"), ("price_max", "5")]),
            key(&[("q", "lamp"), ("attr.brand", "Acme")]),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(other, &base, "{other}");
            assert!(others[i + 1..].iter().all(|later| later != other), "{other}");
        }
        let request = parse(&[("sort", "name")], false).unwrap();
        let cursor = Cursor {
            position: Position { key: SortKey::Name("Lamp".into()), id: Uuid::new_v4() },
            frozen_at: Utc::now(),
            fuzzy: false,
            fingerprint: request.fingerprint(),
        };
        let continued = parse(&[("sort", "name"), ("cursor", &cursor.encode(Sort::Name))], false).unwrap();
        assert_eq!(continued.cache_key(), None, "pages after the first are not cached");
    }

    #[test]
    fn a_cursor_round_trips_and_is_tied_to_its_listing() {
        let request = parse(&[("q", "lamp"), ("sort", "-price")], false).unwrap();
        let at = Utc::now();
        let cursor = Cursor {
            position: Position { key: SortKey::Price("19.99".parse().unwrap()), id: Uuid::new_v4() },
            frozen_at: at,
            fuzzy: true,
            fingerprint: request.fingerprint(),
        };
        let encoded = cursor.encode(Sort::PriceDesc);
        let decoded = parse(&[("q", "lamp"), ("sort", "-price"), ("cursor", &encoded)], false).unwrap();
        assert_eq!(decoded.cursor, Some(cursor));
        rejects(&[("q", "lamps"), ("sort", "-price"), ("cursor", &encoded)], "cursor");
        rejects(&[("q", "lamp"), ("sort", "price"), ("cursor", &encoded)], "cursor");
        let rank = Cursor {
            position: Position { key: SortKey::Rank(0.0607927), id: Uuid::new_v4() },
            frozen_at: at,
            fuzzy: false,
            fingerprint: String::new(),
        };
        assert_eq!(Cursor::decode(&rank.encode(Sort::Relevance), Sort::Relevance), Some(rank));
    }
}
