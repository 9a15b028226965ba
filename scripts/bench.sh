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
cni_args=()
churn_pods=300
while [ $# -gt 0 ]; do
  case "$1" in
    --churn-pods) churn_pods="$2"; shift 2 ;;
    *) cni_args+=("$1"); shift ;;
  esac
done
# The release binaries the benchmarks run (they find them beside themselves, in
# target/release), the static shim, and the plugins (target/plugins).
cargo build --release --workspace --bins
cargo build --release -p wasmcni-shim --target "$(scripts/shim-target.sh)"
./target/release/wasmcni-plugin-build tests/plugins > /dev/null
echo "== 1. CNI latency, concurrency and memory"
cargo bench -p wasmcni-harness --bench cni -- "${cni_args[@]}"
echo
echo "== 2. The Wasm hooks of an ADD (target: <= 25 us per ADD, allocator + one policy)"
cargo bench -p wasmcni-runtime --bench plugin_call
echo
echo "== 3. Memory with three plugins loaded, after $churn_pods pods of churn (target: RSS <= 32 MiB)"
cargo bench -p wasmcni-harness --bench ec2_churn -- --pods "$churn_pods"
