//! The plugin author's first command: `wasmcni-plugin-build new <name> --kind <kind>` creates a
//! plugin from the kind's template, runs its native tests, builds its component and prints the
//! configuration entry to paste; `wasmcni-host audit` then finds the component as printed
//! (digest verified, granted exactly what it imports), and a new allocator `simulate`s against
//! `vpc-warm-pool` as that entry configures it. Needs no root, but runs the guest toolchain
//! (`wasm32-unknown-unknown`), which `scripts/install-deps.sh` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wasmcni_harness::bin_dir;

/// `new` into `parent`, building in `parent/target` (one target directory for the test's
/// plugins, so the SDK is compiled once).
fn scaffold(parent: &Path, name: &str, kind: &str) -> Output {
    Command::new(bin_dir().join("wasmcni-plugin-build"))
        .args(["new", name, "--kind", kind, "--dir"])
        .arg(parent)
        .arg("--target-dir")
        .arg(parent.join("target"))
        .output()
        .expect("run wasmcni-plugin-build")
}

/// The number of passed tests in `cargo test`'s summary lines.
fn passed(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// The component path, its digest and the configuration entry `new` printed.
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

fn audit(config: &Path, json: bool) -> Output {
    let mut command = Command::new(bin_dir().join("wasmcni-host"));
    command.arg("audit");
    if json {
        command.arg("--json");
    }
    command
        .arg("--config")
        .arg(config)
        .output()
        .expect("run wasmcni-host audit")
}

/// The walkthrough's next step: `simulate` the new allocator, as the pasted entry configures it
/// (its digest, grants and limits), against `vpc-warm-pool` on a steady churn of 200 pods.
fn simulate_as_configured(config: &Path, name: &str) {
    let plugins = wasmcni_runtime::testing::component("vpc-warm-pool");
    let output = Command::new(bin_dir().join("wasmcni-host"))
        .arg("--config")
        .arg(config)
        // The template plans nothing unless WARM_IPS says how many to keep free.
        .args([
            "simulate",
            "--trace",
            "steady",
            "--pods",
            "200",
            "--strategy",
        ])
        .arg(format!("{name},WARM_IPS=4"))
        .arg("--plugins-dir")
        .arg(plugins.parent().expect("target/plugins"))
        .args(["--json", "-"])
        .output()
        .expect("run wasmcni-host simulate");
    assert!(output.status.success(), "simulate: {output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report as JSON");
    let strategies = report["strategies"].as_array().expect("strategies");
    assert_eq!(strategies.len(), 2, "{report}");
    assert_eq!(
        strategies[0]["strategy"], "vpc-warm-pool (VPC CNI defaults)",
        "the baseline first"
    );
    let mine = &strategies[1];
    assert_eq!(
        mine["strategy"],
        format!("{name} (WARM_IPS=4)").as_str(),
        "{report}"
    );
    assert_eq!(mine["pods"], 200, "{mine}");
    assert_eq!(mine["pods_failed"], 0, "{mine}");
    // The template keeps WARM_IPS spare: it grows the pool through EC2 as the pods come.
    assert!(mine["ec2_mutating"].as_u64().unwrap_or(0) > 0, "{mine}");
}

#[test]
fn a_new_plugin_of_each_kind_tests_builds_and_audits_as_printed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().canonicalize().unwrap();
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml"),
    )
    .unwrap();
    // The entry is appended to the embedded default: that must not configure the kinds.
    for table in ["[allocator]", "[tagger]", "[policy]"] {
        assert!(!base.contains(table), "policies/default.toml has {table}");
    }
    for kind in ["allocator", "tagger", "policy"] {
        let name = format!("team-{kind}");
        let output = scaffold(&dir, &name, kind);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{kind}: {output:?}");
        assert!(passed(&stdout) > 0, "{kind}: its tests ran: {stdout}");
        let (component, digest, snippet) = printed(&stdout);
        assert_eq!(component, dir.join(&name).join(format!("{name}.wasm")));
        assert_eq!(
            wasmcni_runtime::digest_of_file(&component).unwrap(),
            digest,
            "{kind}: the printed digest is the file's"
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, format!("{base}\n{snippet}")).unwrap();
        let table = audit(&config, false);
        let report = String::from_utf8_lossy(&table.stdout);
        assert!(table.status.success(), "{kind}: {table:?}");
        let row = report
            .lines()
            .find(|line| line.starts_with(&name))
            .unwrap_or_else(|| panic!("{kind}: no row for {name} in {report}"));
        assert!(row.ends_with("ok (digest verified)"), "{kind}: {row}");
        // Granted exactly what it imports: nothing more, nothing less.
        let json = audit(&config, true);
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let plugin = &report["plugins"][0];
        assert_eq!(plugin["name"], name.as_str());
        assert_eq!(
            plugin["under_granted"],
            serde_json::json!([]),
            "{kind}: {plugin}"
        );
        assert_eq!(
            plugin["over_granted"],
            serde_json::json!([]),
            "{kind}: {plugin}"
        );
        if kind == "allocator" {
            simulate_as_configured(&config, &name);
        }
    }
    // A second `new` of a name in use is refused, and leaves the first as it was.
    let again = scaffold(&dir, "team-policy", "policy");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{again:?}"
    );
    assert!(dir.join("team-policy/team-policy.wasm").exists());
    // Nor may a plugin take the name of one of wasmcni's own: its component would replace that
    // plugin's in target/plugins.
    let shipped = scaffold(&dir, "pack", "allocator");
    assert!(
        String::from_utf8_lossy(&shipped.stderr).contains("one of wasmcni's own plugins"),
        "{shipped:?}"
    );
    assert!(!dir.join("pack").exists());
}

/// `--language python|javascript`: an allocator from the namespace-subnets example, its unit
/// tests run by the language's own runner, built with componentize-py or componentize-js (the
/// toolchains `scripts/install-deps.sh` installs), audited clean as printed: the Python one
/// granted its interpreter's WASI holding nothing, the JavaScript one no WASI at all.
#[test]
fn a_new_python_or_javascript_allocator_tests_builds_and_audits_as_printed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().canonicalize().unwrap();
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default.toml"),
    )
    .unwrap();
    for (language, tests_passed) in [("python", "\nOK"), ("javascript", "# fail 0")] {
        let name = format!("team-{language}");
        let output = Command::new(bin_dir().join("wasmcni-plugin-build"))
            .args(["new", &name, "--kind", "allocator", "--language", language])
            .arg("--dir")
            .arg(&dir)
            .output()
            .expect("run wasmcni-plugin-build");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{language}: {output:?}");
        assert!(
            stdout.contains(tests_passed),
            "{language}: its tests ran: {stdout}"
        );
        let (component, digest, snippet) = printed(&stdout);
        assert_eq!(component, dir.join(&name).join(format!("{name}.wasm")));
        assert_eq!(wasmcni_runtime::digest_of_file(&component).unwrap(), digest);
        assert_eq!(
            snippet.contains("wasi = {}"),
            language == "python",
            "{language}: {snippet}"
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, format!("{base}\n{snippet}")).unwrap();
        let json = audit(&config, true);
        assert!(json.status.success(), "{language}: {json:?}");
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let plugin = &report["plugins"][0];
        assert_eq!(plugin["problem"], serde_json::Value::Null, "{plugin}");
        assert_eq!(plugin["under_granted"], serde_json::json!([]), "{plugin}");
        assert_eq!(plugin["over_granted"], serde_json::json!([]), "{plugin}");
    }
    // Python and JavaScript templates are allocators.
    let policy = Command::new(bin_dir().join("wasmcni-plugin-build"))
        .args([
            "new",
            "team-guard",
            "--kind",
            "policy",
            "--language",
            "python",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("run wasmcni-plugin-build");
    assert!(!policy.status.success());
    assert!(!dir.join("team-guard").exists());
}
