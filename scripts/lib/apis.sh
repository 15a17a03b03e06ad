# Sourced by scripts/check-docs.sh and scripts/fuzz-api.sh: starts command-api and query-api
# from target/debug against a fresh, migrated database on free loopback ports, and stops them
# (and drops the database) when the calling script exits.
#
# Needs: target/debug/{command-api,query-api,catalogctl} (`cargo build --workspace --bins`),
# psql, python3, curl, openssl, and a Postgres superuser at $POSTGRES_URL (default: the local one).
#
# After `start_apis`: COMMAND_API_URL, QUERY_API_URL, APIS_DATABASE_URL, APIS_LOG_DIR.

POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
BIN_DIR=${BIN_DIR:-target/debug}

_apis_pids=()
_apis_database=""

log() { echo "==> $(basename "$0"): $*"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_healthy() {
  local name=$1 url=$2 pid=$3
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$url/health" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; its log:"
      cat "$APIS_LOG_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.2
  done
  log "$name did not answer $url/health within 30 s; its log:"
  cat "$APIS_LOG_DIR/$name.log" >&2
  return 1
}

stop_apis() {
  local pid
  for pid in "${_apis_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${_apis_pids[@]}"; do
    # Graceful shutdown takes well under a second; do not wait forever.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  _apis_pids=()
  if [[ -n $_apis_database ]]; then
    psql "$POSTGRES_URL/postgres" -qX -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS \"$_apis_database\" WITH (FORCE)" >/dev/null 2>&1 || true
    _apis_database=""
  fi
}

# start_apis NAME [extra env assignments for both services...]
start_apis() {
  local name=$1
  shift
  local bin
  for bin in command-api query-api catalogctl; do
    if [[ ! -x $BIN_DIR/$bin ]]; then
      log "missing $BIN_DIR/$bin: run \`cargo build --workspace --bins\` first"
      return 1
    fi
  done
  APIS_LOG_DIR=$(mktemp -d "/tmp/catalog-$name.XXXXXX")
  _apis_database="catalog_${name//-/_}_$$"
  APIS_DATABASE_URL="$POSTGRES_URL/$_apis_database"
  log "database $_apis_database, logs in $APIS_LOG_DIR"
  psql "$POSTGRES_URL/postgres" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$_apis_database\"" >/dev/null
  "$BIN_DIR/catalogctl" --database-url "$APIS_DATABASE_URL" migrate >"$APIS_LOG_DIR/migrate.log" 2>&1 || {
    cat "$APIS_LOG_DIR/migrate.log" >&2
    return 1
  }

  local command_port query_port signing_key public_key
  command_port=$(free_port)
  query_port=$(free_port)
  # A fresh Ed25519 token key: command-api signs with it, query-api gets only its public half.
  # CATALOG_ENV=development as before (plain http image URLs), yet no public development key.
  signing_key=$(openssl genpkey -algorithm ed25519)
  public_key=$(openssl pkey -pubout <<<"$signing_key")
  COMMAND_API_URL="http://127.0.0.1:$command_port"
  QUERY_API_URL="http://127.0.0.1:$query_port"

  env DATABASE_URL="$APIS_DATABASE_URL" CATALOG_ENV=development TOKEN_SIGNING_KEY="$signing_key" \
    RUST_LOG="${RUST_LOG:-warn}" LOG_FORMAT=pretty "$@" \
    COMMAND_API_ADDR="127.0.0.1:$command_port" "$BIN_DIR/command-api" >"$APIS_LOG_DIR/command-api.log" 2>&1 </dev/null &
  _apis_pids+=($!)
  wait_healthy command-api "$COMMAND_API_URL" "$!" || return 1
  env DATABASE_URL="$APIS_DATABASE_URL" CATALOG_ENV=development TOKEN_VERIFY_KEYS="$public_key" \
    RUST_LOG="${RUST_LOG:-warn}" LOG_FORMAT=pretty "$@" \
    QUERY_API_ADDR="127.0.0.1:$query_port" "$BIN_DIR/query-api" >"$APIS_LOG_DIR/query-api.log" 2>&1 </dev/null &
  _apis_pids+=($!)
  wait_healthy query-api "$QUERY_API_URL" "$!" || return 1
  log "command-api at $COMMAND_API_URL, query-api at $QUERY_API_URL"
}
