//! `catalogctl rebuild` and `catalogctl verify`: thin wrappers over `read_model::{rebuild,
//! verify}`, which hold the logic the projector shares.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use read_model::categories::Categories;
use read_model::history::History;
use read_model::products::Products;
use read_model::projection::ReadModel;
use read_model::rebuild::{self, RebuildReport};
use read_model::reservations::Reservations;
use read_model::users::Users;
use read_model::verify::{self, Difference};
use sqlx::PgPool;

use crate::Target;

pub async fn rebuild(pool: &PgPool, target: Target) -> anyhow::Result<()> {
    if matches!(target, Target::Products | Target::All) {
        rebuild_one::<Products>(pool).await?;
    }
    if matches!(target, Target::History | Target::All) {
        rebuild_one::<History>(pool).await?;
    }
    if matches!(target, Target::Categories | Target::All) {
        rebuild_one::<Categories>(pool).await?;
    }
    if matches!(target, Target::Users | Target::All) {
        rebuild_one::<Users>(pool).await?;
    }
    if matches!(target, Target::Reservations | Target::All) {
        rebuild_one::<Reservations>(pool).await?;
    }
    Ok(())
}

async fn rebuild_one<M: ReadModel>(pool: &PgPool) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let total = rebuild::event_count::<M>(pool).await?;
    let bar = progress_bar(total, M::TABLE);
    let report = rebuild::rebuild::<M>(pool, |done| bar.set_position(done)).await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: rebuilt from {} events into {} rows in {seconds:.1} s ({:.0} events/s); {} events caught up in {} \
         rounds before the swap, {} aggregates at the swap (attempt {}, table locked {:.1} ms)",
        M::TABLE,
        report.events,
        report.rows,
        report.events as f64 / seconds.max(f64::EPSILON),
        report.caught_up,
        report.rounds,
        report.delta,
        report.swap_attempts,
        report.table_lock_held.as_secs_f64() * 1000.0,
    );
    for event in &report.unappliable {
        println!(
            "{}: event {} of {} (position {}, {}) cannot be applied; the aggregate stops before it: {}",
            M::TABLE,
            event.sequence,
            event.aggregate_id,
            event.position,
            event.event_type,
            event.reason
        );
    }
    Ok(report)
}

/// Events, events/s and ETA on stderr; nothing at all when stderr is not a terminal, so logs
/// and CI output stay clean.
fn progress_bar(total: u64, table: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("{msg:>9} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(table.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub async fn verify(pool: &PgPool, settle: Duration) -> anyhow::Result<ExitCode> {
    let mut differences: Vec<Difference> = verify::verify::<Products>(pool, settle).await?;
    differences.extend(verify::verify::<History>(pool, settle).await?);
    differences.extend(verify::verify::<Categories>(pool, settle).await?);
    differences.extend(verify::verify::<Users>(pool, settle).await?);
    differences.extend(verify::verify::<Reservations>(pool, settle).await?);
    differences.extend(verify::stock_holds(pool, settle).await?);
    let mut out = std::io::stdout().lock();
    for difference in &differences {
        serde_json::to_writer(&mut out, difference)?;
        writeln!(out)?;
    }
    if differences.is_empty() {
        eprintln!("read models match the event store");
        Ok(ExitCode::SUCCESS)
    } else {
        let mut aggregates: Vec<&str> = differences.iter().map(|d| d.aggregate_id.as_str()).collect();
        aggregates.dedup();
        eprintln!("{} differences in {} aggregates", differences.len(), aggregates.len());
        Ok(ExitCode::FAILURE)
    }
}
