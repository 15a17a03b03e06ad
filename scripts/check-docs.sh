#!/usr/bin/env bash
# Checks that each API's /docs page (Swagger UI, shipped inside the binary) renders every
# operation of its /openapi.json in a real browser: headless Chromium loads the page with no
# network but the loopback, and the rendered DOM must show each operation's path and summary.
#
# Usage: scripts/check-docs.sh   (after `cargo build --workspace --bins`; exits non-zero on failure)
# Installs Debian's `chromium` if it is missing. Screenshots and dumped DOMs are kept in the
# log directory it prints.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/apis.sh
source scripts/lib/apis.sh

started=$SECONDS
trap 'rc=$?; stop_apis; log "finished in $((SECONDS - started))s (exit $rc)"; exit $rc' EXIT

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v chromium >/dev/null; then
  log "installing chromium"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium </dev/null >/dev/null
fi

start_apis check-docs

browse() { # browse URL OUTPUT-PREFIX
  local profile
  profile=$(mktemp -d)
  # --virtual-time-budget lets the page's scripts run (fetch /openapi.json, render) before the dump.
  local flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
    --disable-component-update --no-first-run --user-data-dir="$profile" --virtual-time-budget=10000)
  timeout 120 chromium "${flags[@]}" --dump-dom "$1" >"$2.html" 2>"$2.chromium.log"
  timeout 120 chromium "${flags[@]}" --window-size=1280,1600 --screenshot="$2.png" "$1" >/dev/null 2>&1 || true
  rm -rf "$profile"
}

failures=0
for api in command-api query-api; do
  base=$COMMAND_API_URL
  [[ $api == query-api ]] && base=$QUERY_API_URL
  out="$APIS_LOG_DIR/docs-$api"
  curl -fsS "$base/openapi.json" >"$out.openapi.json"
  browse "$base/docs/" "$out"
  # Every operation of the document must be on the page: its path (data-path) and summary.
  if python3 - "$out.openapi.json" "$out.html" "$api" <<'PY'
import html, json, re, sys

spec_file, dom_file, api = sys.argv[1:]
spec = json.load(open(spec_file))
dom = open(dom_file, encoding="utf-8").read()
rendered_paths = [html.unescape(p) for p in re.findall(r'class="opblock-summary-path" data-path="([^"]*)"', dom)]
rendered_summaries = [html.unescape(s).strip() for s in re.findall(r'class="opblock-summary-description">([^<]*)<', dom)]
expected = [(path, method, op.get("summary", "")) for path, item in spec["paths"].items() for method, op in item.items()]
problems = []
if spec["info"]["title"] not in dom:
    problems.append(f"title {spec['info']['title']!r} not rendered")
for path, method, summary in expected:
    if path not in rendered_paths:
        problems.append(f"{method.upper()} {path}: path not rendered")
    if summary and summary not in rendered_summaries:
        problems.append(f"{method.upper()} {path}: summary {summary!r} not rendered")
if len(rendered_paths) != len(expected):
    problems.append(f"{len(rendered_paths)} operations rendered, the document has {len(expected)}")
if problems:
    print(f"{api} /docs:", *problems, sep="\n  ")
    sys.exit(1)
print(f"{api} /docs renders all {len(expected)} operations: " + ", ".join(f"{m.upper()} {p}" for p, m, _ in expected))
PY
  then :; else
    failures=$((failures + 1))
    log "$api: see $out.html and $out.png"
  fi
done

if [[ $failures -gt 0 ]]; then
  log "FAILED: $failures docs page(s) did not render their operations"
  exit 1
fi
log "ok: both /docs pages render every operation"
