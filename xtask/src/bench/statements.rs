//! Where Postgres spent a load's time, statement by statement, from `pg_stat_statements`
//! (cluster-wide). Only when the module is preloaded (`scripts/pg-statements.sh enable`, which
//! restarts the local cluster); otherwise the benchmarks report without it.

use sqlx::{PgPool, Row};

/// Clears the counters; false when `pg_stat_statements` is not loaded or tracks nothing.
pub async fn reset(pool: &PgPool) -> bool {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(pool).await.is_err() {
        return false;
    }
    let tracking = sqlx::query_scalar::<_, String>("SELECT current_setting('pg_stat_statements.track', true)")
        .fetch_one(pool)
        .await
        .is_ok_and(|track| track == "top" || track == "all");
    tracking && sqlx::query("SELECT pg_stat_statements_reset()").execute(pool).await.is_ok()
}

/// The `limit` statements with the most execution time since `reset`, as a Markdown table with
/// calls and milliseconds per `units` (commands, say). Statements run by triggers and functions
/// are listed as "nested" (their time is also their caller's); the share is of top-level time.
pub async fn report(pool: &PgPool, units: usize, limit: i64) -> Option<String> {
    let rows = sqlx::query(
        "SELECT toplevel, calls, total_exec_time,
                100 * total_exec_time / nullif(sum(total_exec_time) FILTER (WHERE toplevel) OVER (), 0) AS share,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS statement
           FROM pg_stat_statements
          ORDER BY total_exec_time DESC
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .ok()?;
    let units = units.max(1) as f64;
    let mut table = String::from(
        "| % of top-level time | level | calls per command | ms per command | mean ms | statement |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let calls: i64 = row.get("calls");
        let total: f64 = row.get("total_exec_time");
        let share: Option<f64> = row.get("share");
        let statement: String = row.get("statement");
        table.push_str(&format!(
            "| {:.1} | {} | {:.2} | {:.4} | {:.3} | `{}` |\n",
            share.unwrap_or(0.0),
            if row.get::<bool, _>("toplevel") { "top" } else { "nested" },
            calls as f64 / units,
            total / units,
            total / calls.max(1) as f64,
            statement.replace('|', "\\|").replace('`', "'"),
        ));
    }
    Some(table)
}
