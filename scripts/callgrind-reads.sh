#!/usr/bin/env bash
# Instructions per request of a cached product read and of `/health` in the release query-api,
# counted by callgrind around the requests only.
#
#   scripts/callgrind-reads.sh [OUTDIR]    (default: target/callgrind-reads)
#
# Builds nothing: run `cargo build --release -p query-api -p catalogctl` first ($QUERY_API names
# another query-api binary, say a copy from before a change). Recreates the
# database $DB (default catalog_callgrind) on the local server, migrates it, writes one
# published product into the read model and starts query-api under
# `valgrind --tool=callgrind --instr-atstart=no` on $PORT (default 18181). Then, per route, N
# (default 500) sequential GETs on one keep-alive connection after 50 unmeasured ones (the
# first fills the cache), with instrumentation switched on just around them, one dump each.
# Prints instructions per request; `callgrind_annotate --inclusive=yes OUTDIR/callgrind.out.*.1`
# (product) and `.2` (health) show where they go. Counts, not times: a busy machine does not
# change them much (idle worker wake-ups do, by a few hundred per request).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=$(realpath -m "${1:-$target/callgrind-reads}")
n=${N:-500}
db=${DB:-catalog_callgrind}
port=${PORT:-18181}
server=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
url=$server/$db
id=0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18

mkdir -p "$out"
rm -f "$out"/callgrind.out.*
psql "$server/postgres" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
"$target/release/catalogctl" --database-url "$url" migrate >/dev/null
psql "$url" -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO products
  (id, name, description, price, created_at, updated_at, version, currency, sku, status, category_ids, attributes, images, on_hand)
  VALUES ('$id', 'Desk lamp', 'A lamp for a desk', 19.99, now(), now(), 3, 'EUR', 'LAMP-1', 'published', '{}',
          '{\"brand\": \"Lumen\"}', '[]', 5)"

RUST_LOG=warn CATALOG_ENV=development DATABASE_URL=$url QUERY_API_ADDR=127.0.0.1:$port \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out.%p" \
  "${QUERY_API:-$target/release/query-api}" >/dev/null 2>"$out/valgrind.log" &
valgrind=$!
trap 'kill $valgrind 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done

measure() { # LABEL PATH
  python3 - "$port" "$2" "$n" "$valgrind" "$1" <<'EOF'
import http.client, subprocess, sys
port, path, n, pid, label = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def get():
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
for _ in range(50):
    get()
def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
control("-z")
control("-i", "on")
for _ in range(n):
    get()
control("-i", "off")
control("-d", label)
EOF
}
measure product "/api/v1/products/$id"
measure health /health
kill -TERM $valgrind
wait $valgrind || true
trap - EXIT

for dump in "$out"/callgrind.out.*.[0-9]*; do
  label=$(sed -n 's/^desc: Trigger: dump //p' "$dump")
  total=$(sed -n 's/^totals: //p' "$dump")
  echo "$label: $((total / n)) instructions per request ($total for $n)"
done
