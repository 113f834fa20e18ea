#!/usr/bin/env bash
# TLS handshake cost of dualstack-ingress with each rustls crypto provider (ring, the default, and
# aws-lc-rs, `--features aws-lc-rs`), on IPv4 and IPv6 clients:
#   full     new TLS 1.3 handshake and one request    (openssl s_time -new -www /)
#   resumed  resumed TLS 1.3 session and one request  (openssl s_time -reuse -www /)
#   oha      one request per new connection          (oha --disable-keepalive, which resumes sessions)
# The proxy runs on CPU 0 on one thread, the clients on CPU 1, in a private network namespace. Prints a
# Markdown table: connections per second and the proxy's CPU time per connection.
#
#   loadtests/tls-providers.sh [seconds per run, default 5]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dualstack-ingress/target}"
export PATH="$HOME/.cargo/bin:$PATH"
SECS="${1:-5}"

if [ "${INNER:-0}" = 0 ]; then
  cd "$REPO"
  command -v oha >/dev/null || cargo install --locked oha
  cargo build --release --locked --bins --example fixed_upstream
  cargo build --release --locked --bins --features aws-lc-rs --target-dir "$CARGO_TARGET_DIR/aws-lc-rs"
  if unshare -n true 2>/dev/null; then
    exec env INNER=1 unshare -n -- "$BASH" "$0" "$@"
  fi
  echo "tls-providers.sh: no private network namespace (unshare -n); using the current one" >&2
fi
[ "${INNER:-0}" = 1 ] && ip link set lo up

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=29080 PORT_TLS=29443 UP_PORT=29001
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
  -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1,IP:::1" -keyout "$WORK/leaf.key" -out "$WORK/leaf.crt" 2>/dev/null
cat > "$WORK/proxy.yaml" <<EOF
listen: ["127.0.0.1:$PORT", "[::1]:$PORT"]
listenTls: ["127.0.0.1:$PORT_TLS", "[::1]:$PORT_TLS"]
redirectToHttps: false
tls:
  - hosts: ["bench.test", "127.0.0.1", "::1"]
    cert: $WORK/leaf.crt
    key: $WORK/leaf.key
defaultBackend: bench
backends:
  bench:
    endpoints: ["127.0.0.1:$UP_PORT", "[::1]:$UP_PORT"]
EOF

taskset -c 1 "$CARGO_TARGET_DIR/release/examples/fixed_upstream" "127.0.0.1:$UP_PORT" "[::1]:$UP_PORT" >/dev/null &
PIDS+=($!)

ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
TCK="$(getconf CLK_TCK)"

echo "| provider | client | mode | connections/s | proxy CPU µs per connection |"
echo "|---|---|---|---:|---:|"
for provider in ring aws-lc-rs; do
  bin="$CARGO_TARGET_DIR/release/dualstack-ingress"
  [ "$provider" = aws-lc-rs ] && bin="$CARGO_TARGET_DIR/aws-lc-rs/release/dualstack-ingress"
  RUST_LOG=warn taskset -c 0 "$bin" --threads 1 --config "$WORK/proxy.yaml" >"$WORK/proxy.log" 2>&1 &
  proxy=$!
  PIDS+=("$proxy")
  for _ in $(seq 1 100); do curl -sfk -o /dev/null "https://127.0.0.1:$PORT_TLS/" && break; sleep 0.1; done
  for family in ipv4 ipv6; do
    host=127.0.0.1
    [ "$family" = ipv6 ] && host="[::1]"
    for mode in full resumed oha; do
      t0=$(ticks "$proxy")
      case "$mode" in
        full|resumed)
          flag=-new; [ "$mode" = resumed ] && flag=-reuse
          # -www: fetch / on each connection, so the client also reads the TLS 1.3 ticket it resumes with.
          out=$(taskset -c 1 openssl s_time -connect "$host:$PORT_TLS" "$flag" -www / -time "$SECS" 2>/dev/null \
            | grep -m1 'connections in .* real seconds')
          n=$(echo "$out" | awk '{print $1}')
          secs=$(echo "$out" | awk '{print $4}')
          ;;
        oha)
          taskset -c 1 oha --no-tui --output-format json -z "${SECS}s" -c 16 --disable-keepalive --insecure \
            --connect-to "bench.test:$PORT_TLS:$host:$PORT_TLS" "https://bench.test:$PORT_TLS/" >"$WORK/oha.json"
          read -r n secs < <(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(sum(d['statusCodeDistribution'].values()), d['summary']['total'])" "$WORK/oha.json")
          ;;
      esac
      t1=$(ticks "$proxy")
      awk -v p="$provider" -v f="$family" -v m="$mode" -v n="$n" -v s="$secs" -v t=$((t1 - t0)) -v hz="$TCK" \
        'BEGIN { printf "| %s | %s | %s | %.0f | %.1f |\n", p, f, m, n / s, (n > 0 ? t / hz * 1e6 / n : 0) }'
    done
  done
  kill -TERM "$proxy"
  wait "$proxy" 2>/dev/null || true
done
