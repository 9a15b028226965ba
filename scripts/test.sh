#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what it needs and check it is there (the
# preflight), style and lint checks, unit tests, and the root integration tests (real
# namespaces, the real daemon and shim, Debian's CNI plugins, containerd's `ctr run --cni`,
# the SIGKILL crash loop, the EC2 emulator against moto).
#
# Every test binary runs even when an earlier one fails (`--no-fail-fast`), and the closing
# line counts all of them: a test binary that crashed, or was built and never started, is a
# failure the line shows.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need root (network namespaces, firewall rules); run as root" >&2
  exit 1
fi
./scripts/install-deps.sh

echo "== format"
cargo fmt --all --check
for guests in plugins tests/plugins tests/fuzz; do (cd "$guests" && cargo fmt --all --check); done
# Clippy lints our crates as they are compiled, in the one build the tests run:
# scripts/rustc-with-clippy.sh, the compiler of the workspace's crates, has clippy check each
# one against the dependencies already built and then compiles it with rustc. So the
# dependencies are compiled once, not a second time in check mode for `cargo clippy` (three
# minutes of a cold run), and the tests run rustc's code. `-D warnings`: a rustc or clippy
# warning fails the build. Every cargo command of the host workspace below runs through
# `checked`, so they share one set of artifacts. (By hand: `cargo clippy --profile checked
# --workspace --all-targets -- -D warnings` reports the same.)
clippy_driver=$(rustup which clippy-driver)
if [ ! -x "$clippy_driver" ]; then
  echo "clippy-driver is missing: rustup component add clippy" >&2
  exit 1
fi
checked() {
  CLIPPY_DRIVER="$clippy_driver" \
    RUSTC_WORKSPACE_WRAPPER="$root/scripts/rustc-with-clippy.sh" \
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
    cargo "$@"
}
echo "== build and lint (the checked profile: release with overflow checks and debug assertions in our crates; clippy -D warnings)"
# The guest plugins (wasm32) compile alongside, with the command wasmcni-plugin-build runs
# (which then only encodes the components): they use a core the host build leaves idle while
# its last crates link.
guest_target="${CARGO_TARGET_DIR:-$root/target}/wasm-guests"
guest_build_log=$(mktemp)
(
  for guests in plugins tests/plugins; do
    CARGO_TARGET_DIR="$guest_target" cargo build --release --target wasm32-unknown-unknown \
      --manifest-path "$guests/Cargo.toml" || exit 1
  done
) >"$guest_build_log" 2>&1 &
guest_build=$!
trap 'kill "$guest_build" 2>/dev/null; rm -f "$guest_build_log"' EXIT
checked build --profile checked --workspace --all-targets
# The `wasmcni` shim as it ships: static, for musl (the tests run this one, not the dynamically
# linked build of the same crate beside the other binaries).
checked build --profile checked -p wasmcni-shim --target "$(scripts/shim-target.sh)"
if ! wait "$guest_build"; then
  cat "$guest_build_log" >&2
  echo "building the guest plugins failed (above)" >&2
  exit 1
fi
echo "== plugins (components of plugins/ and the hostile test plugins of tests/plugins)"
# The binary the workspace build just made (`cargo run -p` alone would unify features
# differently and compile its dependencies again).
"${CARGO_TARGET_DIR:-target}"/checked/wasmcni-plugin-build tests/plugins
echo "== unit tests of the Python and JavaScript plugins (their strategy, under CPython and Node)"
for guest in plugins/*/; do
  if [ -f "$guest/app.py" ] && [ -f "$guest/world.wit" ]; then
    (cd "$guest" && PYTHONDONTWRITEBYTECODE=1 python3 -m unittest --quiet)
  elif [ -f "$guest/plugin.js" ] && [ -f "$guest/world.wit" ]; then
    (cd "$guest" && node --test)
  fi
done
echo "== lint the guests (wasm32)"
for guests in plugins tests/plugins; do
  (cd "$guests" && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo clippy --release --target wasm32-unknown-unknown -- -D warnings)
done

echo "== fuzz targets (built and linted; run by scripts/fuzz.sh, their inputs replayed below)"
# Plain builds (no sanitizer, no coverage: that is scripts/fuzz.sh's nightly build), enough to
# prove the targets compile and to replay the seed corpus and every regression input once.
fuzz_replay_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz-replay"
CARGO_TARGET_DIR="$fuzz_replay_dir" checked build --release --manifest-path tests/fuzz/Cargo.toml --bins --examples

echo "== tests"
work=$(mktemp -d)
trap 'rm -rf "$work" "$guest_build_log"' EXIT
# The test executables cargo builds, so that one that never starts is counted too. A build
# error here is shown, and the run goes on to report it in the closing line.
list_tests() {
  local run=$1
  shift
  "$run" test "$@" --no-run --message-format=json 2>>"$work/build.log" |
    python3 -c 'import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message.get("profile", {}).get("test") and message.get("executable"):
        print(message["executable"])'
}
set +e
list_tests checked --profile checked --workspace >"$work/expected"
# The plugins' own decision logic (vpc-warm-pool's VPC CNI tables, pack, cluster-tags,
# namespace-guard, the template, the SDK), natively: the guest workspace is separate.
(cd plugins && CARGO_TARGET_DIR="$root/target/wasm-guests" list_tests cargo --release) >>"$work/expected"
checked test --profile checked --workspace --no-fail-fast 2>&1 | tee "$work/host.log"
host_status=${PIPESTATUS[0]}
(cd plugins && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo test --release --no-fail-fast) 2>&1 |
  tee "$work/guests.log"
guest_status=${PIPESTATUS[0]}
# The fuzz targets on their seeds (what runtimes, the docs and a real datastore produce) and
# on every input a fuzzing run once crashed them with (tests/fuzz/regressions/<target>/).
fuzz_status=0
if ! "$fuzz_replay_dir/release/examples/seed_corpus" "$work/fuzz-seeds"; then
  echo "fuzz replay: writing the seed corpora failed (above)"
  fuzz_status=1
fi
for target in $(scripts/fuzz-targets.sh); do
  mapfile -t inputs < <(find "$work/fuzz-seeds/$target" "tests/fuzz/regressions/$target" -type f 2>/dev/null | sort)
  # Without inputs a libFuzzer binary would start fuzzing, without end.
  if [ "${#inputs[@]}" -eq 0 ]; then
    echo "fuzz replay $target: FAILED, no seed or regression input to replay"
    fuzz_status=1
  elif TMPDIR="$work" "$fuzz_replay_dir/release/$target" "${inputs[@]}" >"$work/fuzz-$target.log" 2>&1; then
    echo "fuzz replay $target: ${#inputs[@]} inputs, clean"
  else
    cat "$work/fuzz-$target.log"
    echo "fuzz replay $target: FAILED on one of ${#inputs[@]} inputs (above)"
    fuzz_status=1
  fi
done
# One closing line for the whole run (cargo prints one per test binary).
if [ -s "$work/build.log" ] && grep -q '^error' "$work/build.log"; then
  echo "== building the tests failed:"
  cat "$work/build.log"
fi
python3 scripts/test-summary.py "$work/expected" "$work/host.log" "$work/guests.log"
summary_status=$?
set -e
if [ "$summary_status" -eq 0 ] && [ "$fuzz_status" -ne 0 ]; then
  echo "a fuzz target failed on a seed or regression input (above)" >&2
  exit 1
fi
if [ "$summary_status" -eq 0 ] && { [ "$host_status" -ne 0 ] || [ "$guest_status" -ne 0 ]; }; then
  echo "cargo test failed (exit $host_status for the host workspace, $guest_status for the guests) outside any test: see the build errors above" >&2
  exit 1
fi
exit "$summary_status"
