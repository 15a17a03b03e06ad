//! Developer tasks for the catalog workspace, run as `cargo xtask <command>`
//! (the alias lives in `.cargo/config.toml`).
//!
//! - `up [--no-build]`: make sure PostgreSQL answers and the application
//!   database exists, make sure a Kafka-compatible broker runs, build the
//!   binaries, apply migrations with `catalogctl migrate`, then run
//!   `command-api`, `query-api` and `projector` in the foreground with
//!   prefixed logs. Ctrl-C (or SIGTERM) stops all three; if one of them dies
//!   the others are stopped and `up` fails. Sets `CATALOG_ENV=development`
//!   (public dev-only token key) when no `CATALOG_ENV` is given.
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
//!   NAME and write its section of BENCHMARKS.md: `write`, `pipeline`,
//!   `rebuild`, `soak`, `catalog` or `reservations` (see `bench/`, one file or folder per benchmark).
//! - `faults [NAME]`: the fault suite against release builds (see `faults/`).
//!
//! Where things are: `dev/` (up, down, services, test: PostgreSQL, the broker
//! and the one process supervisor), `bench/`, `faults/`, and `system.rs`, which
//! both of the latter use to run the release services on a fresh database.
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/catalog`), `KAFKA_BROKERS` (when set,
//! used as is and no broker is started), `CATALOG_ENV` (and the token keys it lets you
//! leave out), `SOAK_SECONDS` (bench
//! soak), and the services' own `COMMAND_API_ADDR`, `QUERY_API_ADDR`,
//! `PROJECTOR_ADDR`.
//!
//! The broker is tansu (see `dev/broker.rs`), installed into the gitignored
//! `.local/` at the workspace root together with its log and pid file.

mod bench;
mod dev;
mod faults;
mod proc;
mod system;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::bench::Bench;
use crate::proc::step;
use crate::workspace::cargo;

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer tasks for the catalog workspace")]
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
    /// Run a benchmark against release builds and write its section of BENCHMARKS.md.
    Bench {
        /// Which benchmark to run.
        name: Bench,
    },
    /// Run the fault suite against release builds: crashes, a database restart, a paused
    /// broker, a long transaction and a scaled-out system, each followed by the invariant
    /// checks. Under CI=true a scenario that cannot run fails instead of being skipped.
    Faults {
        /// Only the scenarios whose name contains this (e.g. `broker`, `scale-out`); the names
        /// are printed by `--list`.
        only: Option<String>,
        /// Print the scenarios' names and exit.
        #[arg(long)]
        list: bool,
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
        Cmd::Up { no_build } => dev::up::run(no_build).map(|()| ExitCode::SUCCESS),
        Cmd::Down => dev::broker::stop().map(|()| ExitCode::SUCCESS),
        Cmd::Services => dev::services(),
        Cmd::Test { args } => dev::test(&args),
        Cmd::Bench { name } => {
            let arg = name.to_possible_value().expect("no benchmark is skipped");
            if let Some(code) = rerun_in_release("the benchmark harness", &["bench", arg.get_name()])? {
                return Ok(code);
            }
            bench::run(name, &release_backends(&[])?).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Faults { list: true, .. } => {
            faults::list();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Faults { only, list: false } => {
            let args: Vec<&str> = std::iter::once("faults").chain(only.as_deref()).collect();
            if let Some(code) = rerun_in_release("the fault suite", &args)? {
                return Ok(code);
            }
            // The projector's test-only fail-points, which the targeted kills stop it at.
            faults::run(&release_backends(&["projector/fault-injection"])?, only.as_deref())
        }
    }
}

/// In a debug build, runs this same command again as a release build and returns its exit
/// code; None in a release build. The load generators and fault injectors must be optimised
/// too, or a debug-built client would be the bottleneck of whichever side it drives hardest.
fn rerun_in_release(what: &str, args: &[&str]) -> Result<Option<ExitCode>> {
    if !cfg!(debug_assertions) {
        return Ok(None);
    }
    step(format!("re-running {what} as a release build"));
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release", "--package", "xtask", "--"]).args(args);
    proc::run_for_exit_code(&mut cmd).map(Some)
}

/// The backends, and the release binaries of the workspace freshly built (with `features`):
/// what benchmarks and the fault suite run against.
fn release_backends(features: &[&str]) -> Result<dev::Backends> {
    let backends = dev::ensure_backends(true)?;
    step("building release binaries");
    let mut build = cargo();
    build.args(["build", "--release", "--workspace", "--bins"]);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    proc::run(&mut build)?;
    Ok(backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_benchmark_is_a_value_of_bench() {
        let names: Vec<String> = Bench::value_variants()
            .iter()
            .filter_map(|b| b.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["write", "pipeline", "rebuild", "soak", "catalog", "reservations"]);
        let cli = Cli::try_parse_from(["cargo xtask", "bench", "pipeline"]).unwrap();
        assert!(matches!(cli.command, Cmd::Bench { name: Bench::Pipeline }));
        assert!(Cli::try_parse_from(["cargo xtask", "bench", "nonsense"]).is_err());
    }
}
