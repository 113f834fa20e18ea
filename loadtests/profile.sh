#!/usr/bin/env bash
# Profiles the proxy under keep-alive HTTP/1.1 load (scenario 1) with `perf record -g` and prints the top
# frames by self time, user space and kernel apart.
#
#   loadtests/profile.sh [SECONDS]     (default 6)
#
# The proxy (BIN, default the release build; ARGS, e.g. "--threads 1") runs on CPU 0, the upstream
# (examples/fixed_upstream.rs) and `oha -c 64` on CPU 1, all on loopback ports 2909x. Needs perf and oha.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECONDS_RUN="${1:-6}"
TOP="${TOP:-25}"
# shellcheck source=loadtests/bench_setup.sh
. "$HERE/bench_setup.sh"
BIN="${BIN:-$CARGO_TARGET_DIR/release/dualstack-ingress}"
bench_workdir profile
bench_config "$WORK/proxy.yaml" '"127.0.0.1:29090", "[::1]:29090"' '"127.0.0.1:29091", "[::1]:29091"'
taskset -c 1 "$UPSTREAM_BIN" 127.0.0.1:29091 "[::1]:29091" > "$WORK/upstream.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2086
RUST_LOG=warn taskset -c 0 "$BIN" ${ARGS:-} --config "$WORK/proxy.yaml" > "$WORK/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:29090/ && break; sleep 0.1; done
taskset -c 1 oha --no-tui -z 1s -c 16 http://127.0.0.1:29090/ > /dev/null 2>&1 || true
taskset -c 1 oha --no-tui --output-format json -z "$((SECONDS_RUN + 2))s" -c 64 http://127.0.0.1:29090/ > "$WORK/oha.json" 2>/dev/null &
load=$!
sleep 1
perf record -q -g -o "$WORK/perf.data" -p "$proxy" -- sleep "$SECONDS_RUN" 2>/dev/null
wait "$load" || true
echo "requests/s: $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"]))' "$WORK/oha.json")"
report() { perf report -i "$WORK/perf.data" --no-children --stdio -g none "$@" 2>/dev/null | grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+(-[[:space:]]+-)?[[:space:]]*$//'; }
echo "share of the samples by binary:"
report --sort dso | head -n 8
echo "top user-space frames by self time (percent of all samples of the proxy):"
report --sort symbol | grep -F '[.]' | head -n "$TOP"
echo "top kernel frames by self time:"
report --sort symbol | grep -F '[k]' | head -n 10
