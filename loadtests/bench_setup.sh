# Sourced by profile.sh, instructions.sh and ab.sh: the builds they measure, the scratch directory and the
# one-route proxy configuration they share.

# The release builds in CARGO_TARGET_DIR (the same as .ci/run and run.sh), each overridable.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dualstack-ingress/target}"
export PATH="$HOME/.cargo/bin:$PATH"
UPSTREAM_BIN="${UPSTREAM_BIN:-$CARGO_TARGET_DIR/release/examples/fixed_upstream}"
MINIMAL_BIN="${MINIMAL_BIN:-$CARGO_TARGET_DIR/release/examples/minimal_proxy}"

# A scratch directory in WORK, removed at exit together with the processes whose pids are added to `pids`.
bench_workdir() { # NAME
  WORK="$(mktemp -d "/tmp/dualstack-$1.XXXXXX")"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}

# A proxy configuration in FILE: LISTEN (YAML list items, e.g. '"127.0.0.1:29090", "[::1]:29090"') with
# every path routed to ENDPOINTS (the same form).
bench_config() { # FILE LISTEN ENDPOINTS
  cat > "$1" <<YAML
listen: [$2]
routes:
  - paths:
      - path: /
        backend: bench
backends:
  bench:
    endpoints: [$3]
YAML
}
