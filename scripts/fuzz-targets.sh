#!/usr/bin/env bash
# The fuzz targets: the names of the [[bin]] entries of tests/fuzz/Cargo.toml, one a line.
set -euo pipefail
cd "$(dirname "$0")/.."
awk '/^\[\[/ { bin = ($0 == "[[bin]]") } bin && /^name = / { gsub(/"/, "", $3); print $3 }' tests/fuzz/Cargo.toml
