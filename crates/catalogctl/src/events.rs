//! `catalogctl events` and `catalogctl replay`.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use event_store::reads;
use event_store::EventFilter;
use futures::future::try_join_all;
use service_runtime::kafka::KafkaSettings;
use sqlx::PgPool;

/// Events read (and produced) per round trip.
const PAGE: i64 = 1000;

#[derive(Args)]
pub struct EventsArgs {
    /// One aggregate's whole stream.
    #[arg(long, conflicts_with = "from_position", required_unless_present = "from_position")]
    aggregate_id: Option<String>,
    /// Events from this global position on.
    #[arg(long)]
    from_position: Option<i64>,
    /// Print at most this many events.
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// First global position to republish.
    #[arg(long)]
    from_position: i64,
    /// Last global position to republish (default: the head).
    #[arg(long)]
    to_position: Option<i64>,
    /// Only events of this aggregate type (`Product`, `User`).
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Only events of this aggregate.
    #[arg(long)]
    aggregate_id: Option<String>,
    /// Topic to publish to (default: the events topic, KAFKA_TOPIC).
    #[arg(long)]
    topic: Option<String>,
}

pub async fn print(pool: &PgPool, args: EventsArgs) -> anyhow::Result<()> {
    if args.limit < 1 {
        bail!("--limit must be at least 1");
    }
    let filter = EventFilter {
        from_position: args.from_position.unwrap_or(0),
        aggregate_id: args.aggregate_id,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    let mut printed = 0;
    while printed < args.limit {
        let page = reads::by_position(pool, &filter, after, PAGE.min(args.limit - printed)).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        for event in &page {
            serde_json::to_writer(&mut out, event)?;
            writeln!(out)?;
        }
        printed += page.len() as i64;
    }
    Ok(())
}

pub async fn replay(pool: &PgPool, kafka: &KafkaSettings, args: ReplayArgs) -> anyhow::Result<()> {
    if args.from_position < 0 || args.to_position.is_some_and(|to| to < args.from_position) {
        bail!("the position range is empty or negative");
    }
    let producer = crate::check_broker(kafka).await?;
    let topic = args.topic.unwrap_or_else(|| kafka.kafka_topic.clone());
    let filter = EventFilter {
        from_position: args.from_position,
        to_position: args.to_position,
        aggregate_type: args.aggregate_type,
        aggregate_id: args.aggregate_id,
    };
    let mut after = 0;
    let mut replayed = 0u64;
    loop {
        let page = reads::by_position(pool, &filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        try_join_all(page.iter().map(|event| projector::publisher::produce(&producer, &topic, event))).await?;
        replayed += page.len() as u64;
    }
    println!("replayed {replayed} events to {topic}");
    Ok(())
}
