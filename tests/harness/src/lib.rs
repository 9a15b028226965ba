//! Test harness for wasmcni: throwaway network namespaces, a node daemon running inside one,
//! a libcni-like chain runner that executes real CNI plugins, and traffic checks with real
//! packets. Used by the integration tests, the benchmark and the demo.
//!
//! Everything here needs root (network namespaces). Names are unique per process and call, and
//! every namespace, daemon and temporary directory is removed on drop, also when a test fails.

pub mod campaign;
pub mod chain;
pub mod containerd;
pub mod cri;
pub mod ec2;
pub mod netns;
pub mod node;
pub mod podman;
pub mod registry;
pub mod rootfs;
pub mod traffic;

use std::path::PathBuf;

/// Directory holding the `wasmcni-host` binary (and the dynamically linked `wasmcni`, which
/// the tests do not run: see [`shim_dir`]): `WASMCNI_BIN_DIR`, or the
/// profile directory this executable was built into (`target/checked` for the README's test
/// command, `target/release` for the demo), which the same build filled with the binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMCNI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    let dir = exe.parent().expect("an executable lives in a directory");
    // Test executables live in `<profile>/deps`, binaries in `<profile>`.
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent()
            .expect("deps lives in a profile directory")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Directory holding the `wasmcni` shim as it ships: `WASMCNI_SHIM_DIR`, or the same profile's
/// directory of the static musl build beside [`bin_dir`] (`target/<arch>-unknown-linux-musl/
/// <profile>`, which `scripts/test.sh`, `bench.sh` and `demo.sh` build). The dynamically linked
/// `wasmcni` the workspace build also leaves in [`bin_dir`] is never the one tested.
pub fn shim_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMCNI_SHIM_DIR") {
        return PathBuf::from(dir);
    }
    let bins = bin_dir();
    let profile = bins.file_name().expect("a profile directory");
    let target_dir = bins
        .parent()
        .expect("a profile directory lives in a target directory");
    target_dir
        .join(format!("{}-unknown-linux-musl", std::env::consts::ARCH))
        .join(profile)
}

/// The `wasmcni` shim as it ships (in [`shim_dir`]); panics, naming the command that builds
/// it, if it is not there.
pub fn shim() -> PathBuf {
    let shim = shim_dir().join("wasmcni");
    assert!(
        shim.is_file(),
        "{} is missing: build the static shim with `cargo build --profile {} -p wasmcni-shim --target $(scripts/shim-target.sh)` (scripts/test.sh does), or name its directory in WASMCNI_SHIM_DIR",
        shim.display(),
        bin_dir().file_name().unwrap_or_default().to_string_lossy(),
    );
    shim
}

/// Where `wasmcni-plugin-build` writes the components: `<target>/plugins`, the target
/// directory being `CARGO_TARGET_DIR` or the workspace's `target/` (the rule plugin-build
/// follows; not derived from [`bin_dir`], which a `--target` build nests one level deeper).
pub fn plugins_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("plugins")
}

/// A `[[plugins]]` entry for the built component `name` of `kind`, pinned by its real digest,
/// followed by `extra` (more keys and tables of the entry, e.g. `[plugins.grants]`).
pub fn plugin_entry(name: &str, kind: &str, extra: &str) -> String {
    let path = plugins_dir().join(format!("{name}.wasm"));
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e} (build the plugins first)", path.display()));
    let digest = wasmcni_runtime::digest_of_file(&path).expect("read the component");
    format!(
        "\n[[plugins]]\nname = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\ndigest = \"{digest}\"\n{extra}\n",
        path.display()
    )
}

/// The `[allocator]` and `[[plugins]]` sections that make the built component `name` the
/// allocator, pinned by its real digest, granted `grants` (`eni-ops` scoped to the node's own
/// subnet and security groups).
pub fn allocator_plugin_config(name: &str, grants: &[&str]) -> String {
    let grants: Vec<String> = grants
        .iter()
        .map(|g| match *g {
            "eni-ops" => {
                "eni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }".to_owned()
            }
            other => format!("{other} = {{}}"),
        })
        .collect();
    format!(
        "\n[allocator]\nplugin = \"{name}\"\n{}",
        plugin_entry(
            name,
            "allocator",
            &format!("[plugins.grants]\n{}", grants.join("\n"))
        )
    )
}

/// Where Debian's `containernetworking-plugins` install the reference plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// `CNI_PATH` for chains: wasmcni's shim (the static one, [`shim`]), then Debian's plugins.
pub fn cni_path() -> String {
    format!(
        "{}:{DEBIAN_CNI_DIR}",
        shim().parent().expect("a directory").display()
    )
}

/// A test's own directories below the ones the shim is confined to (`/run/wasmcni` for
/// daemon sockets, `/var/log/wasmcni` for its log), unique to the test and removed on drop,
/// also when the test fails.
pub struct ConfinedDirs {
    /// `/run/wasmcni/<unique>`: for a daemon's socket (and its pending DELs).
    pub run: PathBuf,
    /// `/var/log/wasmcni/<unique>`: for the shim's log.
    pub log: PathBuf,
}

impl ConfinedDirs {
    /// Creates both (the parents 0700 if missing, as the daemon and shim create them).
    pub fn new(tag: &str) -> ConfinedDirs {
        use std::os::unix::fs::DirBuilderExt;
        let name = unique_name(tag);
        let dirs = ConfinedDirs {
            run: PathBuf::from(wasmcni_cni::proto::SOCKET_DIR).join(&name),
            log: PathBuf::from(wasmcni_cni::paths::LOG_DIR).join(&name),
        };
        for dir in [&dirs.run, &dirs.log] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .unwrap_or_else(|e| panic!("create {}: {e} (the tests need root)", dir.display()));
        }
        dirs
    }
}

impl Drop for ConfinedDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(&self.log);
    }
}

/// A name unique to this process and call: `<tag>-<pid>-<n>`, short enough for an interface.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}

/// The value after `flag` on a bench's command line (`--pods 1000`), parsed; `None` when the
/// flag is absent or its value does not parse.
pub fn bench_arg<T: std::str::FromStr>(flag: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// A conflist with wasmcni alone at `version`, talking to `node`'s daemon.
pub fn wasmcni_only(node: &node::TestNode, version: &str) -> chain::Conflist {
    chain::Conflist {
        name: "wasmcni-test".into(),
        cni_version: version.into(),
        plugins: vec![node.wasmcni_plugin()],
    }
}

/// Prints a figure a test measured (timings, counts) where the test run's log shows it, also
/// for a test that passes: written to the process's stderr directly, which the test harness's
/// capture (of the `print!` and `eprint!` macros) does not intercept.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "figure: {line}");
}
