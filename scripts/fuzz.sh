#!/usr/bin/env bash
# Coverage-guided fuzzing of wasmcni's input surface (cargo-fuzz, libFuzzer with
# AddressSanitizer, on the nightly toolchain): the CNI invocation (environment and stdin),
# the shim-daemon frames, the cluster configuration, and datastore recovery from whatever is
# on disk, and a hostile plugin's ENI requests and tags against its grant. See
# tests/fuzz/fuzz_targets/*.rs for what each target asserts beyond "no panic". Built with
# overflow and debug assertions on (-a), as the tests are.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 150 s, every target)
#
# Runs one target per core. The corpus grows in target/fuzz/corpus/<target> from one run to
# the next, seeded each time by tests/fuzz/examples/seed_corpus.rs and the regression inputs
# of tests/fuzz/regressions/<target>. A crash leaves its input in
# target/fuzz/artifacts/<target>/; copy it to tests/fuzz/regressions/<target>/ with the fix,
# so scripts/test.sh replays it from then on. Prints executions per target and in all.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-150}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(scripts/fuzz-targets.sh)
fi
export CARGO_TARGET_DIR="$root/target/fuzz"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzzing needs the nightly toolchain (AddressSanitizer, coverage): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build --fuzz-dir tests/fuzz -O -a
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
corpus="$CARGO_TARGET_DIR/corpus"
cargo run -q --release --manifest-path tests/fuzz/Cargo.toml --example seed_corpus -- "$corpus"
# The datastore target writes a state directory per input: keep it in memory.
export TMPDIR=/dev/shm
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
jobs_at_once=$(nproc)
running=0
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target" "$CARGO_TARGET_DIR/artifacts/$target" "tests/fuzz/regressions/$target"
  (
    rc=0
    "$CARGO_TARGET_DIR/$triple/release/$target" \
      "$corpus/$target" "tests/fuzz/regressions/$target" \
      -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
      -artifact_prefix="$CARGO_TARGET_DIR/artifacts/$target/" >"$logs/$target.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/$target.rc"
  ) &
  running=$((running + 1))
  if [ "$running" -ge "$jobs_at_once" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
status=0
total=0
printf '%-20s %8s %12s %10s %s\n' target seconds executions new-units result
for target in "${targets[@]}"; do
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log")
  new=$(sed -n 's/^stat::new_units_added: *//p' "$logs/$target.log")
  rc=$(cat "$logs/$target.rc")
  if [ "$rc" -eq 0 ]; then
    result=clean
  else
    result="FAILED (exit $rc): $(grep -m1 -E 'panicked|ERROR: ' "$logs/$target.log" || true)"
    status=1
    cp "$logs/$target.log" "$CARGO_TARGET_DIR/artifacts/$target/last-run.log"
  fi
  printf '%-20s %8s %12s %10s %s\n' "$target" "$seconds" "${runs:-0}" "${new:-0}" "$result"
  total=$((total + ${runs:-0}))
done
echo "executions in all: $total"
exit "$status"
