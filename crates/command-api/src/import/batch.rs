//! The lines of an import, a batch at a time: the new products among them are created together,
//! in one append (one statement, one transaction), and every other line goes its own way
//! ([`super::upsert`]).
//!
//! One append per product costs a transaction each, and commits that send the publisher's
//! notification (`pg_notify`) queue behind one lock, WAL flush included: that caps one-by-one
//! creates at about a thousand a second whatever the concurrency. A batch pays it once.
//!
//! A batched line is decided by the aggregate exactly as [`event_store::CommandBus`] would
//! (a new product has no events to load) and written in the postgres-es row format
//! (`SerializedEvent`), so the event store holds the same rows either way, checked by the same
//! trigger in the same transaction. When the batch's append fails (a SKU a concurrent create took,
//! a category deleted meanwhile), nothing of it is stored and its lines are imported one by one
//! instead, where each meets the rule on its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use domain::product::Sku;
use domain::{FieldViolation, Product, ProductCommand, ProductEvent};
use event_store::CommandError;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use http_api::problem::ApiError;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::upsert::{self, Next, Shared};
use super::{Item, LineResult, Outcome, ProductLine, Rejected};

/// A batched new product: where its line is (in the batch's product lines, and among its
/// items), and what creating it decided.
struct Decided {
    at: usize,
    index: usize,
    id: Uuid,
    event: ProductEvent,
}

/// The results of `items`, in their order.
pub(super) async fn run(shared: Arc<Shared>, items: Vec<Item>, concurrency: usize) -> Vec<LineResult> {
    let mut results: Vec<Option<LineResult>> = (0..items.len()).map(|_| None).collect();
    let mut lines: Vec<(usize, u64, ProductLine)> = Vec::with_capacity(items.len());
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

    // Lines that may create a product together: a valid SKU that no other line of the batch has
    // and that no product holds.
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
    let held = match held_skus(&shared, candidates.iter().map(|at| lines[*at].2.sku.trim().to_owned()).collect()).await
    {
        Ok(held) => held,
        Err(error) => match outage(error) {
            // Every line would wait for a connection in vain: they all fail at once.
            Some(errors) => return fail_all(results, lines, &errors),
            // Every line then goes its own way, and meets the failure there.
            None => HashSet::new(),
        },
    };
    let mut decided: Vec<Decided> = Vec::new();
    let mut batched: HashSet<usize> = HashSet::new();
    for at in candidates {
        let (index, line, product) = &lines[at];
        if held.contains(&product.sku.trim().to_ascii_lowercase()) {
            continue;
        }
        let sku_text = Some(product.sku.trim().to_owned());
        match decide(&shared, product).await {
            Ok((id, event)) => decided.push(Decided { at, index: *index, id, event }),
            Err(errors) => results[*index] = Some(LineResult::failed(*line, sku_text, None, errors)),
        }
        batched.insert(at);
    }
    if !decided.is_empty() {
        match append(&shared, &decided).await {
            Ok(()) => {
                for product in &decided {
                    let (_, line, source) = &lines[product.at];
                    results[product.index] = Some(LineResult {
                        line: *line,
                        sku: Some(source.sku.trim().to_owned()),
                        id: Some(product.id),
                        result: Outcome::Created,
                        errors: Vec::new(),
                    });
                }
            }
            Err(error) => {
                tracing::debug!(%error, lines = decided.len(), "a batch append failed; importing its lines one by one");
                if let Some(errors) = outage(error) {
                    return fail_all(results, lines, &errors);
                }
                for product in &decided {
                    batched.remove(&product.at);
                }
            }
        }
    }

    // The rest, one by one: lines with the same SKU in line order, others `concurrency` at a time.
    // Once one meets an unreachable database, those not started yet fail at once.
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
fn fail_all(
    mut results: Vec<Option<LineResult>>,
    lines: Vec<(usize, u64, ProductLine)>,
    errors: &[FieldViolation],
) -> Vec<LineResult> {
    for (index, line, product) in lines {
        if results[index].is_none() {
            results[index] = Some(LineResult::failed(line, Some(product.sku.trim().to_owned()), None, errors.to_vec()));
        }
    }
    results.into_iter().map(|result| result.expect("every line has a result")).collect()
}

/// Which of `skus` (lower-cased) a live product holds.
async fn held_skus(shared: &Shared, skus: Vec<String>) -> Result<HashSet<String>, sqlx::Error> {
    if skus.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(event_store::claims::held_skus(&shared.pool, &skus).await?.into_iter().collect())
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

/// Appends every decided product's `ProductCreated` (as version 1) in one statement.
async fn append(shared: &Shared, decided: &[Decided]) -> Result<(), sqlx::Error> {
    let new: Vec<(String, ProductEvent)> = decided.iter().map(|p| (p.id.to_string(), p.event.clone())).collect();
    event_store::append::append_first_events::<Product>(&shared.pool, &new, shared.metadata.clone()).await
}
