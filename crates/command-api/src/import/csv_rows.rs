//! CSV input: a header row naming the columns, then one product per record, read by the `csv`
//! crate (RFC 4180 quoting: a quoted cell may hold commas, quotes and line breaks).
//!
//! The `csv` reader is blocking, so it runs on a blocking thread over the async input
//! (`SyncIoBridge`) and hands records over a bounded channel: memory stays at one record plus
//! the channel, whatever the file's size.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::rc::Rc;
use std::str::FromStr;

use csv::ByteRecord;
use domain::product::Attributes;
use domain::{FieldViolation, ProductImage, ProductStatus, Violations};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use rust_decimal::Decimal;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};

use super::{read_violation, too_many_lines, Item, Limits, ProductLine, Rejected, StartError, CSV_LIST_SEPARATOR};

/// The `csv` reader's buffer: how far reading may run ahead of the record being parsed.
const READ_BUFFER: usize = 64 * 1024;

/// Records parsed ahead of the lines being imported.
const CHANNEL: usize = 256;

/// The columns besides `attributes.<key>`, as the header names them.
const COLUMNS: [&str; 9] =
    ["sku", "name", "description", "price", "currency", "status", "category_slugs", "stock", "images"];

/// A record longer than the limit (the reader's error: the import stops there).
#[derive(Debug, thiserror::Error)]
#[error("a record may be at most {limit} bytes")]
pub struct RecordTooLong {
    limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Column {
    Sku,
    Name,
    Description,
    Price,
    Currency,
    Status,
    CategorySlugs,
    Stock,
    Images,
    Attribute(String),
}

/// The header: which column each cell of a record is.
#[derive(Debug)]
struct Columns(Vec<Column>);

impl Columns {
    /// Every column known, none twice, `sku` among them; each problem reported (as the field
    /// `header`).
    fn parse(header: &ByteRecord) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        let mut columns = Vec::with_capacity(header.len());
        let mut seen = HashSet::new();
        for (index, raw) in header.iter().enumerate() {
            let Ok(name) = std::str::from_utf8(raw) else {
                violations.push(FieldViolation::new(
                    "header",
                    "invalid_utf8",
                    format!("column {} is not UTF-8", index + 1),
                ));
                continue;
            };
            let name = if index == 0 { name.trim_start_matches('\u{feff}') } else { name }.trim();
            let column = match name.to_ascii_lowercase().as_str() {
                "sku" => Column::Sku,
                "name" => Column::Name,
                "description" => Column::Description,
                "price" => Column::Price,
                "currency" => Column::Currency,
                "status" => Column::Status,
                "category_slugs" => Column::CategorySlugs,
                "stock" => Column::Stock,
                "images" => Column::Images,
                _ => match name.strip_prefix("attributes.") {
                    Some(key) if Attributes::parse(BTreeMap::from([(key.to_owned(), String::new())])).is_ok() => {
                        Column::Attribute(key.to_owned())
                    }
                    Some(_) => {
                        violations.push(FieldViolation::new(
                            "header",
                            "invalid_key",
                            format!(
                                "column \"{name}\": attribute names must be 1 to 40 characters of a-z, 0-9 and '_'"
                            ),
                        ));
                        continue;
                    }
                    None => {
                        violations.push(FieldViolation::new(
                            "header",
                            "unknown_column",
                            format!(
                                "unknown column \"{name}\"; the columns are {} and attributes.<name>",
                                COLUMNS.join(", ")
                            ),
                        ));
                        continue;
                    }
                },
            };
            if !seen.insert(column.clone()) {
                violations.push(FieldViolation::new(
                    "header",
                    "duplicate_column",
                    format!("column \"{name}\" appears twice"),
                ));
            }
            columns.push(column);
        }
        if !columns.contains(&Column::Sku) {
            violations.push(FieldViolation::new("header", "missing_column", "the header must name a sku column"));
        }
        violations.into_result().map(|()| Columns(columns))
    }

    /// One record as a product. Cells of `name`, `price`, `currency`, `status` and `stock` that
    /// are empty leave the field alone; the other columns, when present, set their field even
    /// when empty (no description, no categories, no images, no attributes).
    fn product(&self, record: &ByteRecord) -> Result<ProductLine, Rejected> {
        let mut violations = Violations::default();
        let mut product = ProductLine::default();
        if record.len() != self.0.len() {
            violations.push(FieldViolation::new(
                "line",
                "field_count",
                format!("the record has {} fields, the header {}", record.len(), self.0.len()),
            ));
        }
        if self.0.iter().any(|column| matches!(column, Column::Attribute(_))) {
            product.attributes = Some(BTreeMap::new());
        }
        for (column, raw) in self.0.iter().zip(record.iter()) {
            let field = field_name(column);
            let Ok(cell) = std::str::from_utf8(raw) else {
                violations.push(FieldViolation::new(&field, "invalid_utf8", format!("{field} is not UTF-8")));
                continue;
            };
            let trimmed = cell.trim();
            let given = (!trimmed.is_empty()).then_some(trimmed);
            match column {
                Column::Sku => product.sku = trimmed.to_owned(),
                Column::Name => product.name = given.map(str::to_owned),
                Column::Description => product.description = Some(cell.to_owned()),
                Column::Price => {
                    product.price = given.and_then(|price| {
                        violations.check(Decimal::from_str_exact(price).map_err(|_| {
                            FieldViolation::new("price", "invalid", "price must be a decimal number such as 19.99")
                        }))
                    });
                }
                Column::Currency => product.currency = given.map(str::to_owned),
                Column::Status => product.status = given.and_then(|s| violations.check(ProductStatus::from_str(s))),
                Column::CategorySlugs => product.category_slugs = Some(list(cell).map(str::to_owned).collect()),
                Column::Stock => {
                    product.stock = given.and_then(|stock| {
                        violations.check(
                            stock
                                .parse::<i64>()
                                .map_err(|_| FieldViolation::new("stock", "invalid", "stock must be a whole number")),
                        )
                    });
                }
                Column::Images => {
                    product.images =
                        Some(list(cell).map(|url| ProductImage { url: url.to_owned(), alt: None }).collect());
                }
                Column::Attribute(key) => {
                    if let (Some(value), Some(attributes)) = (given, product.attributes.as_mut()) {
                        attributes.insert(key.clone(), value.to_owned());
                    }
                }
            }
        }
        let sku = (!product.sku.is_empty()).then(|| product.sku.clone());
        match violations.into_result() {
            Ok(()) => Ok(product),
            Err(violations) => Err(Rejected { sku, errors: violations.0 }),
        }
    }
}

/// The name a column's problems are reported under (the import's field names).
fn field_name(column: &Column) -> String {
    let name = match column {
        Column::Sku => "sku",
        Column::Name => "name",
        Column::Description => "description",
        Column::Price => "price",
        Column::Currency => "currency",
        Column::Status => "status",
        Column::CategorySlugs => "category_slugs",
        Column::Stock => "stock",
        Column::Images => "images",
        Column::Attribute(key) => return format!("attributes.{key}"),
    };
    name.to_owned()
}

/// The items of a list cell: separated by [`CSV_LIST_SEPARATOR`], trimmed, empty ones dropped.
fn list(cell: &str) -> impl Iterator<Item = &str> {
    cell.split(CSV_LIST_SEPARATOR).map(str::trim).filter(|item| !item.is_empty())
}

/// The product records of `input`, after reading its header: [`StartError::Empty`] without
/// one, [`StartError::Header`] when it is wrong.
pub(super) async fn source<R>(input: R, limits: Limits) -> Result<BoxStream<'static, Item>, StartError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (header_tx, header_rx) = oneshot::channel();
    let (items_tx, items_rx) = mpsc::channel(CHANNEL);
    let input = tokio_util::io::SyncIoBridge::new(input);
    tokio::task::spawn_blocking(move || read(input, limits, header_tx, items_tx));
    match header_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            let violation = FieldViolation::new("body", "read_failed", "the CSV reader stopped before the header");
            return Err(StartError::Unreadable(violation));
        }
    }
    Ok(stream::unfold(items_rx, |mut items| async move { items.recv().await.map(|item| (item, items)) }).boxed())
}

/// Reads the header (answered on `header`), then each record into `items` until the input ends,
/// fails, or the receiver is gone (the import was dropped).
fn read(input: impl Read, limits: Limits, header: oneshot::Sender<Result<(), StartError>>, items: mpsc::Sender<Item>) {
    let window = Rc::new(RefCell::new(Window::default()));
    let metered = Metered { inner: input, window: window.clone(), limit: limits.max_line_bytes + READ_BUFFER };
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(READ_BUFFER).from_reader(metered);
    let mut record = ByteRecord::new();
    let columns = match reader.read_byte_record(&mut record) {
        Ok(true) => Columns::parse(&record).map_err(StartError::Header),
        Ok(false) => Err(StartError::Empty),
        Err(error) => Err(StartError::Unreadable(read_violation(&io_error(error)))),
    };
    let columns = match columns {
        Ok(columns) => {
            let _ = header.send(Ok(()));
            columns
        }
        Err(error) => {
            let _ = header.send(Err(error));
            return;
        }
    };
    window.borrow_mut().release_until(reader.position().byte());
    let mut products = 0_u64;
    loop {
        let item = match reader.read_byte_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let start = record.position().map_or((1, 0), |p| (p.line(), p.byte()));
                let end = reader.position().byte();
                let line = {
                    let mut window = window.borrow_mut();
                    let line = start.0 + window.line_breaks_before_record(start.1, end);
                    window.release_until(end);
                    line
                };
                products += 1;
                match limits.max_lines {
                    Some(max) if products > max => {
                        // The rest is read and dropped (up to the body's own limit), so the client,
                        // still sending, reads every result before the connection closes.
                        let _ = io::copy(&mut reader.get_mut().inner, &mut io::sink());
                        Item::Stop { line, violation: too_many_lines(max) }
                    }
                    _ => Item::Line { line, parsed: columns.product(&record) },
                }
            }
            Err(error) => Item::Stop { line: reader.position().line(), violation: read_violation(&io_error(error)) },
        };
        let last = matches!(item, Item::Stop { .. });
        if items.blocking_send(item).is_err() || last {
            return;
        }
    }
}

/// A `csv` error as the I/O error it is (the reader reads bytes, so it has no other kind).
fn io_error(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// The input bytes from the start of the record being parsed on.
///
/// A record's line number is where its first byte is: the `csv` reader numbers a record by the
/// line it started reading it on, which is before the blank lines it skips, and before the `\n`
/// of a CRLF line break (it ends a record at the `\r`).
#[derive(Default)]
struct Window {
    /// The input offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
}

impl Window {
    /// The line breaks between `start`, where the reader began a record, and its first byte.
    fn line_breaks_before_record(&self, start: u64, end: u64) -> u64 {
        let from = usize::try_from(start.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.bytes.len());
        let to = usize::try_from(end.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.bytes.len());
        let record = &self.bytes[from..to.max(from)];
        record.iter().take_while(|byte| matches!(byte, b'\r' | b'\n')).filter(|byte| **byte == b'\n').count() as u64
    }

    /// Forgets the bytes before `offset`, where the next record starts.
    fn release_until(&mut self, offset: u64) {
        let done = usize::try_from(offset.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.bytes.len());
        self.bytes.drain(..done);
        self.base += done as u64;
    }
}

/// The input, keeping what it hands the reader in the [`Window`] until the record is done, and
/// failing once that is more than a record's limit (plus the reader's buffer): a record is never
/// held longer than that.
struct Metered<R> {
    inner: R,
    window: Rc<RefCell<Window>>,
    limit: usize,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.window.borrow().bytes.len() > self.limit {
            let limit = self.limit - READ_BUFFER;
            return Err(io::Error::new(io::ErrorKind::InvalidData, RecordTooLong { limit }));
        }
        let read = self.inner.read(buf)?;
        self.window.borrow_mut().bytes.extend_from_slice(&buf[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Result<Columns, Vec<String>> {
        Columns::parse(&ByteRecord::from(names.to_vec())).map_err(|v| v.0.into_iter().map(|v| v.code).collect())
    }

    #[test]
    fn the_header_needs_a_sku_and_known_columns_once() {
        assert!(header(&["\u{feff}SKU", "name", "attributes.colour"]).is_ok());
        assert_eq!(header(&["name"]).unwrap_err(), ["missing_column"]);
        assert_eq!(header(&["sku", "colour"]).unwrap_err(), ["unknown_column"]);
        assert_eq!(header(&["sku", "attributes.Colour"]).unwrap_err(), ["invalid_key"]);
        assert_eq!(header(&["sku", "name", "name"]).unwrap_err(), ["duplicate_column"]);
    }

    #[test]
    fn cells_become_fields() {
        let columns = header(&[
            "sku",
            "name",
            "price",
            "category_slugs",
            "images",
            "attributes.colour",
            "attributes.size",
            "stock",
        ])
        .unwrap();
        let record = ByteRecord::from(vec![
            " A-1 ",
            "Lamp",
            "19.90",
            "lighting| desks ||",
            "https://x.example/a.jpg",
            "red",
            "",
            "3",
        ]);
        let product = columns.product(&record).ok().unwrap();
        assert_eq!(product.sku, "A-1");
        assert_eq!(product.price, Some("19.90".parse().unwrap()));
        assert_eq!(product.category_slugs, Some(vec!["lighting".to_owned(), "desks".to_owned()]));
        assert_eq!(product.images.unwrap()[0].url, "https://x.example/a.jpg");
        assert_eq!(product.attributes, Some(BTreeMap::from([("colour".to_owned(), "red".to_owned())])));
        assert_eq!(product.stock, Some(3));
        assert_eq!(product.description, None, "no description column: not given");

        let record = ByteRecord::from(vec!["A-1", "", "1e3", "", "", "", "", "-x"]);
        let Err(rejected) = columns.product(&record) else { panic!("accepted") };
        let fields: Vec<&str> = rejected.errors.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["price", "stock"]);
        assert_eq!(rejected.sku.as_deref(), Some("A-1"));
    }

    #[tokio::test]
    async fn records_are_numbered_by_their_first_line_and_quoted_line_breaks_kept() {
        let input: &'static [u8] = b"sku,description\nA,\"two\nlines\"\n\nB,plain\nC\n";
        let items: Vec<_> = source(input, Limits::http()).await.ok().unwrap().collect().await;
        let got: Vec<(u64, Result<Option<String>, String>)> = items
            .into_iter()
            .map(|item| match item {
                Item::Line { line, parsed: Ok(p) } => (line, Ok(p.description)),
                Item::Line { line, parsed: Err(r) } => (line, Err(r.errors[0].code.clone())),
                Item::Stop { line, violation } => (line, Err(violation.code)),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Ok(Some("two\nlines".to_owned()))),
                (5, Ok(Some("plain".to_owned()))),
                (6, Err("field_count".into()))
            ]
        );
    }

    #[tokio::test]
    async fn crlf_line_breaks_and_blank_lines_keep_line_numbers_right() {
        let input: &'static [u8] = b"sku\r\nA\r\n\r\n\r\nB\r\n\"C\r\nD\"\r\nE";
        let items: Vec<_> = source(input, Limits::http()).await.ok().unwrap().collect().await;
        let got: Vec<(u64, String)> = items
            .into_iter()
            .map(|item| match item {
                Item::Line { line, parsed: Ok(p) } => (line, p.sku),
                _ => panic!("not a product"),
            })
            .collect();
        assert_eq!(got, vec![(2, "A".into()), (5, "B".into()), (6, "C\r\nD".into()), (8, "E".into())]);
    }

    #[tokio::test]
    async fn a_record_past_the_limit_stops_the_import() {
        let long: &'static [u8] =
            Box::leak(format!("sku,description\nA,{}\nB,x\n", "x".repeat(200_000)).into_bytes().into_boxed_slice());
        let limits = Limits { max_lines: None, max_line_bytes: 1000 };
        let items: Vec<_> = source(long, limits).await.ok().unwrap().collect().await;
        assert!(matches!(&items[..], [Item::Stop { violation, .. }] if violation.code == "too_long"));
    }

    #[tokio::test]
    async fn no_header_is_empty_and_a_bad_header_refused() {
        assert!(matches!(source(&b""[..], Limits::http()).await, Err(StartError::Empty)));
        assert!(matches!(source(&b"name\nLamp\n"[..], Limits::http()).await, Err(StartError::Header(_))));
    }
}
