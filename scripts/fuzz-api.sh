#!/usr/bin/env bash
# Property-based API fuzzing of both APIs with schemathesis (PyPI, pinned): every operation of
# each /openapi.json gets generated valid and invalid requests, and every response must be
# - no server error (5xx; the documented 503s of read-your-writes waits aside, see below),
# - a status code the document lists for that operation,
# - a body that matches the documented schema, with the documented content type,
# - with the documented response headers.
#
# Usage: scripts/fuzz-api.sh   (after `cargo build --workspace --bins`; exits non-zero on failure)
# Settings: FUZZ_MAX_EXAMPLES (default 100 per operation and phase), FUZZ_SEED (default fixed, so CI runs
# are repeatable; set it to explore), FUZZ_WORKERS (default 2), FUZZ_CHECKS (schemathesis
# check names, comma-separated; default: see `checks` below).
#
# The APIs run from target/debug on a fresh database, as an admin created with catalogctl (its
# token goes in every request). command-api goes first; what it wrote is then folded into the
# read model with `catalogctl rebuild all` (nothing projects continuously here), and query-api
# goes second. Most generated ids name nothing, so 404s are common; they are documented.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
# shellcheck source=scripts/lib/apis.sh
source scripts/lib/apis.sh

started=$SECONDS
trap 'rc=$?; stop_apis; log "finished in $((SECONDS - started))s (exit $rc)"; exit $rc' EXIT

VENV=.local/schemathesis-$SCHEMATHESIS_VERSION
if [[ ! -x $VENV/bin/st ]] || [[ $("$VENV/bin/st" --version 2>/dev/null) != *"$SCHEMATHESIS_VERSION"* ]]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# A short read-your-writes wait: `?min_version=` on a product the read model does not hold
# waits this long, then answers its documented 503.
start_apis fuzz-api MIN_VERSION_WAIT_MS=200

admin_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
echo "$admin_password" | DATABASE_URL=$APIS_DATABASE_URL "$BIN_DIR/catalogctl" user create \
  --username fuzz-admin --email fuzz-admin@example.com --role admin --password-stdin >/dev/null
token=$(curl -fsS "$COMMAND_API_URL/api/v1/auth/token" -H 'content-type: application/json' \
  -d "{\"username\":\"fuzz-admin\",\"password\":\"$admin_password\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

# What command-api's run wrote (products, users) reaches query-api's read model by a rebuild
# from the event store (no Kafka, no projector needed), so query-api is fuzzed with data too.
fill_read_model() {
  DATABASE_URL=$APIS_DATABASE_URL "$BIN_DIR/catalogctl" rebuild all >"$APIS_LOG_DIR/rebuild.log" 2>&1 || {
    cat "$APIS_LOG_DIR/rebuild.log" >&2
    return 1
  }
  log "read model rebuilt: $(curl -fsS "$QUERY_API_URL/api/v1/products?limit=1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])') products"
}

# The five conformance checks above, and: protected operations refuse requests without the
# token (ignored_auth), a deleted product stays gone (use_after_free), undocumented methods are
# 405 (unsupported_method), a missing required header is a 4xx (missing_required_header).
# Not included: positive_data_acceptance and negative_data_rejection, whose verdicts here are
# the API's documented rules (an If-Match mismatch is 412 whatever the body; a reused
# Idempotency-Key with another body is 422; a price of 0 passes the schema, not the domain).
# NDJSON bodies (command-api's product import) need a serializer schemathesis does not ship.
export SCHEMATHESIS_HOOKS=$repo/scripts/fuzz-api/hooks.py

checks=${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance,ignored_auth,use_after_free,ensure_resource_availability,unsupported_method,missing_required_header}
failures=0
for api in command-api query-api; do
  base=$COMMAND_API_URL
  if [[ $api == query-api ]]; then
    base=$QUERY_API_URL
    fill_read_model
  fi
  log "fuzzing $api"
  phase_start=$SECONDS
  # Run from the log directory: schemathesis keeps a cache (.schemathesis/) in its working
  # directory, which would carry state from one run to the next and litter the work tree.
  if (cd "$APIS_LOG_DIR" && "$repo/$VENV/bin/st" --no-color --config-file "$repo/scripts/fuzz-api/schemathesis.toml" run "$base/openapi.json" \
    --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks "$checks" \
    --max-examples "${FUZZ_MAX_EXAMPLES:-100}" \
    --seed "${FUZZ_SEED:-20261125}" \
    --workers "${FUZZ_WORKERS:-2}" \
    --request-timeout 15 \
    --report junit,har --report-dir "$APIS_LOG_DIR/report-$api" \
    --warnings off); then
    log "$api: no failures in $((SECONDS - phase_start))s"
  else
    failures=$((failures + 1))
    log "$api: FAILED after $((SECONDS - phase_start))s (server log: $APIS_LOG_DIR/$api.log)"
  fi
done

if [[ $failures -gt 0 ]]; then
  log "FAILED: schemathesis found problems in $failures API(s)"
  exit 1
fi
log "ok: both APIs conform to their documents"
