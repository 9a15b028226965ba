#!/usr/bin/env bash
# Installs what wasmcni's demo, tests and benchmark execute on a fresh Debian 12 machine
# (root), then checks that every one of those tools is really there (the preflight), naming
# the package of anything missing. Idempotent: apt and pip run only when something is missing.
#
#   scripts/install-deps.sh           install what is missing, then the preflight
#   scripts/install-deps.sh --check   the preflight only (installs nothing)
#   scripts/install-deps.sh --list    the Debian packages and Python packages it manages
#
# The table below is the one list of external programs the project runs. When code, a test,
# the demo or a benchmark starts spawning a new program, add it here: CI runs on a clean
# machine, and a tool installed by hand on yours is one CI lacks.
set -euo pipefail

# what the project executes              Debian package               who executes it
requirements=(
  "ip                                    iproute2                     namespaces, veths, routes: harness, demo, benchmark, SNAT tests"
  "ss                                    iproute2                     the ops tests (listening sockets in a namespace)"
  "sysctl                                procps                       the SNAT tests (forwarding in a test namespace)"
  "kill                                  procps                       the harness (stopping daemons and containerd)"
  "iptables                              iptables                     the daemon's SNAT backend (iptables), portmap, SNAT tests"
  "iptables-save                         iptables                     the daemon's SNAT backend (iptables)"
  "iptables-restore                      iptables                     the daemon's SNAT backend (iptables)"
  "iptables-legacy-save                  iptables                     the SNAT tests (legacy backend)"
  "iptables-legacy-restore               iptables                     the SNAT tests (legacy backend)"
  "nft                                   nftables                     the daemon's SNAT backend (nftables), SNAT tests"
  "ping                                  iputils-ping                 traffic checks: harness, demo"
  "/usr/lib/cni/portmap                  containernetworking-plugins  chain peer: tests, demo, install mode"
  "/usr/lib/cni/bandwidth                containernetworking-plugins  chain peer: tests, the CRI test (install mode's chain)"
  "/usr/lib/cni/loopback                 containernetworking-plugins  the CRI test (containerd's CRI attaches every sandbox's lo)"
  "/usr/lib/cni/ptp                      containernetworking-plugins  benchmark reference"
  "/usr/lib/cni/host-local               containernetworking-plugins  benchmark reference"
  "containerd                            containerd                   the ctr run --cni and CRI tests (its CRI plugin: the kubelet path)"
  "ctr                                   containerd                   the ctr run --cni test, the CRI test (imports the sandbox image)"
  "runc                                  runc                         the ctr run --cni, CRI and podman tests"
  "/bin/busybox                          busybox-static               the ctr run --cni and podman tests (the container's rootfs), the CRI test's sandbox image"
  "tar                                   tar                          the CRI test (building the sandbox image)"
  "tc                                    iproute2                     the CRI test (the bandwidth plugin's shaping)"
  "podman                                podman                       the podman test (its CNI backend, podman 4)"
  "nsenter                               util-linux                   the podman and CRI tests (runtimes in the node's network namespace)"
  "umount                                mount                        the CRI test's clean-up (a pod namespace a failed test left pinned)"
  "/usr/sbin/chroot                      coreutils                    the static shim's test (it runs alone in an empty root)"
  "openssl                               openssl                      the approvals test (a reviewer's ed25519 key made with openssl)"
  "docker-registry                       docker-registry              the OCI registry tests (a real distribution server on loopback)"
  "htpasswd                              apache2-utils                the OCI registry tests (a registry behind basic auth)"
  "cc                                    gcc                          building ring (rustls) and other C in dependencies"
  "c++                                   g++                          building libFuzzer for the fuzz targets (tests/fuzz)"
)
# Python modules, for moto's EC2 server: the reference of the EC2 emulator's differential test
# (tests/ec2-emulator). The slim set (no boto3 extras) is enough for EC2.
python_modules=(moto.server flask flask_cors)
pip_packages=("moto>=5.2,<6" flask flask-cors)
# Guest plugins are built for wasm32-unknown-unknown: a component from it imports only what
# the plugin uses, no WASI. The `wasmcni` shim is built for musl: a static executable that the
# daemon copies onto whatever node OS runs kubelet, and that starts in a fifth of the time of a
# dynamically linked one (scripts/shim-target.sh; BENCHMARKS.md).
rust_targets=(wasm32-unknown-unknown "$("$(dirname "$0")"/shim-target.sh)")
# Plugins in Python and JavaScript bundle their interpreter into the component: componentize-py
# (PyPI) and componentize-js (npm), pinned, installed into the target directory where
# wasmcni-plugin-build looks for them (host/plugin-build/src/interpreted.rs).
toolchains="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/toolchains"
componentize_py="componentize-py==0.25.1"
js_toolchain="$(cd "$(dirname "$0")" && pwd)/guest-toolchains/js"
# The pinned version, exactly.
has_componentize_py() {
  [ "$("$toolchains/python/bin/componentize-py" --version 2>/dev/null)" = "componentize-py ${componentize_py#*==}" ]
}
# `installed.lock` is written only after `npm ci` succeeded, and must be the lockfile pinned here.
has_componentize_js() {
  [ -f "$toolchains/js/node_modules/@bytecodealliance/componentize-js/package.json" ] &&
    cmp -s "$js_toolchain/package-lock.json" "$toolchains/js/installed.lock"
}
# test.sh checks formatting (rustfmt) and lints while it builds (clippy-driver).
rust_components=(clippy rustfmt)

# The names of `$1` ("target" or "component") among the rest that rustup has not installed.
# (An installed component is listed with its host suffix: clippy-x86_64-unknown-linux-gnu.)
missing_from_rustup() {
  local kind=$1 wanted installed
  shift
  installed=$(rustup "$kind" list --installed 2>/dev/null)
  for wanted in "$@"; do
    grep -qE "^$wanted(-|\$)" <<<"$installed" || echo "$wanted"
  done
}

missing_targets() { missing_from_rustup target "${rust_targets[@]}"; }
missing_components() { missing_from_rustup component "${rust_components[@]}"; }

packages() {
  local line
  for line in "${requirements[@]}"; do
    read -r _ package _ <<<"$line"
    echo "$package"
  done | sort -u
}

# The directories the daemon takes programs from (never PATH; host/datapath/src/snat/runner.rs), so a tool
# found elsewhere does not count; a shell builtin (`kill`) does not either.
has_program() {
  local dir
  case "$1" in
    /*) [ -x "$1" ] ;;
    *)
      for dir in /usr/sbin /sbin /usr/bin /bin; do
        [ -f "$dir/$1" ] && [ -x "$dir/$1" ] && return 0
      done
      return 1
      ;;
  esac
}

has_python_modules() {
  local module
  for module in "${python_modules[@]}"; do
    python3 -c "import $module" 2>/dev/null || return 1
  done
}

# Names every missing tool with its package; returns non-zero when anything is missing.
preflight() {
  local line program package users missing=0
  for line in "${requirements[@]}"; do
    read -r program package users <<<"$line"
    if ! has_program "$program"; then
      echo "preflight: missing $program (Debian package $package; needed by $users)" >&2
      missing=1
    fi
  done
  if ! command -v python3 >/dev/null 2>&1; then
    echo "preflight: missing python3 (needed for moto, the EC2 emulator's differential test)" >&2
    missing=1
  elif ! has_python_modules; then
    echo "preflight: python3 cannot import ${python_modules[*]} (pip install ${pip_packages[*]})" >&2
    missing=1
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "preflight: cargo is not on PATH: install a Rust toolchain (rustup) first" >&2
    missing=1
  elif [ -n "$(missing_targets)" ]; then
    echo "preflight: the Rust targets $(missing_targets | tr '\n' ' ')are missing (rustup target add ${rust_targets[*]})" >&2
    missing=1
  fi
  # Node.js and npm come with the machine image, as cargo does (Debian's nodejs is older than
  # componentize-js wants; the image's is 20).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "preflight: node and npm are not on PATH (componentize-js, the JavaScript plugins, needs Node.js 20 or later)" >&2
    missing=1
  fi
  if ! has_componentize_py; then
    echo "preflight: componentize-py is missing from $toolchains/python (the Python plugins; scripts/install-deps.sh installs $componentize_py)" >&2
    missing=1
  fi
  if ! has_componentize_js; then
    echo "preflight: componentize-js is missing from $toolchains/js or older than scripts/guest-toolchains/js (the JavaScript plugins; scripts/install-deps.sh installs it)" >&2
    missing=1
  fi
  if command -v rustup >/dev/null 2>&1 && [ -n "$(missing_components)" ]; then
    echo "preflight: the Rust components $(missing_components | tr '\n' ' ')are missing (rustup component add ${rust_components[*]})" >&2
    missing=1
  fi
  if [ "$missing" -ne 0 ]; then
    echo "preflight: some tools are missing (above); run scripts/install-deps.sh as root" >&2
    return 1
  fi
  echo "preflight: every tool the tests, demo and benchmark run is present"
}

install() {
  local package wanted=() missing=()
  mapfile -t wanted < <(packages)
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install-deps: all ${#wanted[@]} Debian packages present (${wanted[*]})"
  fi
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "install-deps: installing Debian packages: python3 python3-pip (for moto)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
  fi
  if ! has_python_modules; then
    echo "install-deps: installing Python packages: ${pip_packages[*]}"
    # Debian's own python3 refuses pip into its site-packages (PEP 668); the machine's
    # toolchain Python (pyenv) does not. Either way moto ends up importable by `python3`.
    python3 -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}" 2>/dev/null ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pip_packages[@]}"
  else
    echo "install-deps: Python packages present (${pip_packages[*]})"
  fi
  if ! has_componentize_py; then
    echo "install-deps: installing $componentize_py into $toolchains/python"
    mkdir -p "$toolchains"
    rm -rf "$toolchains/python"
    if ! python3 -m venv "$toolchains/python"; then
      echo "install-deps: python3 -m venv failed (above); installing Debian's python3-venv"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$toolchains/python"
    fi
    "$toolchains/python/bin/pip" install --quiet --disable-pip-version-check "$componentize_py"
  else
    echo "install-deps: componentize-py present ($("$toolchains/python/bin/componentize-py" --version))"
  fi
  if ! has_componentize_js && command -v npm >/dev/null 2>&1; then
    echo "install-deps: installing componentize-js into $toolchains/js (npm ci of scripts/guest-toolchains/js)"
    rm -rf "$toolchains/js"
    mkdir -p "$toolchains/js"
    cp "$js_toolchain/package.json" "$js_toolchain/package-lock.json" "$toolchains/js/"
    (cd "$toolchains/js" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$js_toolchain/package-lock.json" "$toolchains/js/installed.lock"
  elif has_componentize_js; then
    echo "install-deps: componentize-js present"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is not on PATH: install a Rust toolchain (rustup) first" >&2
    exit 1
  fi
  local targets
  mapfile -t targets < <(missing_targets)
  if [ "${#targets[@]}" -gt 0 ]; then
    echo "install-deps: adding the Rust targets ${targets[*]}"
    rustup target add "${targets[@]}"
  else
    echo "install-deps: Rust targets present (${rust_targets[*]})"
  fi
  local components
  mapfile -t components < <(missing_components)
  if [ "${#components[@]}" -gt 0 ]; then
    echo "install-deps: adding the Rust components ${components[*]}"
    rustup component add "${components[@]}"
  fi
}

case "${1:-}" in
  --check) preflight ;;
  --list)
    packages
    printf '%s\n' "${pip_packages[@]}"
    ;;
  "")
    install
    preflight
    ;;
  *)
    echo "usage: $0 [--check | --list]" >&2
    exit 2
    ;;
esac
