//! Developer tasks for the catalog workspace, run as `cargo xtask <command>`
//! (the alias lives in `.cargo/config.toml`).
//!
//! - `up [--no-build]`: make sure PostgreSQL answers and the application
//!   database exists, make sure a Kafka-compatible broker runs, build the
//!   binaries, apply migrations with `catalogctl migrate`, then run
//!   `command-api`, `query-api` and `projector` in the foreground with
//!   prefixed logs. Ctrl-C (or SIGTERM) stops all three; if one of them dies
//!   the others are stopped and `up` fails. Sets a dev-only `JWT_SECRET` when
//!   none is given.
//! - `down`: stop the broker that xtask started (it outlives `up` on
//!   purpose, so restarting the services keeps its topics).
//! - `services`: only the PostgreSQL and broker part of `up`; prints
//!   `export` lines, so `eval "$(cargo xtask services)"` prepares a shell.
//! - `test [-- ARGS]`: ensure PostgreSQL and the broker, then run
//!   `cargo nextest run --workspace --no-fail-fast ARGS` (plain `cargo test`
//!   if nextest is missing; `-p CRATE` in ARGS replaces `--workspace`) and
//!   exit with its code. Tests get
//!   `DATABASE_URL` (they create their own databases from it) and
//!   `KAFKA_BROKERS`.
//! - `bench NAME`: ensure services, build the release binaries, run benchmark
//!   NAME and write its section of BENCHMARKS.md: `write` (product creation
//!   over HTTP vs the raw append transaction, `bench_write.rs`) or `pipeline`
//!   (publisher and projector throughput, end-to-end lag, cached reads, each
//!   against a baseline; `bench_pipeline.rs`), `rebuild` (catalogctl rebuild of 1M
//!   events: rate and peak memory; `bench_rebuild.rs`) or `soak` (10 minutes of mixed load:
//!   RSS and latency drift; `bench_soak.rs`). Shared parts: `bench_harness.rs`.
//! - `faults`: the fault suite against release builds (`faults.rs`).
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/catalog`), `KAFKA_BROKERS` (when set,
//! used as is and no broker is started), `JWT_SECRET`, and the services' own
//! `COMMAND_API_ADDR`, `QUERY_API_ADDR`, `PROJECTOR_ADDR`.
//!
//! The broker is tansu (see `broker.rs`), installed into the gitignored
//! `.local/` at the workspace root together with its log and pid file.

mod bench_harness;
mod bench_pipeline;
mod bench_rebuild;
mod bench_soak;
mod bench_write;
mod broker;
mod faults;
mod postgres;
mod proc;
mod supervise;
mod up;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::postgres::DbUrl;
use crate::proc::{step, warn};
use crate::workspace::cargo;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for the catalog workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start PostgreSQL/broker if needed, build, migrate and run all services.
    Up {
        /// Use the binaries already in target/debug instead of building.
        #[arg(long)]
        no_build: bool,
    },
    /// Stop the broker started by xtask.
    Down,
    /// Ensure PostgreSQL, the database and the broker; print `export` lines.
    Services,
    /// Run the workspace tests against PostgreSQL and the broker.
    Test {
        /// Extra arguments for cargo nextest (or cargo test), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark against release builds (`write`, `pipeline`, `rebuild`, `soak`).
    Bench {
        /// Which benchmark to run.
        name: String,
    },
    /// Run the fault suite against release builds: crashes, a database restart, a paused
    /// broker and a long transaction, each followed by the invariant checks.
    Faults {
        /// Only the scenarios whose name contains this (e.g. `broker`).
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Cmd) -> Result<ExitCode> {
    match command {
        Cmd::Up { no_build } => up::run(no_build).map(|()| ExitCode::SUCCESS),
        Cmd::Down => broker::stop().map(|()| ExitCode::SUCCESS),
        Cmd::Services => services(),
        Cmd::Test { args } => test(&args),
        Cmd::Bench { name } => bench(&name),
        Cmd::Faults { only } => faults(only.as_deref()),
    }
}

/// Connection settings for the services and tests, after making sure both
/// backends are there.
pub struct Backends {
    pub database_url: String,
    pub kafka_brokers: String,
}

impl Backends {
    pub fn vars(&self) -> [(&'static str, &str); 2] {
        [
            ("DATABASE_URL", &self.database_url),
            ("KAFKA_BROKERS", &self.kafka_brokers),
        ]
    }
}

/// Ensures PostgreSQL (and, with `create_database`, the database named in
/// DATABASE_URL) and the broker. Tests don't need the named database: they
/// derive their own, throwaway ones from the URL.
pub fn ensure_backends(create_database: bool) -> Result<Backends> {
    let database_url =
        workspace::var("DATABASE_URL").unwrap_or_else(|| postgres::DEFAULT_DATABASE_URL.to_owned());
    let db = DbUrl::parse(&database_url)?;
    step("checking PostgreSQL");
    postgres::ensure_running(&db)?;
    if create_database {
        postgres::ensure_database(&db)?;
    }
    step("checking the Kafka broker");
    let kafka_brokers = broker::ensure()?;
    Ok(Backends {
        database_url,
        kafka_brokers,
    })
}

fn services() -> Result<ExitCode> {
    let backends = ensure_backends(true)?;
    for (name, value) in backends.vars() {
        println!("export {name}='{}'", value.replace('\'', r"'\''"));
    }
    Ok(ExitCode::SUCCESS)
}

fn test(args: &[String]) -> Result<ExitCode> {
    let backends = ensure_backends(false)?;
    let mut cmd = cargo();
    if proc::succeeds(cargo().args(["nextest", "--version"])) {
        cmd.args(["nextest", "run", "--no-fail-fast"]);
    } else {
        warn("cargo-nextest is not installed (cargo install cargo-nextest --locked); using cargo test");
        cmd.args(["test", "--no-fail-fast"]);
    }
    // `--workspace` would override a `-p crate` given by the caller.
    if !selects_packages(args) {
        cmd.arg("--workspace");
    }
    cmd.args(args).envs(backends.vars());
    step(proc::describe(&cmd));
    let status = proc::status(&mut cmd)?;
    Ok(exit_code(proc::exit_code(status)))
}

fn bench(name: &str) -> Result<ExitCode> {
    // The load generator must be optimised too, or a debug-built client would be the bottleneck
    // of whichever side it drives hardest and skew the ratio: re-run this command in release.
    if cfg!(debug_assertions) {
        step("re-running the benchmark harness as a release build");
        let mut cmd = cargo();
        cmd.args(["run", "--quiet", "--release", "--package", "xtask", "--", "bench", name]);
        let status = proc::status(&mut cmd)?;
        return Ok(exit_code(proc::exit_code(status)));
    }
    let backends = ensure_backends(true)?;
    step("building release binaries");
    proc::run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    match name {
        "write" => bench_write::run(&backends).map(|()| ExitCode::SUCCESS),
        "pipeline" => bench_pipeline::run(&backends).map(|()| ExitCode::SUCCESS),
        "rebuild" => bench_rebuild::run(&backends).map(|()| ExitCode::SUCCESS),
        "soak" => bench_soak::run(&backends).map(|()| ExitCode::SUCCESS),
        other => {
            eprintln!("unknown benchmark {other:?}; available: write, pipeline, rebuild, soak");
            Ok(ExitCode::from(2))
        }
    }
}

fn faults(only: Option<&str>) -> Result<ExitCode> {
    if cfg!(debug_assertions) {
        step("re-running the fault suite as a release build");
        let mut cmd = cargo();
        cmd.args(["run", "--quiet", "--release", "--package", "xtask", "--", "faults"]).args(only);
        let status = proc::status(&mut cmd)?;
        return Ok(exit_code(proc::exit_code(status)));
    }
    let backends = ensure_backends(true)?;
    step("building release binaries");
    proc::run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    faults::run(&backends, only)
}

/// Whether the extra test arguments pick packages themselves.
fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| {
        a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && !a.starts_with("--"))
    })
}

/// A child's exit code as ours; codes outside 0..=255 can't be represented
/// and become a plain failure.
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}
