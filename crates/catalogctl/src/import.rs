//! `catalogctl import FILE`: loads products from an NDJSON or CSV file into the event store,
//! upserted by SKU, through the same code as `POST /api/v1/products/import`
//! (`command_api::import`), without the HTTP API and without its line limit.
//!
//! Progress (lines, products/s) goes to stderr when it is a terminal; the summary to stdout;
//! every failed line's result to the report file (`FILE.errors.ndjson` unless `--report`),
//! which is written on every run, empty when nothing failed. Exit code 1 when a line failed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use command_api::import::{Format, Importer, Limits, Outcome, StartError, DEFAULT_CONCURRENCY};
use domain::Currency;
use event_store::{CommandBus, EventMetadata};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;

#[derive(Args)]
pub struct ImportArgs {
    /// The file: NDJSON (one product per line) or CSV (a header row, then one product per
    /// record); see the README's "Bulk import" for the fields and columns.
    file: PathBuf,

    /// The file's format; by default its extension's (`.ndjson`/`.jsonl`, `.csv`).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,

    /// Where the results of failed lines go, as NDJSON; `FILE.errors.ndjson` by default.
    #[arg(long)]
    report: Option<PathBuf>,

    /// Lines worked on at once (each holds at most one database connection at a time).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,

    /// `development`, set explicitly (as for the APIs), also accepts plain `http` image URLs.
    #[arg(long, env = "CATALOG_ENV")]
    environment: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Ndjson,
}

/// What the lines of an import came to.
#[derive(Debug, Default)]
struct Summary {
    created: u64,
    updated: u64,
    unchanged: u64,
    errors: u64,
}

impl Summary {
    fn total(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.errors
    }
}

pub async fn run(pool: &PgPool, default_currency: Currency, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        Some(FormatArg::Csv) => Format::Csv,
        Some(FormatArg::Ndjson) => Format::Ndjson,
        None => Format::from_path(&args.file).with_context(|| {
            format!("cannot tell the format of {} from its extension; give --format csv or ndjson", args.file.display())
        })?,
    };
    let report_path = args.report.clone().unwrap_or_else(|| default_report(&args.file));
    let lines = count_lines(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let file = tokio::fs::File::open(&args.file).await.with_context(|| format!("opening {}", args.file.display()))?;
    let mut report = std::io::BufWriter::new(
        std::fs::File::create(&report_path).with_context(|| format!("creating {}", report_path.display()))?,
    );

    let importer = Importer::new(
        CommandBus::new(pool.clone()),
        pool.clone(),
        default_currency,
        args.environment.as_deref() == Some("development"),
    )
    .with_concurrency(args.concurrency);
    let started = Instant::now();
    let results = match importer.start(file, format, Limits::file(), EventMetadata::new("catalogctl")).await {
        Ok(results) => results,
        Err(StartError::Header(violations)) => {
            let problems: Vec<String> = violations.0.iter().map(|v| v.message.clone()).collect();
            anyhow::bail!("{}: the header is wrong: {}", args.file.display(), problems.join("; "))
        }
        Err(error) => anyhow::bail!("{}: {error}", args.file.display()),
    };

    let bar = progress_bar(lines);
    let mut summary = Summary::default();
    let mut results = results;
    while let Some(result) = results.next().await {
        bar.set_position(result.line);
        match result.result {
            Outcome::Created => summary.created += 1,
            Outcome::Updated => summary.updated += 1,
            Outcome::Unchanged => summary.unchanged += 1,
            Outcome::Error => {
                summary.errors += 1;
                serde_json::to_writer(&mut report, &result)?;
                writeln!(report)?;
            }
        }
    }
    bar.finish_and_clear();
    report.flush().with_context(|| format!("writing {}", report_path.display()))?;

    let seconds = started.elapsed().as_secs_f64();
    let rate = summary.total() as f64 / seconds.max(0.001);
    println!(
        "{}: {} created, {} updated, {} unchanged, {} errors in {seconds:.1} s ({rate:.0} products/s)",
        args.file.display(),
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.errors,
    );
    if summary.errors > 0 {
        println!("failed lines: {}", report_path.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `FILE.errors.ndjson` next to the file.
fn default_report(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".errors.ndjson");
    file.with_file_name(name)
}

/// The lines of the file (the last one counts without its line break): the progress bar's end.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;

    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; 256 * 1024];
    let (mut lines, mut last) = (0_u64, b'\n');
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines + u64::from(last != b'\n'));
        }
        lines += buffer[..read].iter().filter(|byte| **byte == b'\n').count() as u64;
        last = buffer[read - 1];
    }
}

/// Lines, products/s and ETA on stderr; nothing at all when stderr is not a terminal.
fn progress_bar(lines: u64) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(lines), target);
    bar.set_style(
        ProgressStyle::with_template("importing [{bar:30}] line {human_pos}/{human_len}, {per_sec}, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_sits_next_to_the_file() {
        assert_eq!(default_report(Path::new("/tmp/x/products.csv")), Path::new("/tmp/x/products.csv.errors.ndjson"));
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_line_break() {
        let dir = std::env::temp_dir().join(format!("catalogctl-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (content, lines) in [("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("a\n\nb\n", 3)] {
            let path = dir.join("f");
            std::fs::write(&path, content).unwrap();
            assert_eq!(count_lines(&path).unwrap(), lines, "{content:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
