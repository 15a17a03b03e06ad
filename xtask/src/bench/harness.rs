//! What every benchmark's report needs: percentiles, the number of cores the figures were
//! measured on, and the benchmark's own section of BENCHMARKS.md.

use anyhow::Result;

use crate::proc::step;
use crate::workspace::root;

/// The `q` quantile (0..=1) of ascending `sorted` values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Replaces (or appends) the `## {name}` section of BENCHMARKS.md with `section`, which
/// starts with that heading. Other sections are kept as they are.
pub fn write_section(name: &str, section: &str) -> Result<()> {
    let heading = format!("## {name}");
    let path = root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let mut kept = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if line.starts_with("## ") {
            skipping = line == heading;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let updated = format!("{}\n\n{section}", kept.trim_end());
    std::fs::write(&path, updated)?;
    step(format!("results written to {}", path.display()));
    Ok(())
}

/// The cores this machine offers: every report states them, since the services, Postgres,
/// the broker and the load generator all share them.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
