//! The development environment: the backends every command needs (PostgreSQL and a Kafka
//! broker), `cargo xtask up|down|services|test`, and the supervisor that runs and stops
//! service processes for `up`, the benchmarks and the fault suite alike.

pub mod broker;
pub mod postgres;
pub mod supervise;
pub mod up;

use std::process::ExitCode;

use anyhow::Result;

use crate::proc::{self, step, warn};
use crate::workspace::{self, cargo};
use postgres::DbUrl;

/// Connection settings for the services and tests, after making sure both
/// backends are there.
pub struct Backends {
    pub database_url: String,
    pub kafka_brokers: String,
}

impl Backends {
    pub fn vars(&self) -> [(&'static str, &str); 2] {
        [("DATABASE_URL", &self.database_url), ("KAFKA_BROKERS", &self.kafka_brokers)]
    }
}

/// Ensures PostgreSQL (and, with `create_database`, the database named in
/// DATABASE_URL) and the broker. Tests don't need the named database: they
/// derive their own, throwaway ones from the URL.
pub fn ensure_backends(create_database: bool) -> Result<Backends> {
    let database_url = workspace::var("DATABASE_URL").unwrap_or_else(|| postgres::DEFAULT_DATABASE_URL.to_owned());
    let db = DbUrl::parse(&database_url)?;
    step("checking PostgreSQL");
    postgres::ensure_running(&db)?;
    if create_database {
        postgres::ensure_database(&db)?;
    }
    step("checking the Kafka broker");
    let kafka_brokers = broker::ensure()?;
    Ok(Backends { database_url, kafka_brokers })
}

/// `cargo xtask services`.
pub fn services() -> Result<ExitCode> {
    let backends = ensure_backends(true)?;
    for (name, value) in backends.vars() {
        println!("export {name}='{}'", value.replace('\'', r"'\''"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask test [-- ARGS]`.
pub fn test(args: &[String]) -> Result<ExitCode> {
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
    proc::run_for_exit_code(&mut cmd)
}

/// Whether the extra test arguments pick packages themselves.
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && !a.starts_with("--")))
}
