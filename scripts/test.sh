#!/usr/bin/env bash
# The whole test suite, as CI runs it: style and lint checks, unit tests, and the root
# integration tests (real namespaces, the real daemon and shim, Debian's CNI plugins,
# containerd's `ctr run --cni`, the SIGKILL crash loop).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
./scripts/install-deps.sh
# moto's server, the reference of the EC2 emulator's differential test (tests/ec2-emulator);
# the slim set (no boto3 extras) is enough for EC2. Idempotent: pip runs only when missing.
python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null ||
  python3 -m pip install --quiet 'moto>=5.2,<6' flask flask-cors

if [ "$(id -u)" -ne 0 ]; then
  echo "the integration tests need root (network namespaces)" >&2
  exit 1
fi

echo "== format"
cargo fmt --all --check
for guests in plugins tests/plugins; do (cd "$guests" && cargo fmt --all --check); done
echo "== build (release: one profile for tests, demo and benchmark)"
cargo build --release --workspace --bins
echo "== plugins (components of plugins/ and the hostile test plugins of tests/plugins)"
cargo run --release -p wasmcni-plugin-build -- tests/plugins
echo "== lint"
cargo clippy --release --workspace --all-targets -- -D warnings
for guests in plugins tests/plugins; do
  (cd "$guests" && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo clippy --release --target wasm32-unknown-unknown -- -D warnings)
done
echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The plugins' own decision logic (vpc-warm-pool's VPC CNI tables, pack, cluster-tags,
# namespace-guard, the template, the SDK), natively: the guest workspace is separate.
(cd plugins && CARGO_TARGET_DIR="$root/target/wasm-guests" cargo test --release) 2>&1 | tee -a "$log"
guest_status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$guest_status
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
