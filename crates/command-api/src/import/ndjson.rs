//! NDJSON input: one JSON object per line, read line by line with a cap on each line's length.

use std::collections::BTreeMap;

use domain::{FieldViolation, ProductStatus};
use futures::future;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{read_violation, too_many_lines, Item, Limits, ProductLine, Rejected, StartError};
use crate::routes::products::{images, Attributes, Image, StatusSchema};
use crate::routes::Price;

/// One line of an NDJSON import: a product's fields as `POST /api/v1/products` takes them (and
/// `PATCH` for a SKU that exists), with a required `sku`, categories by slug and/or id, and
/// `stock` for a new product's stock. A field left out (or `null`) is not changed; for a new
/// product it takes its default (`name` and `price` are required then).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "sku": "LAMP-01", "name": "Desk lamp", "description": "Warm light, dimmable", "price": "19.99",
    "currency": "EUR", "status": "published", "category_slugs": ["lighting", "desks"],
    "attributes": {"brand": "Lumen", "colour": "brass"},
    "images": [{"url": "https://images.example.com/lamp.jpg", "alt": "The lamp"}], "stock": 12
}))]
pub struct ImportProduct {
    /// What the line is matched on, regardless of case: 1 to 64 characters of
    /// `A-Z a-z 0-9 . _ -`. A different case than the product's changes the product's SKU.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$", example = "LAMP-01")]
    sku: String,
    /// 1 to 100 characters after trimming; required for a new SKU.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
    /// Required for a new SKU. In the line's `currency`, or the product's (an existing product)
    /// or the catalog's default currency (a new one).
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    #[schema(value_type = Option<Price>, required = false)]
    price: Option<Decimal>,
    /// ISO 4217 code.
    #[serde(default)]
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: Option<String>,
    /// `published` for a new product when absent; otherwise the allowed transitions apply.
    #[serde(default)]
    #[schema(value_type = Option<StatusSchema>)]
    status: Option<ProductStatus>,
    /// Categories by id; with `category_slugs`, the product is in both lists' categories.
    #[serde(default)]
    category_ids: Option<Vec<Uuid>>,
    /// Categories by slug (each must name a category: `unknown_category` otherwise).
    #[serde(default)]
    #[schema(example = json!(["lighting"]))]
    category_slugs: Option<Vec<String>>,
    /// Replaces the product's attributes as a whole.
    #[serde(default)]
    #[schema(value_type = Option<Attributes>)]
    attributes: Option<BTreeMap<String, String>>,
    /// Replaces the product's images; at most 20.
    #[serde(default)]
    #[schema(max_items = 20)]
    images: Option<Vec<Image>>,
    /// A new product's units in stock (0 when absent); ignored for a SKU that exists, whose
    /// stock changes only by adjustments.
    #[serde(default)]
    #[schema(minimum = 0)]
    stock: Option<i64>,
}

impl From<ImportProduct> for ProductLine {
    fn from(line: ImportProduct) -> Self {
        ProductLine {
            sku: line.sku,
            name: line.name,
            description: line.description,
            price: line.price,
            currency: line.currency,
            status: line.status,
            category_ids: line.category_ids,
            category_slugs: line.category_slugs,
            attributes: line.attributes,
            images: line.images.as_deref().map(images),
            stock: line.stock,
        }
    }
}

/// The product lines of `input`, after reading up to the first one: [`StartError::Empty`] when
/// there is none.
pub(super) async fn source<R>(input: R, limits: Limits) -> Result<BoxStream<'static, Item>, StartError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let mut lines = Lines {
        reader: BufReader::with_capacity(64 * 1024, input),
        limits,
        line: 0,
        products: 0,
        done: false,
        buffer: Vec::new(),
    };
    match lines.next().await {
        None => Err(StartError::Empty),
        Some(Item::Stop { violation, .. }) if lines.products == 0 => Err(StartError::Unreadable(violation)),
        Some(first) => {
            let rest = stream::unfold(lines, |mut lines| async move { lines.next().await.map(|item| (item, lines)) });
            Ok(stream::once(future::ready(first)).chain(rest).boxed())
        }
    }
}

struct Lines<R> {
    reader: BufReader<R>,
    limits: Limits,
    /// The number of the last line read.
    line: u64,
    /// Product lines handed on (or refused) so far.
    products: u64,
    done: bool,
    buffer: Vec<u8>,
}

/// One line of the input, without its line break.
enum RawLine {
    Text,
    /// Longer than the limit: skipped up to its line break.
    TooLong,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    async fn next(&mut self) -> Option<Item> {
        while !self.done {
            let raw = match self.read_line().await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(error) => {
                    self.done = true;
                    return Some(Item::Stop { line: self.line + 1, violation: read_violation(&error) });
                }
            };
            let text = trim(&self.buffer, self.line == 1);
            if matches!(raw, RawLine::Text) && text.is_empty() {
                continue;
            }
            self.products += 1;
            if self.limits.max_lines.is_some_and(|max| self.products > max) {
                self.done = true;
                // The rest is read and dropped (up to the body's own limit), so the client, still
                // sending, reads every result before the connection closes.
                let _ = tokio::io::copy(&mut self.reader, &mut tokio::io::sink()).await;
                let limit = self.limits.max_lines.unwrap_or_default();
                return Some(Item::Stop { line: self.line, violation: too_many_lines(limit) });
            }
            let parsed = match raw {
                RawLine::TooLong => Err(Rejected {
                    sku: None,
                    errors: vec![FieldViolation::new(
                        "line",
                        "too_long",
                        format!("a line may be at most {} bytes; this one was skipped", self.limits.max_line_bytes),
                    )],
                }),
                RawLine::Text => parse(text),
            };
            return Some(Item::Line { line: self.line, parsed });
        }
        None
    }

    /// Reads the next line into `buffer` (cleared first, and left empty when the line is too
    /// long); `None` at the end of the input.
    async fn read_line(&mut self) -> std::io::Result<Option<RawLine>> {
        self.buffer.clear();
        let mut too_long = false;
        let mut started = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if !started {
                    return Ok(None);
                }
                self.line += 1;
                return Ok(Some(if too_long { RawLine::TooLong } else { RawLine::Text }));
            }
            started = true;
            let newline = available.iter().position(|byte| *byte == b'\n');
            let part = &available[..newline.unwrap_or(available.len())];
            if !too_long {
                if self.buffer.len() + part.len() > self.limits.max_line_bytes {
                    too_long = true;
                    self.buffer = Vec::new();
                } else {
                    self.buffer.extend_from_slice(part);
                }
            }
            let consumed = newline.map_or(available.len(), |at| at + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                self.line += 1;
                return Ok(Some(if too_long { RawLine::TooLong } else { RawLine::Text }));
            }
        }
    }
}

/// The line without surrounding white space (`\r` of a CRLF line break included) and, on the
/// first line, a UTF-8 byte order mark.
fn trim(line: &[u8], first: bool) -> &[u8] {
    let line = if first { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line };
    line.trim_ascii()
}

/// One line as a product, or what is wrong with it.
fn parse(text: &[u8]) -> Result<ProductLine, Rejected> {
    match serde_json::from_slice::<ImportProduct>(text) {
        Ok(product) => Ok(product.into()),
        Err(error) => {
            let code = match error.classify() {
                serde_json::error::Category::Data => "schema",
                _ => "malformed",
            };
            Err(Rejected { sku: sku_of(text), errors: vec![FieldViolation::new("line", code, error.to_string())] })
        }
    }
}

/// The `sku` of a line that is not a valid product, if it is a JSON object with a string `sku`:
/// so the result names the product the line was meant for.
fn sku_of(text: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct SkuOnly {
        sku: Option<serde_json::Value>,
    }
    let value = serde_json::from_slice::<SkuOnly>(text).ok()?.sku?;
    value.as_str().map(|sku| sku.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(input: &'static [u8], limits: Limits) -> Vec<(u64, Result<String, String>)> {
        let stream = match source(input, limits).await {
            Ok(stream) => stream,
            Err(error) => return vec![(0, Err(error.to_string()))],
        };
        stream
            .map(|item| match item {
                Item::Line { line, parsed: Ok(product) } => (line, Ok(product.sku)),
                Item::Line { line, parsed: Err(rejected) } => (line, Err(rejected.errors[0].code.clone())),
                Item::Stop { line, violation } => (line, Err(format!("stop:{}", violation.code))),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn lines_are_numbered_blank_ones_skipped_and_crlf_and_bom_ignored() {
        let input = b"\xEF\xBB\xBF{\"sku\":\"A\"}\r\n\n  \n{\"sku\":\"B\",\"name\":\"x\"}\n{\"sku\":1}\nnot json\n{\"sku\":\"C\"}";
        let got = items(input, Limits::http()).await;
        assert_eq!(
            got,
            vec![
                (1, Ok("A".into())),
                (4, Ok("B".into())),
                (5, Err("schema".into())),
                (6, Err("malformed".into())),
                (7, Ok("C".into())),
            ]
        );
    }

    #[tokio::test]
    async fn a_long_line_is_refused_and_skipped_and_the_next_one_read() {
        let long: &'static [u8] = Box::leak(
            format!("{{\"sku\":\"{}\"}}\n{{\"sku\":\"B\"}}\n", "x".repeat(100)).into_bytes().into_boxed_slice(),
        );
        let got = items(long, Limits { max_lines: None, max_line_bytes: 50 }).await;
        assert_eq!(got, vec![(1, Err("too_long".into())), (2, Ok("B".into()))]);
    }

    #[tokio::test]
    async fn the_line_after_the_limit_stops_the_import() {
        let got = items(
            b"{\"sku\":\"A\"}\n\n{\"sku\":\"B\"}\n{\"sku\":\"C\"}\n",
            Limits { max_lines: Some(2), max_line_bytes: 100 },
        )
        .await;
        assert_eq!(got, vec![(1, Ok("A".into())), (3, Ok("B".into())), (4, Err("stop:too_many_lines".into()))]);
    }

    #[tokio::test]
    async fn an_input_without_products_is_empty() {
        assert_eq!(items(b"", Limits::http()).await, vec![(0, Err("the input holds no products".into()))]);
        assert_eq!(items(b"\n \r\n", Limits::http()).await, vec![(0, Err("the input holds no products".into()))]);
    }

    #[test]
    fn a_bad_line_still_names_its_sku() {
        let Err(rejected) = parse(br#"{"sku": " LAMP-1 ", "price": true}"#) else { panic!("accepted") };
        assert_eq!(rejected.sku.as_deref(), Some("LAMP-1"));
        assert_eq!(rejected.errors[0].field, "line");
        let Err(rejected) = parse(br#"{"sku": "A", "colour": "red"}"#) else { panic!("accepted") };
        assert!(rejected.errors[0].message.contains("unknown field"), "{}", rejected.errors[0].message);
    }
}
