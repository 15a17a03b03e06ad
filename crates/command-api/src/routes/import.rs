//! `POST /api/v1/products/import`: the bulk import ([`crate::import`]) over HTTP.
//!
//! The body is read as it arrives and each line is answered as soon as it has been written, so
//! neither the body nor the results are ever held whole: memory per import is the lines in
//! flight plus a few buffers. What bounds the cost of imports:
//! - the body: [`IMPORT_BODY_LIMIT_BYTES`] (a larger `Content-Length` is 413 before anything is
//!   read; a body that grows past it without one ends the results with `too_large`), each line
//!   [`crate::import::MAX_LINE_BYTES`], at most [`crate::import::MAX_LINES`] products;
//! - the time: a body that sends nothing for [`IDLE_BODY_TIMEOUT`] ends the results with
//!   `timed_out` (the request's own time limit covers only the start, up to the first line);
//! - the database: `IMPORT_MAX_RUNNING` imports at once (one more is 503 with `Retry-After`),
//!   each working on `IMPORT_CONCURRENCY` lines at a time, and a line holds at most one pooled
//!   connection at a time: imports hold at most their product of the pool's connections.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use domain::{FieldViolation, Role, Violations};
use futures::StreamExt;
use http_api::openapi::{Forbidden, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::{ApiError, Problem};

use crate::app::AppState;
use crate::extract::RequestContext;
use crate::import::{self, Format, ImportProduct, Limits, LineResult, Outcome, StartError};

/// The largest import body: 64 MiB, room for 100,000 products of about 670 bytes each.
pub const IMPORT_BODY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// How long an import's body may send nothing before the import stops.
pub const IDLE_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The response's content type: one JSON object per line.
const NDJSON: &str = "application/x-ndjson";

/// Results written to the connection together (whatever is ready, up to this many).
const RESULTS_PER_CHUNK: usize = 256;

/// Import products (admin).
///
/// Upserts products by SKU from an NDJSON or CSV body: a new SKU creates a product (its `stock`
/// is the initial stock), a known SKU changes only the fields that differ (`stock` is ignored:
/// stock moves only by adjustments), and a line equal to its product changes nothing, so the
/// same file can be imported again safely. A bad line is reported and the others go on, and
/// nothing that was written is rolled back (new products are created in batches; a batch the
/// event store refuses is imported line by line).
///
/// The answer streams one NDJSON result per product line, in line order, as lines are written.
/// The status is sent before the body has been read, so what is found later ends the results
/// with an error record instead: the 100,001st product (`too_many_lines`: the first 100,000
/// were imported, nothing after), a body past 64 MiB without `Content-Length` (`too_large`), 30 s
/// without data (`timed_out`). Lines are at most 256 KiB (a longer NDJSON line is an error line
/// and skipped; a longer CSV record stops the import there).
///
/// CSV: a header row of `sku` (required), `name`, `description`, `price`, `currency`, `status`,
/// `category_slugs` and `images` (lists separated by `|`), `stock`, and `attributes.<name>`;
/// see the README for what empty cells mean.
#[utoipa::path(
    post,
    path = "/api/v1/products/import",
    tag = "products",
    operation_id = "importProducts",
    security(("bearer" = [])),
    request_body(
        description = "The products, at most 64 MiB: NDJSON (one `ImportProduct` object per line) or CSV (a header \
            row, then one product per record; UTF-8). A charset other than UTF-8 is 415.",
        content(
            (ImportProduct = "application/x-ndjson"),
            (String = "text/csv",
             example = "sku,name,price,currency,category_slugs,attributes.colour,stock\nLAMP-01,Desk lamp,19.99,EUR,lighting|desks,brass,12\n"),
        ),
    ),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = LineResult,
         description = "One result per product line (blank lines have none), in line order, streamed as the lines \
            are written: `created`, `updated`, `unchanged` or `error` with the line's field violations. An import \
            stopped early ends with an error record whose `field` is `body`."),
        (status = 400, body = Problem, content_type = "application/problem+json",
         description = "The body could not be read up to its first product"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, body = Problem, content_type = "application/problem+json",
         description = "`Content-Length` is larger than 64 MiB (nothing was read or written)"),
        (status = 415, body = Problem, content_type = "application/problem+json",
         description = "The body is not sent as `application/x-ndjson` or `text/csv` (UTF-8)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
         description = "The body holds no product (empty, only blank lines, or CSV without a header), or the CSV \
            header names no `sku` column, an unknown column, or one twice (each listed in `errors`, field `header`)"),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn import_products(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let format = body_format(request.headers())?;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > IMPORT_BODY_LIMIT_BYTES) {
        return Err(too_large());
    }
    let permit = state.imports.clone().try_acquire_owned().map_err(|_| ApiError::Unavailable {
        reason: "the service is running as many imports as it takes at once; retry later".into(),
        retry_after_secs: 10,
    })?;
    let body = import::body_reader(request.into_body().into_data_stream(), IMPORT_BODY_LIMIT_BYTES, IDLE_BODY_TIMEOUT);
    let metadata = context.metadata(principal.user_id.to_string());
    let results = state.importer.start(body, format, Limits::http(), metadata).await.map_err(start_failure)?;
    let mut tally = Tally::new(principal.user_id.to_string());
    let chunks = results.ready_chunks(RESULTS_PER_CHUNK).map(move |results| {
        // The permit is the stream's: the import counts as running until its results are done
        // or the client went away.
        let _running = &permit;
        let mut bytes = Vec::with_capacity(results.len() * 128);
        for result in &results {
            tally.count(result);
            serde_json::to_writer(&mut bytes, result).expect("a result serialises");
            bytes.push(b'\n');
        }
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    let mut response = Body::from_stream(chunks).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// The format the body's `Content-Type` names; 415 for anything else (or a charset other than
/// UTF-8).
fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let unsupported =
        || ApiError::UnsupportedMediaType("expected a body with Content-Type: application/x-ndjson or text/csv".into());
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or_else(unsupported)?;
    let mut parts = value.split(';');
    let format = match parts.next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "application/x-ndjson" | "application/ndjson" => Format::Ndjson,
        "text/csv" => Format::Csv,
        _ => return Err(unsupported()),
    };
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let value = value.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !["utf-8", "utf8"].contains(&&*value.to_ascii_lowercase()) {
            return Err(unsupported());
        }
    }
    Ok(format)
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge { limit: IMPORT_BODY_LIMIT_BYTES as usize }
}

/// An import that did not start: nothing was written.
fn start_failure(error: StartError) -> ApiError {
    match error {
        StartError::Empty => ApiError::Invalid(Violations(vec![FieldViolation::new(
            "body",
            "empty",
            "the body holds no products (for CSV: no header row)",
        )])),
        StartError::Header(violations) => ApiError::Invalid(violations),
        StartError::Unreadable(violation) if violation.code == "too_large" => too_large(),
        StartError::Unreadable(violation) => ApiError::BadRequest(violation.message),
    }
}

/// What an import did, logged when its results are done (or the client left).
struct Tally {
    actor: String,
    started: Instant,
    counts: [u64; 4],
}

impl Tally {
    fn new(actor: String) -> Self {
        Self { actor, started: Instant::now(), counts: [0; 4] }
    }

    fn count(&mut self, result: &LineResult) {
        let index = match result.result {
            Outcome::Created => 0,
            Outcome::Updated => 1,
            Outcome::Unchanged => 2,
            Outcome::Error => 3,
        };
        self.counts[index] += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let [created, updated, unchanged, errors] = self.counts;
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(actor = %self.actor, created, updated, unchanged, errors, seconds, "product import finished");
    }
}
