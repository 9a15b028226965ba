#!/usr/bin/env bash
# The compiler of the workspace's own crates in `./scripts/test.sh` (RUSTC_WORKSPACE_WRAPPER):
# first clippy checks the crate (metadata only, into a scratch directory, against the
# dependencies the build already compiled; `-D warnings` comes from CLIPPY_ARGS), then rustc
# compiles it as cargo asked. So the lint needs no second, check-mode build of every
# dependency (which `cargo clippy` would make: three minutes of a cold run), and the tests
# still run what rustc makes: clippy-driver's own output is built with MIR optimizations and
# some of rustc's debug checks (alignment, null) turned off.
#
# Usage (as cargo calls it): rustc-with-clippy.sh <rustc> <rustc arguments...>
# CLIPPY_DRIVER names clippy-driver.
set -euo pipefail

rustc=$1
shift

# Not a compilation (cargo asking for the version or the target's configuration): rustc alone.
is_compilation=0
for arg in "$@"; do
  case "$arg" in
    --crate-name) is_compilation=1 ;;
    --print | --print=* | -vV | -V | --version) is_compilation=0; break ;;
  esac
done
if [ "$is_compilation" -eq 0 ]; then
  exec "$rustc" "$@"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The same compilation, checked only: metadata into the scratch directory, no incremental
# state (the real compilation's is not to be touched), and no artifact notices (cargo would
# take the scratch metadata for the crate's own and start its dependents early).
lint=()
skip_next=0
previous=""
for arg in "$@"; do
  if [ "$skip_next" -eq 1 ]; then
    skip_next=0
    previous=$arg
    continue
  fi
  case "$arg" in
    --emit=*) lint+=("--emit=metadata") ;;
    --out-dir) lint+=("--out-dir" "$scratch"); skip_next=1 ;;
    --json=*) lint+=("--json=diagnostic-rendered-ansi") ;;
    incremental=*)
      # `-C incremental=<dir>`: drop both words.
      if [ "$previous" = "-C" ]; then
        unset 'lint[${#lint[@]}-1]'
      else
        lint+=("$arg")
      fi
      ;;
    -Cincremental=*) ;;
    *) lint+=("$arg") ;;
  esac
  previous=$arg
done

"${CLIPPY_DRIVER:?CLIPPY_DRIVER must name clippy-driver}" "$rustc" "${lint[@]}"
exec "$rustc" "$@"
