//! `catalogctl dlq list|retry|discard`: the parked dead letters (`projector::parking`).
//!
//! A dead letter parks its aggregate: the event that could not be applied heads a queue, and
//! that aggregate's later events wait behind it, unapplied, in Postgres. `list` shows one line
//! per parked aggregate with its queue length; `retry` applies queues in order (after a fix,
//! e.g. an upcaster) and removes them; `discard` drops a queue with a reason, recorded in
//! `dead_letter_discards`. The dead-letter topic keeps a copy of each dead letter for
//! inspection with Kafka tools; it is not read here.

use std::io::Write;

use clap::Subcommand;
use projector::parking::{self, RetryOutcome};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print each parked aggregate as a JSON line: aggregate, queue length (`queued`), and the
    /// dead letter at its head (event id, type, sequence, position, reason).
    List,
    /// Apply parked queues in order and remove them: those of `--aggregate` (an aggregate id)
    /// and of `--id` (the event id of a parked event), or all of them. A queue whose event
    /// still fails stays parked (exit code 1).
    Retry {
        #[arg(long = "aggregate")]
        aggregates: Vec<String>,
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// Drop an aggregate's parked queue without applying it; the reason is recorded with the
    /// number of events dropped. The read model stays at the event before the dead letter.
    Discard {
        #[arg(long = "aggregate", required = true)]
        aggregate: String,
        /// Why (kept in dead_letter_discards and logged).
        #[arg(long, required = true)]
        reason: String,
    },
}

/// Runs the command; false if something asked for could not be done (exit code 1).
pub async fn run(pool: &PgPool, command: DlqCommand) -> anyhow::Result<bool> {
    match command {
        DlqCommand::List => {
            let parked = parking::list(pool).await?;
            let mut out = std::io::stdout().lock();
            for aggregate in &parked {
                serde_json::to_writer(&mut out, aggregate)?;
                writeln!(out)?;
            }
            let events: i64 = parked.iter().map(|p| p.queued).sum();
            eprintln!("{} parked aggregates, {events} events", parked.len());
            Ok(true)
        }
        DlqCommand::Retry { mut aggregates, ids } => {
            let event_ids: Vec<Uuid> = ids
                .iter()
                .map(|id| id.parse().map_err(|_| anyhow::anyhow!("--id {id:?} is not an event id (a UUID)")))
                .collect::<Result<_, _>>()?;
            if !event_ids.is_empty() {
                let found = parking::aggregates_of_events(pool, &event_ids).await?;
                if found.is_empty() {
                    anyhow::bail!("no parked event with id {ids:?}; `catalogctl dlq list` shows them");
                }
                aggregates.extend(found);
            }
            if aggregates.is_empty() && ids.is_empty() {
                aggregates = parking::list(pool).await?.into_iter().map(|p| p.aggregate_id).collect();
            }
            aggregates.sort_unstable();
            aggregates.dedup();
            let mut all_applied = true;
            for aggregate in &aggregates {
                match parking::retry(pool, aggregate).await? {
                    RetryOutcome::Applied { events: 0 } => {
                        println!("{aggregate}: nothing parked");
                        all_applied = false;
                    }
                    RetryOutcome::Applied { events } => println!("{aggregate}: applied {events} parked events"),
                    RetryOutcome::StillFailing { sequence, reason } => {
                        let at = sequence.map(|s| format!(" at sequence {s}")).unwrap_or_default();
                        println!("{aggregate}: still failing{at}: {reason}");
                        all_applied = false;
                    }
                }
            }
            Ok(all_applied)
        }
        DlqCommand::Discard { aggregate, reason } => {
            anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
            let dropped = parking::discard(pool, &aggregate, &reason).await?;
            if dropped == 0 {
                println!("{aggregate}: nothing parked");
                return Ok(false);
            }
            println!("{aggregate}: discarded {dropped} parked events ({reason})");
            Ok(true)
        }
    }
}
