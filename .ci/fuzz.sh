#!/usr/bin/env bash
# Fuzzing smoke test: builds the cargo-fuzz targets under fuzz/ and runs each for FUZZ_SECONDS (default 20).
# The build, the corpus each run grows (seeded from the committed fuzz/corpus/<target>/seed-*) and any
# crashing input live under $HOME/.cache/dualstack-ingress/fuzz, so repeated runs on one machine, also from
# a clean clone, reuse them and the work tree stays clean. A crash, a failed property or a memory blow-up
# fails the run; the input is kept in $HOME/.cache/dualstack-ingress/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="$HOME/.cache/dualstack-ingress"
seconds="${FUZZ_SECONDS:-20}"
targets=(host_authority config_loader proxy_header forwarded)
# cargo fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); the stable toolchain accepts
# them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
# The fuzz crate is built with the main crate's Kubernetes parts switched off (fuzz/Cargo.toml), AddressSanitizer
# off (`--sanitizer none`: the crate forbids unsafe code) and 16 codegen units, which brings a build from
# scratch to about 12 CPU-minutes (6 to 7 minutes on two idle cores); see README.md, "Fuzzing".
build=(--sanitizer none --codegen-units 16 --target-dir "$cache/fuzz-target")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cargo fuzz build "${build[@]}"
for t in "${targets[@]}"; do
  corpus="$cache/fuzz/corpus/$t"
  artifacts="$cache/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "-- $t (${seconds}s)"
  log="$cache/fuzz/$t.log"
  # New inputs go to the first directory (the cache); the committed seeds are only read.
  if ! cargo fuzz run "${build[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t failed; the input is in $artifacts/"
    exit 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
