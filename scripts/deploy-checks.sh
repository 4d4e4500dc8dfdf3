#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster:
#   - docker-compose config (Debian's docker-compose) on docker-compose.yml,
#     with and without the gpu profile, alone and with the override
#     deploy/compose.kafka-tls.yml;
#   - promtool check config, check rules and test rules (Debian's prometheus);
#   - the dashboard JSON parses;
#   - the Kubernetes manifests against the API schemas (kubernetes-validate
#     from PyPI, strict: unknown fields fail), for the oldest and newest
#     Kubernetes versions it knows of our support window; and, where kubectl
#     is installed, each kustomization under deploy/k8s rendered by
#     `kubectl kustomize` (the overlays' patches applied) against them too;
#   - the demo scripts parse (sh -n);
#   - then `cargo test --test deploy` (structure, metric names against a live
#     /metrics scrape, config files through `forewarn config check`).
#
# Installs what is missing (apt: docker-compose, prometheus, python3-yaml;
# pip: kubernetes-validate into .tools/deploy-py), idempotently: a second run
# installs nothing.
#
# Usage: scripts/deploy-checks.sh [--no-install] [--no-tests]
#        scripts/deploy-checks.sh --sync-prometheusrule
#   --no-install  skip (and report) checks whose tool is missing instead of
#                 installing it; tests/deploy.rs runs the script this way.
#   --no-tests    do not run `cargo test --test deploy` at the end.
#   --sync-prometheusrule  rewrite deploy/k8s/base/prometheusrule.yaml from
#                 deploy/prometheus/rules/forewarn.rules.yml (the source).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

install=1
tests=1
sync=0
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --no-tests) tests=0 ;;
    --sync-prometheusrule) sync=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ "$sync" = 1 ]; then
  python3 - deploy/prometheus/rules/forewarn.rules.yml deploy/k8s/base/prometheusrule.yaml <<'PY'
import sys, yaml
class Dumper(yaml.SafeDumper):
    pass
Dumper.add_representer(str, lambda d, v: d.represent_scalar(
    "tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))
rules = yaml.safe_load(open(sys.argv[1]))
doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
       "metadata": {"name": "forewarn", "labels": {"app.kubernetes.io/name": "forewarn"}},
       "spec": {"groups": rules["groups"]}}
with open(sys.argv[2], "w") as f:
    f.write("# Prometheus Operator copy of deploy/prometheus/rules/forewarn.rules.yml (the\n"
            "# source; tests/deploy.rs checks that the two agree). Regenerate with\n"
            "# scripts/deploy-checks.sh --sync-prometheusrule. Your Prometheus may\n"
            "# select PrometheusRules by label: add that label here.\n")
    yaml.dump(doc, f, Dumper=Dumper, sort_keys=False, width=100)
PY
  echo "wrote deploy/k8s/base/prometheusrule.yaml" >&2
  exit 0
fi

KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests must be valid for.
K8S_VERSIONS=(1.30.0 1.37.0)
pydeps=.tools/deploy-py

log() { printf '\033[1;34m[deploy-checks]\033[0m %s\n' "$*" >&2; }
failures=()
skipped=()
check() { # check NAME COMMAND...
  local name=$1; shift
  log "$name"
  if "$@"; then :; else failures+=("$name"); log "FAILED: $name"; fi
}

# --- tools -----------------------------------------------------------------
have_py_yaml() { python3 -c 'import yaml' 2>/dev/null; }
have_kv() { [ -f "$pydeps/.stamp-$KUBERNETES_VALIDATE_VERSION" ]; }

if [ "$install" = 1 ]; then
  need=()
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v promtool >/dev/null || need+=(prometheus)
  have_py_yaml || need+=(python3-yaml)
  command -v python3 >/dev/null || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The prometheus package would start a server where systemd runs; only
    # promtool is wanted.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! have_kv; then
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $pydeps"
    rm -rf "$pydeps"
    python3 -m pip install -q --disable-pip-version-check --target "$pydeps" \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    touch "$pydeps/.stamp-$KUBERNETES_VALIDATE_VERSION"
  fi
fi

# --- compose ---------------------------------------------------------------
if command -v docker-compose >/dev/null; then
  check "docker-compose config" docker-compose -f docker-compose.yml config -q
  check "docker-compose --profile gpu config" docker-compose -f docker-compose.yml --profile gpu config -q
  for profile in "" gpu; do
    check "docker-compose ${profile:+--profile $profile }config with deploy/compose.kafka-tls.yml" \
      docker-compose -f docker-compose.yml -f deploy/compose.kafka-tls.yml ${profile:+--profile "$profile"} config -q
  done
else
  skipped+=("docker-compose config (apt: docker-compose)")
fi

# --- prometheus --------------------------------------------------------------
if command -v promtool >/dev/null; then
  check "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  check "promtool check rules" promtool check rules deploy/prometheus/rules/*.rules.yml
  check "promtool test rules" promtool test rules deploy/prometheus/tests/*.yml
  # The operator copy's groups, as a plain rules file.
  if have_py_yaml; then
    tmp=$(mktemp -d)
    python3 - deploy/k8s/base/prometheusrule.yaml "$tmp/operator.rules.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump({"groups": doc["spec"]["groups"]}, open(sys.argv[2], "w"))
PY
    check "promtool check rules (PrometheusRule copy)" promtool check rules "$tmp/operator.rules.yml"
    rm -rf "$tmp"
  fi
else
  skipped+=("promtool (apt: prometheus)")
fi

# --- grafana -----------------------------------------------------------------
for f in deploy/grafana/dashboards/*.json; do
  check "JSON: $f" python3 -m json.tool "$f" /dev/null
done

# --- kubernetes --------------------------------------------------------------
if have_kv; then
  mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
  for v in "${K8S_VERSIONS[@]}"; do
    # CRDs (PodMonitor, PrometheusRule) have no schema there: warnings only;
    # tests/deploy.rs checks their structure.
    check "kubernetes-validate --strict -k $v" \
      env PYTHONPATH="$root/$pydeps" python3 -m kubernetes_validate --strict --quiet -k "$v" "${manifests[@]}"
  done
  # Each kustomization as kubectl would apply it: the overlays' patches
  # (deploy/k8s/kafka-tls) only exist in the rendered output.
  if command -v kubectl >/dev/null; then
    tmp=$(mktemp -d)
    for k in $(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort); do
      out="$tmp/$(echo "$k" | tr / _).yaml"
      if check "kubectl kustomize $k" sh -c "kubectl kustomize '$k' > '$out'"; then
        for v in "${K8S_VERSIONS[@]}"; do
          check "kubernetes-validate --strict -k $v (kustomize $k)" \
            env PYTHONPATH="$root/$pydeps" python3 -m kubernetes_validate --strict --quiet -k "$v" "$out"
        done
      fi
    done
    rm -rf "$tmp"
  else
    skipped+=("kubectl kustomize of the overlays (kubectl is not in Debian: install it to check them)")
  fi
else
  skipped+=("kubernetes-validate (pip, into $pydeps)")
fi

# --- scripts -----------------------------------------------------------------
check "sh -n deploy/demo/train-demo-model.sh" sh -n deploy/demo/train-demo-model.sh

# --- tests -------------------------------------------------------------------
if [ "$tests" = 1 ]; then
  [ -x target/debug/forewarn ] || check "cargo build (forewarn)" cargo build -p forewarn --bin forewarn
  check "cargo test --test deploy" cargo test --test deploy
fi

for s in "${skipped[@]}"; do log "SKIPPED, tool not installed: $s"; done
if [ ${#failures[@]} -gt 0 ]; then
  log "FAILED: ${failures[*]}"
  exit 1
fi
log "all deployment checks passed${skipped:+ (some skipped)}"
