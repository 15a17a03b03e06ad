//! The lines of an import, a batch at a time: the new products among them are created together,
//! in one append (one statement, one transaction), the known products among them are loaded
//! together, compared, and their changes appended together, and the other lines go their own
//! way ([`super::upsert`]).
//!
//! One append per product costs a transaction each, and commits that send the publisher's
//! notification (`pg_notify`) queue behind one lock, WAL flush included: that caps one-by-one
//! creates at about a thousand a second whatever the concurrency. A batch pays it once; so does
//! the load of a batch's known products (one query for all their streams instead of a lookup
//! and two loads each).
//!
//! A batched line is decided by the aggregate exactly as [`event_store::CommandBus`] would
//! (from no events for a new product, from its folded stream for a known one) and written in
//! the postgres-es row format (`SerializedEvent`), so the event store holds the same rows either
//! way, checked by the same trigger in the same transaction. An update takes the sequence after
//! the version it was compared with, so a product changed meanwhile fails the append on the
//! events' primary key. When a batch's append fails (a SKU a concurrent create took, a category
//! deleted meanwhile, a concurrent change), nothing of it is stored and its lines are imported
//! one by one instead, where each meets the rule on its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use domain::product::Sku;
use domain::{FieldViolation, Product, ProductCommand, ProductEvent};
use event_store::batch::NewEvent;
use event_store::CommandError;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use http_api::problem::ApiError;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::upsert::{self, Next, Shared};
use super::{Item, LineResult, Outcome, ProductLine, Rejected};

/// A known product whose stream is longer than this is left to the one-by-one path, which
/// loads it from its snapshot.
const MAX_FOLDED_EVENTS: usize = 2 * event_store::DEFAULT_SNAPSHOT_EVERY;

/// A batched line's product: where its line is (in the batch's product lines, and among its
/// items), and what its command decided, from which sequence on.
struct Decided {
    at: usize,
    index: usize,
    id: Uuid,
    first_sequence: usize,
    events: Vec<ProductEvent>,
    outcome: Outcome,
}

/// The lines of a batch that have no result yet, `(index among the items, line number, line)`.
type Lines = Vec<(usize, u64, ProductLine)>;

/// The results of `items`, in their order.
pub(super) async fn run(shared: Arc<Shared>, items: Vec<Item>, concurrency: usize) -> Vec<LineResult> {
    let mut results: Vec<Option<LineResult>> = (0..items.len()).map(|_| None).collect();
    let mut lines: Lines = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Item::Stop { line, violation } => {
                results[index] = Some(LineResult::failed(line, None, None, vec![violation]))
            }
            Item::Line { line, parsed: Err(Rejected { sku, errors }) } => {
                results[index] = Some(LineResult::failed(line, sku, None, errors));
            }
            Item::Line { line, parsed: Ok(product) } => lines.push((index, line, product)),
        }
    }

    // Lines that may be batched: a valid SKU that no other line of the batch has.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, _, product) in &lines {
        *seen.entry(product.sku.trim().to_ascii_lowercase()).or_default() += 1;
    }
    let candidates: Vec<usize> = (0..lines.len())
        .filter(|at| {
            let sku = &lines[*at].2.sku;
            seen[&sku.trim().to_ascii_lowercase()] == 1 && Sku::parse(sku).is_ok()
        })
        .collect();
    let skus: Vec<String> = candidates.iter().map(|at| lines[*at].2.sku.trim().to_owned()).collect();
    let holders: HashMap<String, String> = match sku_holders(&shared, skus).await {
        Ok(holders) => holders,
        Err(error) => match outage(error) {
            // Every line would wait for a connection in vain: they all fail at once.
            Some(errors) => return fail_all(results, lines, &errors),
            // Every line then goes its own way, and meets the failure there.
            None => return singles(shared, results, lines, &HashSet::new(), concurrency).await,
        },
    };

    // New SKUs: created together.
    let mut batched: HashSet<usize> = HashSet::new();
    let mut created: Vec<Decided> = Vec::new();
    let mut known: Vec<(usize, String)> = Vec::new();
    for at in candidates {
        let (index, line, product) = &lines[at];
        if let Some(id) = holders.get(&product.sku.trim().to_ascii_lowercase()) {
            known.push((at, id.clone()));
            continue;
        }
        match decide(&shared, product).await {
            Ok((id, event)) => created.push(Decided {
                at,
                index: *index,
                id,
                first_sequence: 1,
                events: vec![event],
                outcome: Outcome::Created,
            }),
            Err(errors) => {
                results[*index] = Some(LineResult::failed(*line, Some(product.sku.trim().to_owned()), None, errors))
            }
        }
        batched.insert(at);
    }
    if let Err(errors) = append(&shared, &lines, &mut results, &mut batched, created).await {
        return fail_all(results, lines, &errors);
    }

    // Known SKUs: their products loaded together, and what changes appended together.
    if !known.is_empty() {
        let ids: Vec<String> = known.iter().map(|(_, id)| id.clone()).collect();
        let loaded = match event_store::batch::load_many::<Product>(&shared.pool, &ids, MAX_FOLDED_EVENTS).await {
            Ok(loaded) => loaded,
            Err(error) => match outage(error) {
                Some(errors) => return fail_all(results, lines, &errors),
                None => HashMap::new(),
            },
        };
        let mut changed: Vec<Decided> = Vec::new();
        for (at, id) in known {
            let (index, line, source) = &lines[at];
            let (Some(product), Ok(id)) = (loaded.get(&id), Uuid::parse_str(&id)) else { continue };
            let sku = Some(source.sku.trim().to_owned());
            match compare(&shared, source, product).await {
                // The claim moved on, or the product needs the one-by-one path.
                Compared::Alone => continue,
                Compared::Unchanged => {
                    results[*index] = Some(LineResult {
                        line: *line,
                        sku,
                        id: Some(id),
                        result: Outcome::Unchanged,
                        errors: Vec::new(),
                    })
                }
                Compared::Failed(errors) => results[*index] = Some(LineResult::failed(*line, sku, Some(id), errors)),
                Compared::Changed(events) => changed.push(Decided {
                    at,
                    index: *index,
                    id,
                    first_sequence: product.version as usize + 1,
                    events,
                    outcome: Outcome::Updated,
                }),
            }
            batched.insert(at);
        }
        if let Err(errors) = append(&shared, &lines, &mut results, &mut batched, changed).await {
            return fail_all(results, lines, &errors);
        }
    }

    singles(shared, results, lines, &batched, concurrency).await
}

/// The lines not in `batched`, one by one: lines with the same SKU in line order, others
/// `concurrency` at a time. Once one meets an unreachable database, those not started yet fail
/// at once.
async fn singles(
    shared: Arc<Shared>,
    mut results: Vec<Option<LineResult>>,
    lines: Lines,
    batched: &HashSet<usize>,
    concurrency: usize,
) -> Vec<LineResult> {
    let outage_met: Arc<std::sync::Mutex<Option<Vec<FieldViolation>>>> = Arc::default();
    let mut previous_of_sku: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    let mut singles: Vec<BoxFuture<'static, (usize, LineResult)>> = Vec::new();
    for (at, (index, line, product)) in lines.into_iter().enumerate() {
        if batched.contains(&at) {
            continue;
        }
        let key = product.sku.trim().to_ascii_lowercase();
        let previous = previous_of_sku.remove(&key);
        let (done, next) = oneshot::channel();
        previous_of_sku.insert(key, next);
        let shared = shared.clone();
        let outage_met = outage_met.clone();
        singles.push(
            async move {
                if let Some(previous) = previous {
                    // An error only means the previous line's work was dropped.
                    let _ = previous.await;
                }
                let sku = Some(product.sku.trim().to_owned());
                let met = outage_met.lock().expect("outage").clone();
                let result = match met {
                    Some(errors) => LineResult::failed(line, sku, None, errors),
                    None => match upsert::upsert(&shared, product).await {
                        Ok((result, id)) => LineResult { line, sku, id: Some(id), result, errors: Vec::new() },
                        Err(failure) => {
                            if failure.errors.iter().any(|e| e.code == super::STORE_UNAVAILABLE) {
                                *outage_met.lock().expect("outage") = Some(failure.errors.clone());
                            }
                            LineResult::failed(line, sku, failure.id, failure.errors)
                        }
                    },
                };
                let _ = done.send(());
                (index, result)
            }
            .boxed(),
        );
    }
    let done: Vec<(usize, LineResult)> = futures::stream::iter(singles).buffered(concurrency).collect().await;
    for (index, result) in done {
        results[index] = Some(result);
    }
    results.into_iter().map(|result| result.expect("every line has a result")).collect()
}

/// The line error of a database that cannot be reached, if that is what `error` is.
fn outage(error: sqlx::Error) -> Option<Vec<FieldViolation>> {
    let error = ApiError::from_database(error);
    matches!(error, ApiError::Unavailable { .. }).then(|| upsert::unexpected(error))
}

/// The results so far, with `errors` for every line that has none yet.
fn fail_all(mut results: Vec<Option<LineResult>>, lines: Lines, errors: &[FieldViolation]) -> Vec<LineResult> {
    for (index, line, product) in lines {
        if results[index].is_none() {
            results[index] = Some(LineResult::failed(line, Some(product.sku.trim().to_owned()), None, errors.to_vec()));
        }
    }
    results.into_iter().map(|result| result.expect("every line has a result")).collect()
}

/// Which of `skus` a live product holds: lower-cased SKU → product id.
async fn sku_holders(shared: &Shared, skus: Vec<String>) -> Result<HashMap<String, String>, sqlx::Error> {
    if skus.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(event_store::batch::sku_holders(&shared.pool, &skus).await?.into_iter().collect())
}

/// What creating the line's product decides: its id and its `ProductCreated`, or why not.
async fn decide(shared: &Shared, line: &ProductLine) -> Result<(Uuid, ProductEvent), Vec<FieldViolation>> {
    let sku = Sku::parse(&line.sku).map_err(|violation| vec![violation])?;
    let categories = upsert::categories(shared, line).await.map_err(|failure| failure.errors)?;
    let command = upsert::create_command(shared, line, &sku, categories)?;
    let ProductCommand::Create { id, .. } = command else { unreachable!("a create command") };
    let mut product = Product::default();
    let sink = EventSink::default();
    if let Err(error) = product.handle(command, &(), &sink).await {
        return Err(match upsert::next_step(CommandError::Rejected(error)) {
            Next::Fail(errors) => errors,
            Next::Retry => unreachable!("a new product's create is never retried"),
        });
    }
    let mut events = sink.collect().await;
    match (events.pop(), events.is_empty()) {
        (Some(event), true) => Ok((id, event)),
        _ => Err(upsert::unexpected(ApiError::Internal(anyhow::anyhow!("a create decided other than one event")))),
    }
}

/// What a line says about a known product.
enum Compared {
    /// The product already is as the line says.
    Unchanged,
    /// The events of the update that makes it so.
    Changed(Vec<ProductEvent>),
    /// The line is wrong (a field the rules refuse, an unknown category slug).
    Failed(Vec<FieldViolation>),
    /// For the one-by-one path: the product no longer holds the SKU, or the update needs a
    /// fresh look.
    Alone,
}

/// Compares the line with `product` (as its events fold it) as the one-by-one path does, and
/// decides the update if anything differs.
async fn compare(shared: &Shared, line: &ProductLine, product: &Product) -> Compared {
    let Ok(sku) = Sku::parse(&line.sku) else { return Compared::Alone };
    let holds_it = product.id.is_some()
        && !product.deleted
        && product.sku.as_deref().is_some_and(|held| held.eq_ignore_ascii_case(sku.as_str()));
    if !holds_it {
        return Compared::Alone;
    }
    let categories = match upsert::categories(shared, line).await {
        Ok(categories) => categories,
        Err(failure) => return Compared::Failed(failure.errors),
    };
    let Some(command) = upsert::changes(product, line, &sku, categories, shared.allow_http_images) else {
        return Compared::Unchanged;
    };
    let mut working = product.clone();
    let sink = EventSink::default();
    if let Err(error) = working.handle(command, &(), &sink).await {
        return match upsert::next_step(CommandError::Rejected(error)) {
            Next::Fail(errors) => Compared::Failed(errors),
            Next::Retry => Compared::Alone,
        };
    }
    let events = sink.collect().await;
    if events.is_empty() {
        Compared::Unchanged
    } else {
        Compared::Changed(events)
    }
}

/// Appends every decided product's events in one statement and records their lines' results.
/// A refused append leaves its lines to the one-by-one path (taken out of `batched`); an
/// unreachable database is the error.
async fn append(
    shared: &Shared,
    lines: &Lines,
    results: &mut [Option<LineResult>],
    batched: &mut HashSet<usize>,
    decided: Vec<Decided>,
) -> Result<(), Vec<FieldViolation>> {
    if decided.is_empty() {
        return Ok(());
    }
    let events: Vec<NewEvent<Product>> = decided
        .iter()
        .flat_map(|product| {
            product.events.iter().enumerate().map(|(n, event)| NewEvent {
                aggregate_id: product.id.to_string(),
                sequence: product.first_sequence + n,
                event: event.clone(),
            })
        })
        .collect();
    match event_store::batch::append_events::<Product>(&shared.pool, &events, &shared.metadata).await {
        Ok(()) => {
            for product in &decided {
                let (_, line, source) = &lines[product.at];
                results[product.index] = Some(LineResult {
                    line: *line,
                    sku: Some(source.sku.trim().to_owned()),
                    id: Some(product.id),
                    result: product.outcome,
                    errors: Vec::new(),
                });
            }
            Ok(())
        }
        Err(error) => {
            tracing::debug!(%error, lines = decided.len(), "a batch append failed; importing its lines one by one");
            if let Some(errors) = outage(error) {
                return Err(errors);
            }
            for product in &decided {
                batched.remove(&product.at);
            }
            Ok(())
        }
    }
}
