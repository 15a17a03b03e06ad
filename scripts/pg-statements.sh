#!/usr/bin/env bash
# Where Postgres spends its time, statement by statement, with pg_stat_statements.
#
#   scripts/pg-statements.sh enable            preload the module (restarts the local cluster once)
#   scripts/pg-statements.sh reset             forget what was counted so far
#   scripts/pg-statements.sh report [N] [PER]  the N (default 15) statements with the most execution
#                                              time, every database; with PER (a count of commands,
#                                              say), calls and milliseconds are also shown per unit
#
# A profiling aid for a developer machine: `enable` changes `shared_preload_libraries` with
# ALTER SYSTEM and restarts the cluster (pg_ctlcluster), so run it before starting the system,
# never against a shared server. The counters are cluster-wide and kept in shared memory.
set -euo pipefail

POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

psql_() { psql "$POSTGRES_URL" -X -v ON_ERROR_STOP=1 -q "$@"; }

enable() {
  local preload
  preload=$(psql_ -Atc "SHOW shared_preload_libraries")
  if [[ ",${preload// /}," != *",pg_stat_statements,"* ]]; then
    psql_ -c "ALTER SYSTEM SET shared_preload_libraries = '${preload:+$preload,}pg_stat_statements'"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    echo "restarting PostgreSQL $version to load pg_stat_statements"
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart
    for _ in $(seq 1 50); do
      psql_ -Atc "SELECT 1" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  # Statements run by triggers and functions too (the catalog rules, the read models'
  # notifications), shown beside the statement that fired them ("nested").
  if [[ $(psql_ -Atc "SHOW pg_stat_statements.track") != all ]]; then
    psql_ -c "ALTER SYSTEM SET pg_stat_statements.track = 'all'"
    psql_ -Atc "SELECT pg_reload_conf()" >/dev/null
  fi
  psql_ -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
  echo "pg_stat_statements is loaded"
}

reset() { psql_ -Atc "SELECT pg_stat_statements_reset()" >/dev/null; }

report() {
  local limit=${1:-15} per=${2:-1}
  psql_ -P pager=off <<SQL
-- The share is of top-level time: a nested statement's time is also its caller's.
SELECT round((100 * total_exec_time / sum(total_exec_time) FILTER (WHERE toplevel) OVER ())::numeric, 1) AS "% time",
       CASE WHEN toplevel THEN 'top' ELSE 'nested' END AS level,
       round(total_exec_time::numeric, 0) AS "total ms",
       calls,
       round((calls::numeric / $per), 2) AS "calls per unit",
       round((total_exec_time / $per)::numeric, 4) AS "ms per unit",
       round(mean_exec_time::numeric, 3) AS "mean ms",
       rows,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
  FROM pg_stat_statements
 ORDER BY total_exec_time DESC
 LIMIT $limit;
SQL
}

case ${1:-} in
  enable) enable ;;
  reset) reset ;;
  report) shift; report "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
