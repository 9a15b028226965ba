//! Reviewer approvals end to end: keys made with `wasmcni-host keygen` and with openssl,
//! approvals signed with `wasmcni-host audit --approve`, and a daemon that loads only plugins
//! enough reviewers approved as configured — at start and on reload.

use std::path::Path;
use std::process::Command;

use wasmcni_harness::node::TestNode;
use wasmcni_harness::{bin_dir, plugin_entry};

use crate::plugins::wait_for_log;
use crate::support::{pod, wasmcni_only};

fn host(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("wasmcni-host"))
        .args(args)
        .output()
        .expect("run wasmcni-host")
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().expect(program);
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
}

/// `wasmcni-host audit --approve namespace-guard` with `key`, written to `out`.
fn approve(config: &Path, key: &Path, cosign: Option<&Path>, out: &Path) {
    let mut args = vec![
        "audit".to_owned(),
        "--config".into(),
        config.display().to_string(),
        "--approve".into(),
        "namespace-guard".into(),
        "--key".into(),
        key.display().to_string(),
    ];
    if let Some(existing) = cosign {
        args.extend(["--cosign".into(), existing.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = host(&args);
    assert!(output.status.success(), "{output:?}");
    std::fs::write(out, &output.stdout).unwrap();
}

#[test]
fn only_plugins_approved_as_configured_load_and_a_widened_grant_is_named() {
    let mut node = TestNode::new("10.88.0.0/24");
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    let approvals = dir.join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    // Two reviewers make their keys with wasmcni-host, a third with openssl.
    for name in ["alice", "bob"] {
        let out = host(&["keygen", "--out", &dir.join(name).display().to_string()]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("key id sha256:"),
            "{out:?}"
        );
    }
    let carol = dir.join("carol.key");
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            &carol.display().to_string(),
        ],
    );
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            &carol.display().to_string(),
            "-pubout",
            "-out",
            &dir.join("carol.pub").display().to_string(),
        ],
    );
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    let guard = |mtu: &str| {
        format!(
            "\n[policy]\nplugins = [\"namespace-guard\"]\n{}",
            plugin_entry(
                "namespace-guard",
                "policy",
                &format!("[plugins.grants]\nlog = {{}}\nnetlink = {{ mtu = {mtu} }}\n[plugins.config]\nallow_namespaces = \"default\"\n"),
            )
        )
    };
    let trust = trust_section(dir, &["alice", "bob", "carol"], 2, &approvals);
    let approved = format!("{base}{}{trust}", guard("[1280, 9001]"));
    node.write_config(&approved);

    // Nobody approved yet: the daemon refuses to start, naming the plugin and the remedy.
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("plugin namespace-guard: (sha256:"),
        "{refused}"
    );
    assert!(refused.contains("no approval of this digest"), "{refused}");
    assert!(
        refused.contains("wasmcni-host audit --approve namespace-guard"),
        "{refused}"
    );
    // One of the two reviewers required.
    let file = approvals.join("namespace-guard.json");
    approve(&node.config_path(), &dir.join("alice.key"), None, &file);
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("approved as configured by 1 of the 2 reviewers required"),
        "{refused}"
    );
    // The second, with an openssl key, co-signs the same file: the daemon starts.
    approve(&node.config_path(), &carol, Some(&file), &file);
    node.start_daemon();
    let log = node.daemon_log_text();
    assert!(log.contains("plugin approved as configured"), "{log}");
    let envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        envelope["signatures"].as_array().map(Vec::len),
        Some(2),
        "{envelope}"
    );
    for signature in envelope["signatures"].as_array().unwrap() {
        assert!(
            !log.contains(signature["sig"].as_str().unwrap()),
            "a signature in the log"
        );
    }
    assert!(!log.contains("BEGIN"), "a key in the log: {log}");
    let chain = wasmcni_only(&node, "1.1.0");
    node.add(&chain, &pod("approved").attachment)
        .expect("ADD through the approved policy");

    // A widened grant, by reload: refused, the difference named; the running set stays.
    node.write_config(&format!("{base}{}{trust}", guard("[576, 9001]")));
    let log = wait_for_log(&node, "configuration reload refused", 1);
    assert!(
        log.contains(
            "approves other terms: grants.netlink.mtu: approved [1280,9001], configured [576,9001]"
        ),
        "{log}"
    );
    // Dropping [trust] by reload is no way around it: it needs a restart.
    node.write_config(&format!("{base}{}", guard("[576, 9001]")));
    let log = wait_for_log(&node, "configuration reload refused", 2);
    assert!(
        log.contains("changed [trust], which needs a restart"),
        "{log}"
    );
    assert!(node.daemon_running());

    // Nor is a restart, once [trust] is pinned by a file plugin editors cannot write: the
    // cluster configuration without [trust] and with the widened grant still does not start.
    node.stop_daemon("TERM");
    let pinned = dir.join("trust.toml");
    std::fs::write(&pinned, trust.trim_start()).unwrap();
    node.set_daemon_env("WASMCNI_TRUST", &pinned.display().to_string());
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains(
            "approves other terms: grants.netlink.mtu: approved [1280,9001], configured [576,9001]"
        ),
        "{refused}"
    );
    // The approved terms start under the pin alone.
    node.write_config(&format!("{base}{}", guard("[1280, 9001]")));
    node.start_daemon();
    assert!(node
        .daemon_log_text()
        .contains("plugin approved as configured"));
}

/// A `[trust]` table: the public keys `<dir>/<reviewer>.pub` of `reviewers`, `required` of
/// them, approvals in `approvals`.
pub(crate) fn trust_section(
    dir: &Path,
    reviewers: &[&str],
    required: usize,
    approvals: &Path,
) -> String {
    format!(
        "\n[trust]\nkeys = [{}]\nrequired = {required}\napprovals = \"{}\"\n",
        reviewers
            .iter()
            .map(|k| format!("\"{}\"", dir.join(format!("{k}.pub")).display()))
            .collect::<Vec<_>>()
            .join(", "),
        approvals.display()
    )
}
