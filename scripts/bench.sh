#!/usr/bin/env bash
# The CNI benchmark in one command (as root): wasmcni against Debian's ptp + host-local with
# and without ipMasq and against the kernel floor (wasmcni's own netlink work, in process), in
# one interleaved run; then 100 concurrent ADDs and DELs and the daemon's memory. It measures,
# it asserts nothing about time. `./scripts/bench.sh --iterations N` (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: needs root (network namespaces, veths, rules)" >&2
  exit 1
fi
./scripts/install-deps.sh
# The release binaries the benchmark runs (it finds them beside itself, in target/release).
cargo build --release --workspace --bins
cargo build --release -p wasmcni-shim --target "$(scripts/shim-target.sh)"
exec cargo bench -p wasmcni-harness --bench cni -- "$@"
