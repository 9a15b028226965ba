#!/usr/bin/env bash
# The benchmarks in one command (as root), each printing its targets beside its figures:
# 1. CNI: wasmcni against Debian's ptp + host-local with and without ipMasq and against the
#    kernel floor (wasmcni's own netlink work, in process), in one interleaved run; then 100
#    concurrent ADDs and DELs and the daemon's memory without plugins;
# 2. the Wasm hooks of an ADD (pack `allocate` + namespace-guard `evaluate`, fresh instances)
#    against the built-in allocator, and start-up with four plugins;
# 3. the daemon's memory with an allocator, a tagger and a policy hook loaded, after a pod-churn
#    trace through the EC2 emulator (and the trace's EC2 calls and idle addresses).
# It measures, it asserts nothing about time. `./scripts/bench.sh --iterations N` (default 100)
# sets the CNI bench's iterations; `--churn-pods N` (default 300) the churn trace's pods.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: needs root (network namespaces, veths, rules)" >&2
  exit 1
fi
./scripts/install-deps.sh
usage="usage: scripts/bench.sh [--iterations N] [--churn-pods N]"
number() {
  case "${2:-}" in
    '' | *[!0-9]*) echo "bench.sh: $1 needs a whole number; $usage" >&2; exit 2 ;;
  esac
}
iterations=100
churn_pods=300
while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) number "$1" "${2:-}"; iterations="$2"; shift 2 ;;
    --churn-pods) number "$1" "${2:-}"; churn_pods="$2"; shift 2 ;;
    *) echo "bench.sh: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done
target_dir="${CARGO_TARGET_DIR:-target}"
# The release binaries the benchmarks run (they find them beside themselves, in
# target/release), the static shim, and the plugins (target/plugins).
cargo build --release --workspace --bins
cargo build --release -p wasmcni-shim --target "$(scripts/shim-target.sh)"
"$target_dir/release/wasmcni-plugin-build" tests/plugins > /dev/null
echo "== 1. CNI latency, concurrency and memory"
cargo bench -p wasmcni-harness --bench cni -- --iterations "$iterations"
echo
echo "== 2. The Wasm hooks of an ADD (target: <= 25 us per ADD, allocator + one policy)"
cargo bench -p wasmcni-runtime --bench plugin_call
echo
echo "== 3. Memory with three plugins loaded, after $churn_pods pods of churn (target: RSS <= 32 MiB)"
cargo bench -p wasmcni-harness --bench ec2_churn -- --pods "$churn_pods"
