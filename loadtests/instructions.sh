#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind (valgrind): a figure that does not drift with
# the machine's load, so a change of a few percent shows, where CPU time needs many rounds; and, with the
# same configurations as run.sh, the same figure for nginx and HAProxy.
#
#   loadtests/instructions.sh [PROXY ...]     (default: the release build)
#   MODE=new loadtests/instructions.sh target/release/dualstack-ingress nginx
#
# PROXY is a path to a dualstack-ingress binary (run with --threads 1), `nginx` (one worker, no master
# process), `haproxy` (nbthread 1) or `minimal_proxy` (examples/minimal_proxy.rs: hyper alone, the floor;
# plain HTTP/1.1 only). Each runs single-threaded under callgrind on loopback in front of
# examples/fixed_upstream.rs (127.0.0.1 and [::1], port 29391) with run.sh's configuration; after 500
# warm-up requests the counters are zeroed and N (default 2000) requests are sent from 8 connections with
# oha (an IPv4 client); the total is divided by N. The counts repeat to within about 0.3%.
# MODE (what a request is, as in run.sh's scenarios; a comma-separated list runs each in turn):
#   keepalive  keep-alive HTTP/1.1 (scenario 1; the default)
#   new        a new TCP connection per request (scenario 2)
#   h2         HTTP/2 over cleartext, 10 streams per connection (scenario 3; nginx on its h2c port)
#   tls        a new TLS 1.3 connection per request (scenario 7; oha resumes sessions)
# OHA_ARGS adds oha options to the counted run; CALLGRIND_ARGS adds valgrind options (e.g. --cache-sim=yes
# --branch-sim=yes: simulated cache misses and mispredicted branches, printed per request). CALLGRIND_OUT=DIR keeps each run's profile
# (callgrind_annotate --inclusive=yes FILE); SPLIT=K prints each profile's instructions by crate or object,
# the K largest (loadtests/callgrind_split.py). Needs valgrind, oha and openssl (and nginx or haproxy when named).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=loadtests/bench_setup.sh
. "$HERE/bench_setup.sh"
N="${N:-2000}"
MODE="${MODE:-keepalive}"
[ $# -gt 0 ] || set -- "$CARGO_TARGET_DIR/release/dualstack-ingress"
# shellcheck source=loadtests/proxy_configs.sh
. "$HERE/proxy_configs.sh"
bench_workdir instructions
PORT=29390 UP_PORT=29391 PORT_H2C=29392 PORT_TLS=29393 PORT_ADMIN=29394
NGINX_EXTRA="master_process off;"
make_certs
"$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" "[::1]:$UP_PORT" > /dev/null 2>&1 &
pids+=($!)

# oha's arguments for a request of MODE to PROXY.
oha_target() { # proxy
  case "$MODE" in
    keepalive) echo "http://127.0.0.1:$PORT/" ;;
    new) echo "--disable-keepalive http://127.0.0.1:$PORT/" ;;
    h2) echo "-p 10 --http2 http://127.0.0.1:$([ "$1" = nginx ] && echo "$PORT_H2C" || echo "$PORT")/" ;;
    tls) echo "--disable-keepalive --cacert $WORK/certs/ca.crt --connect-to bench.test:$PORT_TLS:127.0.0.1:$PORT_TLS https://bench.test:$PORT_TLS/" ;;
    *) echo "instructions.sh: unknown MODE $MODE (keepalive, new, h2, tls)" >&2; return 1 ;;
  esac
}

# curl's arguments for one request of MODE to PROXY: to wait until it answers.
curl_target() { # proxy
  case "$MODE" in
    keepalive|new) echo "http://127.0.0.1:$PORT/" ;;
    h2) echo "--http2-prior-knowledge http://127.0.0.1:$([ "$1" = nginx ] && echo "$PORT_H2C" || echo "$PORT")/" ;;
    tls) echo "--cacert $WORK/certs/ca.crt --resolve bench.test:$PORT_TLS:127.0.0.1 https://bench.test:$PORT_TLS/" ;;
  esac
}

IFS=',' read -r -a MODES <<< "$MODE"
for MODE in "${MODES[@]}"; do
for proxy in "$@"; do
  name="$(basename "$proxy")"
  case "$name" in
    nginx) nginx_config > "$WORK/nginx.conf"; mkdir -p "$WORK/nginx"
      cmd=(nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log") ;;
    haproxy) haproxy_config > "$WORK/haproxy.conf"; cmd=(haproxy -db -f "$WORK/haproxy.conf") ;;
    minimal_proxy)
      case "$MODE" in keepalive|new) ;; *) echo "instructions.sh: minimal_proxy serves plain HTTP/1.1 only (MODE=$MODE)" >&2; continue ;; esac
      cmd=("$MINIMAL_BIN" "127.0.0.1:$PORT" "127.0.0.1:$UP_PORT") ;;
    *) ours_config 0 > "$WORK/ours.yaml"; cmd=("$proxy" --threads 1 --config "$WORK/ours.yaml") ;;
  esac
  target="$(oha_target "$name")"
  # shellcheck disable=SC2086
  RUST_LOG=warn valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$WORK/out.%p" "${cmd[@]}" > "$WORK/proxy.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    # shellcheck disable=SC2086
    curl -sf -o /dev/null $(curl_target "$name") && break
    sleep 0.2
  done
  # shellcheck disable=SC2086
  oha --no-tui -n 500 -c 8 $target > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  # shellcheck disable=SC2086
  oha --no-tui --output-format json -n "$N" -c 8 ${OHA_ARGS:-} $target > "$WORK/oha.json"
  callgrind_control -d "$pid" > /dev/null 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  ok=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["statusCodeDistribution"].get("200",0))' "$WORK/oha.json")
  total=$(awk '/^totals:/{print $2}' "$WORK"/out.*.1)
  printf '%-9s %-50s %8d instructions/request (%d of %d answered 200)\n' "$MODE" "$proxy" $((total / N)) "$ok" "$N"
  # With --cache-sim or --branch-sim: every event per request.
  awk -v n="$N" '/^events:/ {split($0, names)} /^totals:/ {if (NF > 2) {line = "          "; for (i = 3; i <= NF; i++) line = line sprintf(" %s %.1f", names[i], $i / n); print line}}' "$WORK"/out.*.1
  if [ -n "${SPLIT:-}" ]; then
    python3 "$HERE/callgrind_split.py" --requests "$N" --top "$SPLIT" --label "$MODE $name" "$WORK"/out.*.1
  fi
  if [ -n "${CALLGRIND_OUT:-}" ]; then mkdir -p "$CALLGRIND_OUT"; cp "$WORK"/out.*.1 "$CALLGRIND_OUT/$MODE-$name.callgrind"; fi
  rm -f "$WORK"/out.*
done
done
