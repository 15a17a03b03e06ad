//! Bulk import: products by the thousand from NDJSON or CSV, upserted by SKU. Used by
//! `POST /api/v1/products/import` and by `catalogctl import`, the same code for both.
//!
//! - **Input** is read as it arrives, never held whole: NDJSON line by line (each line at most
//!   [`MAX_LINE_BYTES`]; a longer one is an error line and is skipped), CSV record by record
//!   through the `csv` crate (a record longer than that stops the import). A UTF-8 byte order
//!   mark is ignored. Blank lines are skipped (they still count for line numbers).
//! - **Upsert by SKU** (case-insensitively, as SKUs are unique): a SKU no live product has
//!   creates a product (`stock` is its initial on-hand); a SKU a product has updates only the
//!   fields the line gives and that differ from the product as its events fold it (`stock` is
//!   ignored: stock moves only through adjustments); a line that changes nothing appends no event.
//!   So importing the same file twice changes nothing the second time. A create that loses the
//!   SKU to a concurrent create (the event store's `CT409`) becomes an update of that product.
//! - **New products are created in batches**: the new SKUs among the lines read so far (up to
//!   `BATCH_LINES`) are decided by the aggregate one by one and appended together, in one
//!   transaction (`batch`); every other line is its own command. A bad line never stops or
//!   rolls back the others: a line the aggregate refuses is never in a batch, and a batch whose
//!   append is refused is imported line by line instead. Lines with the same SKU are applied in
//!   file order; one-by-one lines run [`DEFAULT_CONCURRENCY`] at a time; results come back in
//!   line order.
//! - **An unreachable database** ends the import at the first line that met it (its error code
//!   is `service-unavailable`): the file can be imported again once the database is back.
//! - **Limits** ([`Limits`]): the caller decides how many lines one import takes
//!   ([`MAX_LINES`] over HTTP); the line after the last one allowed ends the results with an error
//!   record (`too_many_lines`) and is not read.
//!
//! Formats and columns are described in the README ("Bulk import") and `docs/catalog.md`.

mod batch;
mod csv_rows;
mod ndjson;
mod upsert;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use domain::{Currency, FieldViolation, ProductImage, ProductStatus, Violations};
use event_store::{CommandBus, EventMetadata};
use futures::future::{self, FutureExt};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::io::AsyncRead;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use uuid::Uuid;

pub use ndjson::ImportProduct;

/// Products one HTTP import takes; the line after them ends the results with `too_many_lines`.
pub const MAX_LINES: u64 = 100_000;

/// The longest line (NDJSON) or record (CSV), in bytes: well above the largest valid product
/// (20 image URLs of 2,000 characters, 50 attributes of 200, JSON escapes included).
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Lines an import works on at once (each holds at most one database connection at a time).
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What separates the slugs of `category_slugs` and the URLs of `images` in a CSV cell.
pub const CSV_LIST_SEPARATOR: char = '|';

/// The error code of a line the event store could not be reached for (the problem kind of a 503).
const STORE_UNAVAILABLE: &str = "service-unavailable";

/// Lines read before they are written: new products among them are created in one append.
const BATCH_LINES: usize = 1000;

/// Batches worked on at once (see [`Importer::start`]), when the concurrency allows. Three
/// were tried (`cargo xtask bench catalog`, 100,000 lines): 12,197 and 7,979 lines/s in two
/// runs, against 7,692 to 10,430 in six with two, so no gain was shown and two stay.
const PIPELINED_BATCHES: usize = 2;

/// How the input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line ([`ImportProduct`]).
    Ndjson,
    /// A header row naming the columns, then one product per record.
    Csv,
}

impl Format {
    /// The format a file name's extension says (`.ndjson`, `.jsonl`, `.csv`, any case).
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// How much one import may read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Products (non-blank lines, or CSV records after the header); `None`: no limit.
    pub max_lines: Option<u64>,
    /// The longest line or record, in bytes.
    pub max_line_bytes: usize,
}

impl Limits {
    /// What an HTTP import may read: [`MAX_LINES`] products of at most [`MAX_LINE_BYTES`].
    pub fn http() -> Self {
        Self { max_lines: Some(MAX_LINES), max_line_bytes: MAX_LINE_BYTES }
    }

    /// A file an operator imports: any number of lines of at most [`MAX_LINE_BYTES`].
    pub fn file() -> Self {
        Self { max_lines: None, max_line_bytes: MAX_LINE_BYTES }
    }
}

/// What happened to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A product with a new SKU was created.
    Created,
    /// The product with this SKU was changed (one event with the fields that differed).
    Updated,
    /// The product with this SKU already is as the line says: nothing was written.
    Unchanged,
    /// Nothing was written for this line; `errors` says why.
    Error,
}

/// The result of one input line: one NDJSON line of the response, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImportResult, example = json!({
    "line": 2, "sku": "LAMP-01", "id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "result": "created"
}))]
pub struct LineResult {
    /// The line number in the input (1 is the first line; for CSV, the header is line 1 and a
    /// record is numbered by the line it starts on).
    #[schema(minimum = 1)]
    pub line: u64,
    /// The line's SKU as given (`null` when it has none, or it could not be read).
    pub sku: Option<String>,
    /// The product created, changed or found unchanged (`null` when none was).
    pub id: Option<Uuid>,
    pub result: Outcome,
    /// Why the line failed (`result: "error"` only): every bad field, as in a 422 problem. The
    /// last record of an import stopped early has `field: "body"` and code `too_many_lines`,
    /// `too_large`, `timed_out`, `too_long` (a CSV record) or `read_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<http_api::openapi::FieldViolation>, required = false)]
    pub errors: Vec<FieldViolation>,
}

impl LineResult {
    fn failed(line: u64, sku: Option<String>, id: Option<Uuid>, errors: Vec<FieldViolation>) -> Self {
        Self { line, sku, id, result: Outcome::Error, errors }
    }
}

/// Why an import could not start: nothing has been written.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No product line at all (an empty body, only blank lines, or a CSV file without a header).
    #[error("the input holds no products")]
    Empty,
    /// The CSV header names no `sku` column, an unknown column, or one twice.
    #[error("{0}")]
    Header(Violations),
    /// The input could not be read to its first product: it was too large (`too_large`), nothing
    /// arrived for too long (`timed_out`), or reading failed (`read_failed`, `too_long`).
    #[error("{}", .0.message)]
    Unreadable(FieldViolation),
}

/// One product line as read, whatever the format: the fields it gives (`None`: not given).
#[derive(Debug, Default, Clone)]
struct ProductLine {
    sku: String,
    name: Option<String>,
    description: Option<String>,
    price: Option<Decimal>,
    currency: Option<String>,
    status: Option<ProductStatus>,
    category_ids: Option<Vec<Uuid>>,
    category_slugs: Option<Vec<String>>,
    attributes: Option<BTreeMap<String, String>>,
    images: Option<Vec<ProductImage>>,
    stock: Option<i64>,
}

/// A line that could not be read as a product.
struct Rejected {
    sku: Option<String>,
    errors: Vec<FieldViolation>,
}

/// What a reader hands on, in input order.
enum Item {
    Line {
        line: u64,
        parsed: Result<ProductLine, Rejected>,
    },
    /// The input ends here, early; `line` is the first line not read.
    Stop {
        line: u64,
        violation: FieldViolation,
    },
}

/// Runs imports against the event store.
#[derive(Clone)]
pub struct Importer {
    bus: CommandBus,
    pool: PgPool,
    default_currency: Currency,
    allow_http_images: bool,
    concurrency: usize,
}

impl Importer {
    /// `default_currency`: the currency of a new product whose line names none
    /// (`CATALOG_DEFAULT_CURRENCY`); `allow_http_images`: development only.
    pub fn new(bus: CommandBus, pool: PgPool, default_currency: Currency, allow_http_images: bool) -> Self {
        Self { bus, pool, default_currency, allow_http_images, concurrency: DEFAULT_CONCURRENCY }
    }

    /// Lines worked on at once (at least 1).
    pub fn with_concurrency(self, concurrency: usize) -> Self {
        Self { concurrency: concurrency.max(1), ..self }
    }

    /// Reads the start of `input` (the first line, or the CSV header) and, if it holds products,
    /// answers the stream of results: one per product line, in line order, each written (or
    /// refused) as the stream is polled. Dropping the stream stops the import after the lines
    /// in progress; what was written stays written.
    pub async fn start<R>(
        &self,
        input: R,
        format: Format,
        limits: Limits,
        metadata: EventMetadata,
    ) -> Result<BoxStream<'static, LineResult>, StartError>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let source = match format {
            Format::Ndjson => ndjson::source(input, limits).await?,
            Format::Csv => csv_rows::source(input, limits).await?,
        };
        let shared = Arc::new(upsert::Shared {
            bus: self.bus.clone(),
            pool: self.pool.clone(),
            default_currency: self.default_currency,
            allow_http_images: self.allow_http_images,
            metadata,
            slugs: Mutex::default(),
        });
        // The input is read on while a batch is written: the next batch is whatever arrived
        // meanwhile (up to `BATCH_LINES`), so batches grow as large as writing is slow.
        let (items, arrived) = tokio::sync::mpsc::channel(BATCH_LINES);
        tokio::spawn(async move {
            let mut source = source;
            while let Some(item) = source.next().await {
                if items.send(item).await.is_err() {
                    return; // The import was dropped.
                }
            }
        });
        let arrived =
            stream::unfold(arrived, |mut arrived| async move { arrived.recv().await.map(|item| (item, arrived)) });
        // Several batches at a time: some are decided (CPU here) while others are appended (CPU
        // in Postgres). A batch that shares a SKU with one still in flight before it waits for
        // that one to finish first, so lines of one SKU still apply in file order. The lines in
        // flight stay within `concurrency`: each batch runs its one-by-one lines at its share.
        let pipelined = PIPELINED_BATCHES.min(self.concurrency);
        let concurrency = self.concurrency / pipelined;
        let mut in_flight = InFlight::new(pipelined);
        let batches = arrived
            .ready_chunks(BATCH_LINES)
            .map(move |items| {
                let skus: HashSet<String> = items
                    .iter()
                    .filter_map(|item| match item {
                        Item::Line { parsed: Ok(line), .. } => Some(line.sku.trim().to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect();
                let (wait, done) = in_flight.start(skus);
                let shared = shared.clone();
                async move {
                    for finished in wait {
                        // An error only means the batch before was dropped.
                        let _ = finished.await;
                    }
                    let results = batch::run(shared, items, concurrency).await;
                    let _ = done.send(());
                    results
                }
            })
            .buffered(pipelined);
        // A database that cannot be reached fails every line alike, each after waiting for a
        // connection: the import ends with the first such line instead.
        let results = batches.flat_map(stream::iter).scan(false, |ended, result| {
            let first_outage = !*ended && result.errors.iter().any(|e| e.code == STORE_UNAVAILABLE);
            let next = (!*ended).then_some(result);
            *ended |= first_outage;
            future::ready(next)
        });
        Ok(results.boxed())
    }
}

/// Resolves when a batch has been written (or dropped).
type Finished = future::Shared<oneshot::Receiver<()>>;

/// The SKUs of the batches that may still be in flight when the next one starts (at most
/// `pipelined - 1` of them, oldest first: the stream runs `pipelined` at a time, in order, so
/// any batch before those has finished).
struct InFlight {
    pipelined: usize,
    batches: VecDeque<(HashSet<String>, Finished)>,
}

impl InFlight {
    fn new(pipelined: usize) -> Self {
        InFlight { pipelined, batches: VecDeque::with_capacity(pipelined) }
    }

    /// A batch of `skus` starts: what it must wait for (the batches in flight that share a SKU
    /// with it, so that lines of one SKU apply in file order), and what it sends when written.
    fn start(&mut self, skus: HashSet<String>) -> (Vec<Finished>, oneshot::Sender<()>) {
        let wait = self
            .batches
            .iter()
            .filter(|(previous, _)| !previous.is_disjoint(&skus))
            .map(|(_, finished)| finished.clone())
            .collect();
        if self.batches.len() + 1 >= self.pipelined {
            self.batches.pop_front();
        }
        let (done, finished) = oneshot::channel();
        self.batches.push_back((skus, finished.shared()));
        (wait, done)
    }
}

/// The body is larger than the limit (the reader's error when it reads past it).
#[derive(Debug, thiserror::Error)]
#[error("the body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// No byte of the body arrived for too long.
#[derive(Debug, thiserror::Error)]
#[error("no data arrived for {0:?}")]
pub struct BodyIdle(pub Duration);

/// A request body as a reader that fails with [`BodyTooLarge`] once more than `max_bytes` have
/// arrived, and with [`BodyIdle`] when no data arrives for `idle`: an import's body is read
/// while it is processed, long after the request's own time limit.
pub fn body_reader<S, E>(body: S, max_bytes: u64, idle: Duration) -> impl AsyncRead + Send + Unpin + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let chunks = stream::unfold((Box::pin(body), 0_u64, false), move |(mut body, received, stopped)| async move {
        if stopped {
            return None;
        }
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, BodyIdle(idle))),
            Ok(None) => return None,
            Ok(Some(Err(error))) => Err(io::Error::other(error)),
            Ok(Some(Ok(bytes))) => Ok(bytes),
        };
        let received = received + chunk.as_ref().map_or(0, |bytes| bytes.len() as u64);
        let chunk = match chunk {
            Ok(_) if received > max_bytes => {
                drain(body.as_mut(), OVERFLOW_DRAINED).await;
                Err(io::Error::new(io::ErrorKind::InvalidData, BodyTooLarge { limit: max_bytes }))
            }
            other => other,
        };
        let stopped = chunk.is_err();
        Some((chunk, (body, received, stopped)))
    });
    tokio_util::io::StreamReader::new(Box::pin(chunks))
}

/// How much of a body past its limit is still read (and dropped) before the import ends, so that
/// a client that sent a little too much still gets every result: a server that closes a
/// connection with unread data makes the client's system reset it, and the client may lose
/// the end of the answer.
const OVERFLOW_DRAINED: u64 = 16 * 1024 * 1024;

/// Reads and drops up to `budget` bytes of `body`, waiting at most a second for each chunk.
async fn drain<S, E>(mut body: std::pin::Pin<&mut S>, budget: u64)
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut drained = 0_u64;
    while drained <= budget {
        match tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            Ok(Some(Ok(bytes))) => drained += bytes.len() as u64,
            _ => return,
        }
    }
}

/// The error record that ends an import whose input could not be read to its end.
fn read_violation(error: &io::Error) -> FieldViolation {
    let inner = error.get_ref();
    if let Some(too_large) = inner.and_then(|e| e.downcast_ref::<BodyTooLarge>()) {
        return FieldViolation::new(
            "body",
            "too_large",
            format!("{too_large}; this line and the rest of the body were not read"),
        );
    }
    if let Some(idle) = inner.and_then(|e| e.downcast_ref::<BodyIdle>()) {
        return FieldViolation::new("body", "timed_out", format!("{idle}; the rest of the body was not read"));
    }
    if let Some(too_long) = inner.and_then(|e| e.downcast_ref::<csv_rows::RecordTooLong>()) {
        return FieldViolation::new("body", "too_long", format!("{too_long}; the rest of the file was not read"));
    }
    FieldViolation::new("body", "read_failed", format!("the input could not be read: {error}"))
}

/// The record that ends an import at its line limit.
fn too_many_lines(limit: u64) -> FieldViolation {
    FieldViolation::new(
        "body",
        "too_many_lines",
        format!("an import takes at most {limit} products; this line and the rest were not read"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skus(names: &[&str]) -> HashSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_batch_waits_for_every_batch_in_flight_that_shares_a_sku_and_no_other() {
        let mut in_flight = InFlight::new(3);
        let (wait_a, _done_a) = in_flight.start(skus(&["x"]));
        let (wait_b, _done_b) = in_flight.start(skus(&["y"]));
        // `x` is two batches back but may still be in flight (three run at once).
        let (wait_c, _done_c) = in_flight.start(skus(&["x", "z"]));
        assert_eq!((wait_a.len(), wait_b.len(), wait_c.len()), (0, 0, 1));
        // By the fourth, the first has finished (the stream ran three at a time): not awaited.
        let (wait_d, _done_d) = in_flight.start(skus(&["x", "y"]));
        assert_eq!(wait_d.len(), 2, "the second (y) and the third (x), not the first");
    }

    #[tokio::test]
    async fn what_a_batch_waits_for_resolves_when_that_batch_is_written() {
        let mut in_flight = InFlight::new(2);
        let (_, done) = in_flight.start(skus(&["x"]));
        let (wait, _) = in_flight.start(skus(&["x"]));
        let finished = wait.into_iter().next().expect("waits for the first");
        assert!(finished.clone().now_or_never().is_none(), "not before the first is written");
        done.send(()).unwrap();
        assert!(finished.now_or_never().is_some());
    }
}
