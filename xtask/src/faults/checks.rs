//! The invariants every fault scenario ends with, once the fault is over and the load has
//! stopped: the load saw no broken rule, every process still runs and is ready again, every
//! acknowledged write is stored, and the read models equal the fold of the event store.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Result};

use super::load::Tally;
use super::{eventually, Rig};
use crate::system::catalogctl;

impl Tally {
    fn ensure_clean(&self) -> Result<()> {
        ensure!(self.violations.is_empty(), "rule violations: {:?}", &self.violations[..self.violations.len().min(5)]);
        ensure!(!self.acknowledged.is_empty(), "no write was acknowledged at all");
        Ok(())
    }
}

impl Rig {
    /// Checks every invariant after a fault; processes get `within` to be ready again. A
    /// summary for the PASS line.
    pub(super) async fn check_after_fault(&mut self, tally: &Tally, within: Duration) -> Result<String> {
        tally.ensure_clean()?;
        self.all_ready(within).await?;
        self.check_store(&tally.acknowledged, &tally.acknowledged_changes).await
    }

    /// Every process still runs (none died or needed a restart) and answers `/ready` with 200
    /// within `within`.
    async fn all_ready(&mut self, within: Duration) -> Result<()> {
        self.system.ensure_running()?;
        for part in &self.running {
            let url = format!("http://{}/ready", part.addr());
            eventually(&format!("{} ready", part.name()), within, || async {
                reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
            })
            .await?;
        }
        Ok(())
    }

    /// Every acknowledged product is in the event store, every acknowledged change reached
    /// its version there, and `catalogctl verify` finds the read models equal to its fold.
    async fn check_store(&self, acknowledged: &[String], changes: &[(String, i64)]) -> Result<String> {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Product' AND aggregate_id = ANY($1)",
        )
        .bind(acknowledged)
        .fetch_one(&self.pool)
        .await?;
        ensure!(
            stored as usize == acknowledged.len(),
            "{} acknowledged products, {stored} in the event store",
            acknowledged.len()
        );
        let (ids, versions): (Vec<String>, Vec<i64>) = changes.iter().cloned().unzip();
        let lost: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT a.id, a.version, max(e.sequence)
               FROM unnest($1::text[], $2::bigint[]) AS a (id, version)
               LEFT JOIN events e ON e.aggregate_id = a.id
              GROUP BY a.id, a.version
             HAVING coalesce(max(e.sequence), 0) < a.version",
        )
        .bind(&ids)
        .bind(&versions)
        .fetch_all(&self.pool)
        .await?;
        ensure!(
            lost.is_empty(),
            "{} acknowledged changes are not in the event store, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        );
        let verify = catalogctl(&self.system.url)
            .args(["verify", "--settle-seconds", "60"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .output()?;
        ensure!(
            verify.status.success(),
            "catalogctl verify found differences: {}",
            String::from_utf8_lossy(&verify.stdout).lines().take(3).collect::<Vec<_>>().join(" | ")
        );
        Ok(format!(
            "{} acknowledged creates and {} changes all stored, read models verified",
            acknowledged.len(),
            changes.len()
        ))
    }
}
