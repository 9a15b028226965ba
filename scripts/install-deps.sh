#!/usr/bin/env bash
# Installs what wasmcni's demo, tests and benchmark need on a fresh Debian 12 machine (root):
# iproute2 and iptables for namespaces and portmap, iputils-ping for real packets, Debian's
# containernetworking-plugins (portmap, bandwidth, ptp, host-local in /usr/lib/cni) as chain
# peers and benchmark reference, containerd + busybox-static for the `ctr run --cni` test.
# Idempotent: apt runs only when something is missing.
set -euo pipefail

packages=(iproute2 iptables iputils-ping containernetworking-plugins containerd runc busybox-static)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is not on PATH: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# Guest plugins are built for wasm32-unknown-unknown (a component from it imports only what
# the plugin uses, no WASI).
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
