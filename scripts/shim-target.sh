#!/usr/bin/env bash
# The Rust target the `wasmcni` shim is built for: this machine's architecture with musl, so
# the shim is one static executable (no dynamic loader, no libc of the node's to match).
# `cargo build --release -p wasmcni-shim --target "$(scripts/shim-target.sh)"` puts it in
# target/<this target>/release/wasmcni.
set -euo pipefail
echo "$(uname -m)-unknown-linux-musl"
