#!/usr/bin/env bash
# Chart checks: renders and lints charts/dualstack-ingress with the Helm v4 library (helm-python-sdk),
# validates every rendered object with kubernetes-validate (strict; Kubernetes 1.30 and the newest bundled
# version), asserts the chart's properties and compares its RBAC with `dualstack-ingress --print-rbac`,
# then runs the binary with the rendered args and config of the defaults case against the test API server
# (needs ports 8080, 8443 and 9901 free on 0.0.0.0 and [::]).
# Installs what it needs into a venv under $HOME/.cache. Closes with "chart: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$HOME/.cache/dualstack-ingress/chart-venv"
stamp="$venv/.installed-v1"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  if ! command -v python3 >/dev/null || ! python3 -m venv "$venv" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'helm-python-sdk>=0.2.2,<0.3' 'kubernetes-validate>=1.37' 'pyyaml>=6'
  touch "$stamp"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dualstack-ingress/target}"
if [ -z "${DUALSTACK_INGRESS_BIN:-}" ]; then
  # The RBAC comparison asks the binary what it needs; build it (a no-op when it is up to date).
  cargo build --locked --quiet --bin dualstack-ingress
  export DUALSTACK_INGRESS_BIN="$CARGO_TARGET_DIR/debug/dualstack-ingress"
fi
if [ -z "${KUBE_API_SERVER_BIN:-}" ]; then
  # The defaults case is run against the test API server (examples/kube_api_server.rs).
  cargo build --locked --quiet --example kube_api_server
  export KUBE_API_SERVER_BIN="$CARGO_TARGET_DIR/debug/examples/kube_api_server"
fi

exec "$venv/bin/python" tests/chart/check_chart.py
