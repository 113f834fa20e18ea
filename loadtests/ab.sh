#!/usr/bin/env bash
# Two builds of the proxy against each other, interleaved (A, B, A, B, ...): user and kernel CPU per request
# (utime and stime from /proc/PID/stat around each run) and p99, under `oha -c 64` keep-alive load.
#
#   loadtests/ab.sh ROUNDS SECONDS BIN_A BIN_B [extra oha args, e.g. --disable-keepalive]
#
# The proxy runs on CPU 0 (ARGS are passed to it, e.g. ARGS="--threads 1"), the upstream
# (examples/fixed_upstream.rs, UPSTREAM_BIN) and oha on CPU 1, on loopback ports 2929x.
set -u
ROUNDS=$1; SECS=$2; A=$3; B=$4; shift 4; EXTRA=("$@")
W=$(mktemp -d)
# shellcheck source=loadtests/bench_setup.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench_setup.sh"
bench_config $W/p.yaml '"127.0.0.1:29290"' '"127.0.0.1:29291", "[::1]:29291"'
taskset -c 1 "$UPSTREAM_BIN" 127.0.0.1:29291 "[::1]:29291" >/dev/null 2>&1 & U=$!
run() {
  local bin=$1 name=$2
  RUST_LOG=warn taskset -c 0 $bin ${ARGS:-} --config $W/p.yaml >/dev/null 2>&1 & local P=$!
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:29290/ && break; sleep 0.1; done
  taskset -c 1 oha --no-tui -z 1s -c 16 http://127.0.0.1:29290/ >/dev/null 2>&1
  read -r u0 s0 < <(sed 's/^.*) //' /proc/$P/stat | awk '{print $12, $13}')
  taskset -c 1 oha --no-tui --output-format json -w --worker-threads 1 -z ${SECS}s -c 64 "${EXTRA[@]}" http://127.0.0.1:29290/ > $W/o.json 2>/dev/null
  read -r u1 s1 < <(sed 's/^.*) //' /proc/$P/stat | awk '{print $12, $13}')
  kill $P; wait $P 2>/dev/null
  python3 - $W/o.json $((u1-u0)) $((s1-s0)) $name <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); n=sum(int(v) for v in d["statusCodeDistribution"].values())
u,s=int(sys.argv[2]),int(sys.argv[3])
hz=__import__('os').sysconf('SC_CLK_TCK')
print(f"{sys.argv[4]:2} reqs {n:7d}  user {u/hz/n*1e6:6.1f}  kernel {s/hz/n*1e6:6.1f} us/req  p99 {d['latencyPercentiles']['p99']*1000:6.2f} ms")
PY
}
for r in $(seq $ROUNDS); do run $A A; run $B B; done
kill $U
rm -rf "$W"
