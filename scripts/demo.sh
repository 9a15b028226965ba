#!/usr/bin/env bash
# The main job: build wasmcni, start its node daemon on the embedded default configuration
# inside a throwaway network namespace, attach three pods through the real `wasmcni` binary
# chained with Debian's portmap, prove connectivity with real packets, clean up.
# `./scripts/demo.sh --ec2`: the same on an emulated EC2 instance (ENIs, vpc-warm-pool, SNAT);
# `--ec2 --ipv6`: IPv6 prefix mode (a /80 on the primary ENI, a /128 per pod, no SNAT).
# `--ec2 --dual-stack`: dual stack (an ENI's IPv4 address and a /128 of the /80 per pod).
# `--registry`: the plugins pushed to a local OCI registry, approved by two reviewers, pulled by
# digest; a widened grant refused; a restart with the registry down served from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace --bins
cargo build --release -p wasmcni-shim --target "$(scripts/shim-target.sh)"
"${CARGO_TARGET_DIR:-target}"/release/wasmcni-plugin-build
exec "${CARGO_TARGET_DIR:-target}"/release/wasmcni-demo "$@"
