#!/usr/bin/env bash
# Proves that the README's two commands work from nothing, as CI and a new user meet them:
# removes what scripts/install-deps.sh installs (Debian packages, the Python packages, the
# wasm and musl targets), then runs ./scripts/demo.sh and ./scripts/test.sh in a fresh clone of HEAD
# (no target/). Run it as root before you stop whenever you change what the commands need.
#
#   scripts/fresh-machine-check.sh [CLONE_DIR]     (default /tmp/wasmcni-fresh)
#   scripts/fresh-machine-check.sh --here          (this checkout, its build cache kept)
#
# A Debian package is purged only when purging it takes nothing else with it but other
# packages of the list (procps, say, would take desktop packages of the machine image);
# those are named and kept.
set -euo pipefail
cd "$(dirname "$0")/.."
clone=${1:-/tmp/wasmcni-fresh}
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: it purges Debian packages" >&2
  exit 1
fi

mapfile -t managed < <(./scripts/install-deps.sh --list)
debian=()
python=()
for item in "${managed[@]}"; do
  if dpkg-query -W "$item" >/dev/null 2>&1 || apt-cache show "$item" >/dev/null 2>&1; then
    debian+=("$item")
  else
    python+=("${item%%[<>=]*}")
  fi
done

purge=()
for package in "${debian[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || continue
  # What else purging it takes, leaving out what this script purges anyway.
  others=$(apt-get -s purge "$package" 2>/dev/null | awk '/^Purg /{print $2}' |
    grep -vxF -f <(printf '%s\n' "${debian[@]}") || true)
  if [ -n "$others" ]; then
    echo "fresh-machine-check: keeping $package (purging it would also remove: $(echo "$others" | tr '\n' ' '))"
  else
    purge+=("$package")
  fi
done
if [ "${#purge[@]}" -gt 0 ]; then
  echo "fresh-machine-check: purging ${purge[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${purge[@]}" >/dev/null
fi
echo "fresh-machine-check: uninstalling Python packages ${python[*]}"
python3 -m pip uninstall -y -q "${python[@]}" 2>/dev/null ||
  python3 -m pip uninstall -y -q --break-system-packages "${python[@]}" || true
if python3 -c 'import moto.server' 2>/dev/null; then
  echo "fresh-machine-check: moto is still importable after the uninstall" >&2
  exit 1
fi
shim_target=$(scripts/shim-target.sh)
echo "fresh-machine-check: removing the Rust targets wasm32-unknown-unknown $shim_target"
for target in wasm32-unknown-unknown "$shim_target"; do
  rustup target remove "$target" || true
done
if ./scripts/install-deps.sh --check >/dev/null 2>&1; then
  echo "fresh-machine-check: the preflight still passes after the purge: nothing was removed?" >&2
  exit 1
fi

if [ "$clone" = --here ]; then
  # The quick form: the same purge, then both commands in this checkout, whose build cache
  # stays (proves what they install, not a cold build).
  clone=$PWD
else
  rm -rf "$clone"
  git clone -q . "$clone"
  cd "$clone"
fi
started=$(date +%s)
echo "== fresh-machine-check: ./scripts/demo.sh in $clone"
./scripts/demo.sh
echo "== fresh-machine-check: ./scripts/test.sh in $clone"
./scripts/test.sh
echo "fresh-machine-check: both README commands passed from nothing in $(($(date +%s) - started)) s"
