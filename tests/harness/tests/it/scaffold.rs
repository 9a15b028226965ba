//! The plugin author's first command: `wasmcni-plugin-build new <name> --kind <kind>` creates a
//! plugin from the kind's template, runs its native tests, builds its component and prints the
//! configuration entry to paste; `wasmcni-host audit` then finds the component as printed
//! (digest verified, imports exactly granted). Needs no root, but runs the guest toolchain
//! (`wasm32-unknown-unknown`), which `scripts/install-deps.sh` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wasmcni_harness::bin_dir;

fn scaffold(parent: &Path, name: &str, kind: &str) -> Output {
    Command::new(bin_dir().join("wasmcni-plugin-build"))
        .args(["new", name, "--kind", kind, "--dir"])
        .arg(parent)
        .output()
        .expect("run wasmcni-plugin-build")
}

/// The component path and the configuration entry `new` printed.
fn printed(stdout: &str) -> (PathBuf, String, String) {
    let built = stdout
        .lines()
        .find_map(|line| line.strip_prefix("built "))
        .unwrap_or_else(|| panic!("no `built` line in {stdout}"));
    let (path, rest) = built
        .split_once(" (")
        .expect("built <path> (<n> bytes), <digest>");
    let digest = rest.rsplit(", ").next().unwrap().to_owned();
    let snippet = &stdout[stdout.find("[[plugins]]").expect("an entry to paste")..];
    (PathBuf::from(path), digest, snippet.to_owned())
}

#[test]
fn a_new_plugin_of_each_kind_tests_builds_and_audits_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml"),
    )
    .unwrap();
    for kind in ["allocator", "tagger", "policy"] {
        let name = format!("team-{kind}");
        let output = scaffold(dir.path(), &name, kind);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{kind}: {output:?}");
        assert!(
            stdout.contains("test result: ok"),
            "{kind}: its tests ran: {stdout}"
        );
        let (component, digest, snippet) = printed(&stdout);
        assert_eq!(
            component,
            dir.path().join(&name).join(format!("{name}.wasm"))
        );
        assert_eq!(
            wasmcni_runtime::digest_of_file(&component).unwrap(),
            digest,
            "{kind}: the printed digest is the file's"
        );
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, format!("{base}\n{snippet}")).unwrap();
        let audit = Command::new(bin_dir().join("wasmcni-host"))
            .args(["audit", "--config"])
            .arg(&config)
            .output()
            .expect("run wasmcni-host audit");
        let report = String::from_utf8_lossy(&audit.stdout);
        assert!(audit.status.success(), "{kind}: {audit:?}");
        let row = report
            .lines()
            .find(|line| line.starts_with(&name))
            .unwrap_or_else(|| panic!("{kind}: no row for {name} in {report}"));
        assert!(row.ends_with("ok (digest verified)"), "{kind}: {row}");
    }
    // A second `new` of a name in use is refused, and leaves the first as it was.
    let again = scaffold(dir.path(), "team-policy", "policy");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{again:?}"
    );
    assert!(dir.path().join("team-policy/team-policy.wasm").exists());
}
