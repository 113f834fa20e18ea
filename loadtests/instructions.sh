#!/usr/bin/env bash
# User-space instructions per keep-alive request, counted by callgrind (valgrind): a figure that does not
# drift with the machine's load, so a change of a few percent shows, where CPU time needs many rounds.
#
#   loadtests/instructions.sh [BIN ...]     (default: the release build)
#
# Each BIN runs single-threaded under callgrind on loopback port 29390 in front of examples/fixed_upstream.rs
# (29391); after 500 warm-up requests the counters are zeroed and N (default 2000) requests are sent over
# 8 keep-alive connections with oha; the total is divided by N. A BIN named `minimal_proxy` is run as
# examples/minimal_proxy.rs (the floor: hyper alone). The counts repeat to within about 0.3%.
# OHA_ARGS adds oha options to the counted run, e.g. OHA_ARGS=--disable-keepalive (a connection per request).
# Needs valgrind and oha. CALLGRIND_OUT=DIR keeps each run's profile (callgrind_annotate --inclusive=yes).
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dualstack-ingress/target}"
export PATH="$HOME/.cargo/bin:$PATH"
N="${N:-2000}"
UPSTREAM_BIN="${UPSTREAM_BIN:-$CARGO_TARGET_DIR/release/examples/fixed_upstream}"
[ $# -gt 0 ] || set -- "$CARGO_TARGET_DIR/release/dualstack-ingress"
# shellcheck source=loadtests/bench_setup.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench_setup.sh"
bench_workdir instructions
bench_config "$WORK/proxy.yaml" '"127.0.0.1:29390"' '"127.0.0.1:29391"'
"$UPSTREAM_BIN" 127.0.0.1:29391 > /dev/null 2>&1 &
pids+=($!)
for bin in "$@"; do
  if [ "$(basename "$bin")" = minimal_proxy ]; then args=(127.0.0.1:29390 127.0.0.1:29391); else args=(--threads 1 --config "$WORK/proxy.yaml"); fi
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/out.%p" "$bin" "${args[@]}" > "$WORK/proxy.log" 2>&1 &
  proxy=$!
  for _ in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:29390/ && break; sleep 0.2; done
  oha --no-tui -n 500 -c 8 http://127.0.0.1:29390/ > /dev/null
  callgrind_control -z "$proxy" > /dev/null 2>&1
  # shellcheck disable=SC2086
  oha --no-tui --output-format json -n "$N" -c 8 ${OHA_ARGS:-} http://127.0.0.1:29390/ > "$WORK/oha.json"
  callgrind_control -d "$proxy" > /dev/null 2>&1
  kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true
  ok=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["statusCodeDistribution"].get("200",0))' "$WORK/oha.json")
  total=$(awk '/^totals:/{print $2}' "$WORK"/out.*.1)
  printf '%-60s %8d instructions/request (%d of %d answered 200)\n' "$bin" $((total / N)) "$ok" "$N"
  if [ -n "${CALLGRIND_OUT:-}" ]; then mkdir -p "$CALLGRIND_OUT"; cp "$WORK"/out.*.1 "$CALLGRIND_OUT/$(basename "$bin").callgrind"; fi
  rm -f "$WORK"/out.*
done
