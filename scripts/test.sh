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
for guests in plugins tests/plugins; do (cd "$guests" && cargo fmt --all --check); done
echo "== build (the checked profile: release with overflow checks and debug assertions in our crates)"
cargo build --profile checked --workspace --bins
echo "== plugins (components of plugins/ and the hostile test plugins of tests/plugins)"
# The binary the workspace build just made (`cargo run -p` alone would unify features
# differently and compile its dependencies again).
"${CARGO_TARGET_DIR:-target}"/checked/wasmcni-plugin-build tests/plugins
echo "== lint"
cargo clippy --profile checked --workspace --all-targets -- -D warnings
for guests in plugins tests/plugins; do
  (cd "$guests" && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo clippy --release --target wasm32-unknown-unknown -- -D warnings)
done

echo "== tests"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The test executables cargo builds, so that one that never starts is counted too. A build
# error here is shown, and the run goes on to report it in the closing line.
list_tests() {
  cargo test "$@" --no-run --message-format=json 2>>"$work/build.log" |
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
list_tests --profile checked --workspace >"$work/expected"
# The plugins' own decision logic (vpc-warm-pool's VPC CNI tables, pack, cluster-tags,
# namespace-guard, the template, the SDK), natively: the guest workspace is separate.
(cd plugins && CARGO_TARGET_DIR="$root/target/wasm-guests" list_tests --release) >>"$work/expected"
cargo test --profile checked --workspace --no-fail-fast 2>&1 | tee "$work/host.log"
host_status=${PIPESTATUS[0]}
(cd plugins && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo test --release --no-fail-fast) 2>&1 |
  tee "$work/guests.log"
guest_status=${PIPESTATUS[0]}
# One closing line for the whole run (cargo prints one per test binary).
if [ -s "$work/build.log" ] && grep -q '^error' "$work/build.log"; then
  echo "== building the tests failed:"
  cat "$work/build.log"
fi
python3 scripts/test-summary.py "$work/expected" "$work/host.log" "$work/guests.log"
summary_status=$?
set -e
if [ "$summary_status" -eq 0 ] && { [ "$host_status" -ne 0 ] || [ "$guest_status" -ne 0 ]; }; then
  echo "cargo test failed (exit $host_status for the host workspace, $guest_status for the guests) outside any test: see the build errors above" >&2
  exit 1
fi
exit "$summary_status"
