//! The report of `bench pipeline`: one table per phase, each figure next to its baseline and
//! target, for stdout and the pipeline section of BENCHMARKS.md.

use anyhow::Result;

use super::lag::{BrokerHop, Lag, CPU_GROUPS, LAG_DURATION, LAG_RATES, TARGET_RATE};
use super::reads::{Reads, HTTP_CONNECTIONS, HTTP_DURATION, WRK_THREADS};
use super::{
    Throughput, DEFAULT_PUBLISH_BATCH_SIZE, EVENTS, FETCH_WAIT_MAX_MS, LINGER_MS, PROJECT_BATCH_SIZE, PROJECT_LANES,
};
use crate::bench::harness::{cores, write_section};

/// The publisher's target: this share of the raw producer's rate, measured in the same run.
const PUBLISH_RATIO_TARGET: f64 = 0.6;
const PROJECT_TARGET: f64 = 50_000.0;
const LAG_P50_TARGET_MS: f64 = 20.0;
const LAG_P99_TARGET_MS: f64 = 60.0;
const READ_RATIO_TARGET: f64 = 0.85;

pub(super) struct Results {
    /// By publish batch size.
    pub(super) publishers: Vec<(u32, Throughput)>,
    pub(super) raw_producer: Throughput,
    pub(super) projector: Throughput,
    pub(super) raw_consumer: Throughput,
    /// The projector's products upsert alone, straight to Postgres.
    pub(super) write_ceiling: Throughput,
    pub(super) lags: Vec<Lag>,
    /// p50 of a `min_version=1` GET of an already visible product, ms.
    pub(super) round_trip: f64,
    pub(super) hops: Vec<BrokerHop>,
    pub(super) reads: Reads,
}

pub(super) fn report(results: &Results) -> Result<()> {
    let throughput = throughput_table(results);
    let lag = lag_table(&results.lags);
    let inside = inside_table(&results.lags);
    let read = read_table(&results.reads);
    let hops = hop_table(&results.hops);
    let round_trip = results.round_trip;
    println!(
        "\n{throughput}\n{lag}\n{inside}\nmin_version GET round trip on a visible product: p50 {round_trip:.2} ms\n\n{hops}\n{read}"
    );
    let section = format!(
        "## pipeline\n\n\
         `cargo xtask bench pipeline`, release builds, on {cores} cores shared by everything: Postgres, tansu\n\
         (in-memory storage) and the services all run on this machine, next to the load generators.\n\
         The projector runs with its defaults (`--publish-batch-size {DEFAULT_PUBLISH_BATCH_SIZE} --project-batch-size \
         {PROJECT_BATCH_SIZE}\n\
         --project-lanes {PROJECT_LANES} --fetch-wait-max-ms {FETCH_WAIT_MAX_MS}`) except where a row names another publish \
         batch size.\n\n\
         **Throughput.** {EVENTS} `ProductCreated` events are written to the store with SQL; `projector --role publish`\n\
         publishes them to a new topic (timed by its checkpoint's `published_total`), then `projector --role project`\n\
         with a new group applies that topic to `products` (timed by `count(*)`). Rates are counted from the first\n\
         progress seen; start-up (process start, topic creation, group join) is shown apart. Baselines, same run:\n\
         the raw producer is an rdkafka producer in the bench process configured like the publisher's (idempotent,\n\
         acks=all, linger.ms={LINGER_MS}) sending {EVENTS} messages with the same key, value and headers, all in flight at once:\n\
         the ceiling of client and broker. The raw consumer reads the same {EVENTS} messages with the projector's\n\
         consumer settings and a new group, applying nothing: the cost of consuming alone. The projector's second\n\
         baseline is its own products upsert (`Products::save`, batches of {PROJECT_BATCH_SIZE}, {PROJECT_LANES} at a time) of the\n\
         rows it projected, sent straight to Postgres into an empty copy of `products` with the same indexes\n\
         and generated search columns (no triggers, no history rows): the read model's write alone.\n\n{throughput}\n\
         **End-to-end lag**, command-api, query-api and `projector --role all` on a new topic (its publisher starts\n\
         at the store's head). At a fixed rate, each command in its own task, `POST /api/v1/products` (201), then\n\
         `GET /api/v1/products/{{id}}?min_version=1` on query-api, which waits server-side until the read model\n\
         has the version; the lag is from the 201 to that GET's 200, {secs} s per rate. It includes the GET's own\n\
         HTTP round trip: p50 {round_trip:.2} ms on a product already visible.\n\n{lag}\n\
         Inside the projector at each rate (deltas of its own metrics over the rate's {secs} s: rounds of the\n\
         publish and project loops, events per round, mean round time), its CPU, and the CPU of the whole\n\
         machine (everything running on it, not only this system), and the CPU of each process:\n\n{inside}\n\
         Baseline for the Kafka hop of that path: a producer configured like the publisher's sends one message at a\n\
         time, {rate} per second, to a consumer with the projector's settings (`fetch.wait.max.ms` \
         {FETCH_WAIT_MAX_MS}), and to one\n\
         with librdkafka's default (500 ms); the last row has the producer linger of 5 ms the publisher had before\n\
         `KAFKA_LINGER_MS` (default {LINGER_MS}). Latency from the send to the receipt, linger included. tansu\n\
         answers a fetch that finds nothing by re-reading its storage after sleeps, up to that wait, instead of as\n\
         soon as data arrives as Kafka does; the difference between the first two rows is that wait.\n\n{hops}\n\
         **Cached read vs a trivial handler**: `wrk -t{WRK_THREADS} -c{HTTP_CONNECTIONS} -d{http}s` against one query-api\n\
         process, a product read once before (so cached) and `/health` (a bare 200 behind the same middleware).\n\
         wrk shares the {cores} cores with query-api.\n\n{read}",
        cores = cores(),
        secs = LAG_DURATION.as_secs(),
        rate = LAG_RATES[0],
        http = HTTP_DURATION.as_secs(),
    );
    write_section("pipeline", &section)
}

fn throughput_table(results: &Results) -> String {
    let mut table = String::from(
        "| stage | pipeline events/s | start-up s | baseline | baseline events/s | ratio | target | met |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    // Each target as events/s: the publisher's is a share of its baseline's rate.
    let publishers = results.publishers.iter().map(|(batch_size, throughput)| {
        let stage = format!("publish: store → Kafka, batches of {batch_size}");
        let target = PUBLISH_RATIO_TARGET * results.raw_producer.per_sec;
        let label = format!("≥ {PUBLISH_RATIO_TARGET}× raw ({target:.0}/s)");
        (stage, throughput, "raw producer", &results.raw_producer, target, label)
    });
    let projector = (
        "project: Kafka → read model".to_owned(),
        &results.projector,
        "raw consumer",
        &results.raw_consumer,
        PROJECT_TARGET,
        format!("≥ {PROJECT_TARGET:.0}/s"),
    );
    let projector_vs_sql = (
        "project: Kafka → read model".to_owned(),
        &results.projector,
        "its products upsert, SQL only",
        &results.write_ceiling,
        PROJECT_TARGET,
        format!("≥ {PROJECT_TARGET:.0}/s"),
    );
    for (stage, pipeline, baseline_name, baseline, target, label) in publishers.chain([projector, projector_vs_sql]) {
        table.push_str(&format!(
            "| {stage} | {:.0} | {:.1} | {baseline_name} | {:.0} | {:.2} | {label} | {} |\n",
            pipeline.per_sec,
            pipeline.startup.as_secs_f64(),
            baseline.per_sec,
            pipeline.per_sec / baseline.per_sec,
            verdict(pipeline.per_sec >= target, || format!("{:.0} % of it", 100.0 * pipeline.per_sec / target)),
        ));
    }
    table
}

fn lag_table(lags: &[Lag]) -> String {
    let mut table = String::from(
        "| commands/s asked | achieved/s | measured | failed | p50 ms | p99 ms | max ms | target | met |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for l in lags {
        let (target, met) = if l.rate == TARGET_RATE {
            let met = l.failures == 0 && l.p50_ms <= LAG_P50_TARGET_MS && l.p99_ms <= LAG_P99_TARGET_MS;
            let by = || {
                format!(
                    "p50 {:.1}×, p99 {:.1}× the targets",
                    l.p50_ms / LAG_P50_TARGET_MS,
                    l.p99_ms / LAG_P99_TARGET_MS
                )
            };
            (format!("p50 ≤ {LAG_P50_TARGET_MS:.0}, p99 ≤ {LAG_P99_TARGET_MS:.0}"), verdict(met, by))
        } else {
            ("—".to_owned(), "—".to_owned())
        };
        table.push_str(&format!(
            "| {} | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} | {target} | {met} |\n",
            l.rate, l.achieved_per_sec, l.measured, l.failures, l.p50_ms, l.p99_ms, l.max_ms
        ));
    }
    table
}

/// Where the time went at each rate: the projector's rounds (from its own metrics) and the CPU.
fn inside_table(lags: &[Lag]) -> String {
    let mut table = String::from(
        "| commands/s | publish rounds | events/round | ms/round | project rounds | events/round | ms/round \
         | projector CPU (cores) | machine CPU busy | of it stolen |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut cores = format!(
        "\nCPU in cores of each process while the rate ran (of {} cores):\n\n| commands/s | {} | total |\n|---|{}---|\n",
        cores(),
        CPU_GROUPS.join(" | "),
        "---|".repeat(CPU_GROUPS.len())
    );
    for l in lags {
        let i = &l.inside;
        table.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} % | {:.0} % |\n",
            l.rate,
            i.publish_rounds,
            i.published / i.publish_rounds.max(1.0),
            i.publish_round_ms,
            i.project_rounds,
            i.projected / i.project_rounds.max(1.0),
            i.project_round_ms,
            i.projector_cores,
            100.0 * i.machine_busy,
            100.0 * i.machine_steal
        ));
        let cells: Vec<String> = i.cores.iter().map(|c| format!("{c:.2}")).collect();
        cores.push_str(&format!("| {} | {} | {:.2} |\n", l.rate, cells.join(" | "), i.cores.iter().sum::<f64>()));
    }
    table + &cores
}

fn hop_table(hops: &[BrokerHop]) -> String {
    let mut table = String::from(
        "| consumer fetch.wait.max.ms | producer linger.ms | send → receive p50 ms | p99 ms |\n|---|---|---|---|\n",
    );
    for hop in hops {
        let setting =
            hop.fetch_wait_ms.map_or("librdkafka's default (500)".to_owned(), |ms| format!("{ms}, as the projector"));
        let linger = if hop.linger_ms == LINGER_MS {
            format!("{LINGER_MS}, as the publisher")
        } else {
            hop.linger_ms.to_string()
        };
        table.push_str(&format!("| {setting} | {linger} | {:.1} | {:.1} |\n", hop.p50_ms, hop.p99_ms));
    }
    table
}

fn read_table(reads: &Reads) -> String {
    let ratio = reads.product.per_sec / reads.health.per_sec;
    format!(
        "| route | requests/s | p50 | p99 | query-api CPU µs per request |\n|---|---|---|---|---|\n\
         | `GET /api/v1/products/{{id}}` (cached) | {:.0} | {} | {} | {:.1} |\n\
         | `GET /health` | {:.0} | {} | {} | {:.1} |\n\n\
         Ratio {ratio:.2}; target ≥ {READ_RATIO_TARGET}: {}.\n",
        reads.product.per_sec,
        reads.product.p50,
        reads.product.p99,
        reads.product.cpu_us,
        reads.health.per_sec,
        reads.health.p50,
        reads.health.p99,
        reads.health.cpu_us,
        verdict(ratio >= READ_RATIO_TARGET, || format!("{:.0} % of it", 100.0 * ratio / READ_RATIO_TARGET)),
    )
}

fn verdict(met: bool, by: impl FnOnce() -> String) -> String {
    if met {
        "yes".to_owned()
    } else {
        format!("no: {}", by())
    }
}
