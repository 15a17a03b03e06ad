#!/usr/bin/env bash
# Sizes the local PostgreSQL cluster for a catalog of a million products, as an operator would
# size a production server, instead of the distribution's defaults (128 MB of shared buffers,
# checkpoints every 1 GB of WAL), which are meant for a small machine shared with other work.
#
#   scripts/pg-tune.sh apply     set the values below with ALTER SYSTEM, restart the cluster once
#   scripts/pg-tune.sh show      the values in force
#   scripts/pg-tune.sh reset     back to the server's defaults (restarts the cluster once)
#
# The values (sized from this machine's memory, MEM):
# - shared_buffers = MEM/4 (at most 8 GB): the products table and its indexes (1.9 GB at a
#   million products) stay in Postgres' own cache. With 128 MB, every search reads each
#   matching row's page from the OS cache, and every projector insert reads and evicts index
#   pages of ten indexes.
# - effective_cache_size = MEM/2: what the planner may assume the OS caches besides.
# - max_wal_size = 4 GB: a bulk import (100,000 products write about 2 GB of WAL with their
#   indexes) does not force a checkpoint, and the full-page writes after it, every few seconds.
#
# A developer-machine aid for `cargo xtask bench catalog`, like pg-statements.sh: it restarts
# the cluster (pg_ctlcluster), so never run it against a shared server. A production server is
# sized by its operator; README "Operations" gives these values as the starting point.
set -euo pipefail

POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SETTINGS=(shared_buffers effective_cache_size max_wal_size)

psql_() { psql "$POSTGRES_URL" -X -v ON_ERROR_STOP=1 -q "$@"; }

restart() {
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  echo "restarting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  for _ in $(seq 1 50); do
    psql_ -Atc "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "PostgreSQL did not come back" >&2
  return 1
}

show() {
  for setting in "${SETTINGS[@]}"; do
    echo "$setting = $(psql_ -Atc "SHOW $setting")"
  done
}

case ${1:-} in
  apply)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    shared_mb=$((mem_mb / 4))
    ((shared_mb > 8192)) && shared_mb=8192
    psql_ -c "ALTER SYSTEM SET shared_buffers = '${shared_mb}MB'" \
          -c "ALTER SYSTEM SET effective_cache_size = '$((mem_mb / 2))MB'" \
          -c "ALTER SYSTEM SET max_wal_size = '4GB'"
    restart
    show
    ;;
  show) show ;;
  reset)
    for setting in "${SETTINGS[@]}"; do
      psql_ -c "ALTER SYSTEM RESET $setting"
    done
    restart
    show
    ;;
  *)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
