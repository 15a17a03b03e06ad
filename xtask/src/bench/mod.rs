//! `cargo xtask bench NAME`: the benchmarks, one module each, against release builds of the
//! services started through `system.rs`. Each prints its tables and replaces its own section
//! of BENCHMARKS.md (`harness.rs`); each compares the system with a baseline measured in the
//! same run on the same machine, because absolute figures from a shared 2-core box say little.

mod catalog;
mod harness;
mod pipeline;
mod rebuild;
mod reservations;
mod soak;
mod statements;
mod write;

use anyhow::Result;
use clap::ValueEnum;

use crate::dev::Backends;

/// The benchmarks, as `cargo xtask bench --help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    /// Product creates and updates over HTTP with the whole pipeline running, CPU ms per command per
    /// process, vs the raw append transaction.
    Write,
    /// Publisher and projector throughput, end-to-end lag and cached reads, each against a baseline.
    Pipeline,
    /// `catalogctl rebuild` of 1M events: rate and peak memory.
    Rebuild,
    /// 10 minutes (SOAK_SECONDS) of mixed load: RSS and latency drift.
    Soak,
    /// Listing, search and facets over 1M products (CATALOG_PRODUCTS), and the bulk import.
    Catalog,
    /// Stock reservations: held per second at 16 clients, 202 → held latency at 50/s.
    Reservations,
}

/// Runs benchmark `bench`; the release binaries must have been built.
pub fn run(bench: Bench, backends: &Backends) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match bench {
            Bench::Write => write::run(backends).await,
            Bench::Pipeline => pipeline::run(backends).await,
            Bench::Rebuild => rebuild::run(backends).await,
            Bench::Soak => soak::run(backends).await,
            Bench::Catalog => catalog::run(backends).await,
            Bench::Reservations => reservations::run(backends).await,
        }
    })
}
