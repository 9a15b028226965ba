//! Plugins from a real OCI registry end to end: `wasmcni-host plugin push` to Debian's
//! docker-registry (TLS with a CA made for the test, inside the node's network namespace),
//! reviewers' approvals of the pulled component (two of three required; a stranger's key
//! refused), a daemon that pulls it cold, starts from its cache once the registry is gone,
//! refuses a tampered blob and a reference to another build, and names a widened grant.

use std::path::Path;
use std::process::Command;

use wasmcni_harness::node::TestNode;
use wasmcni_harness::registry::{RegistryOptions, TestRegistry};
use wasmcni_harness::{bin_dir, plugins_dir};

use crate::plugins::wait_for_log;
use crate::support::{pod, wasmcni_only};

/// `wasmcni-host ARGS` inside the node's network namespace (where the registry listens).
fn host_in(node: &TestNode, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", node.node.name()])
        .arg(bin_dir().join("wasmcni-host"))
        .args(args)
        .output()
        .expect("run wasmcni-host")
}

fn approve(node: &TestNode, key: &Path, cosign: Option<&Path>, out: &Path) {
    let config = node.config_path().display().to_string();
    let key = key.display().to_string();
    let mut args = vec![
        "audit",
        "--config",
        &config,
        "--approve",
        "namespace-guard",
        "--key",
        &key,
    ];
    let existing = cosign.map(|c| c.display().to_string());
    if let Some(existing) = &existing {
        args.extend(["--cosign", existing]);
    }
    let output = host_in(node, &args);
    assert!(output.status.success(), "{output:?}");
    std::fs::write(out, &output.stdout).unwrap();
}

#[test]
fn a_plugin_pushed_approved_and_pulled_by_digest_then_served_from_the_cache() {
    let mut node = TestNode::new("10.89.0.0/24");
    let mut registry = TestRegistry::start(RegistryOptions {
        tls: true,
        netns: Some(node.node.path().into()),
        ..Default::default()
    });
    let ca = registry.ca_file().unwrap().display().to_string();
    let guard = plugins_dir().join("namespace-guard.wasm");
    let digest = wasmcni_runtime::digest_of_file(&guard).unwrap();

    // Push, as a plugin team would.
    let target = format!("oci://{}/plugins/namespace-guard:v1", registry.host());
    let out = host_in(
        &node,
        &[
            "plugin",
            "push",
            &guard.display().to_string(),
            &target,
            "--ca",
            &ca,
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["digest"], digest.as_str(), "{pushed}");
    assert_eq!(pushed["kind"], "policy", "{pushed}");
    let oci = pushed["oci"].as_str().unwrap().to_owned();
    assert!(
        oci.starts_with(&format!(
            "oci://{}/plugins/namespace-guard@sha256:",
            registry.host()
        )),
        "{oci}"
    );
    // The human form prints the lines to paste.
    let out = host_in(
        &node,
        &[
            "plugin",
            "push",
            &guard.display().to_string(),
            &target,
            "--ca",
            &ca,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("oci = \"{oci}\""))
            && text.contains(&format!("digest = \"{digest}\"")),
        "{text}"
    );
    // A tag is no way to name a plugin.
    let tagged = format!("oci://{}/plugins/namespace-guard:v1", registry.host());

    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    let approvals = dir.join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    for name in ["alice", "bob", "carol", "mallory"] {
        let out = host_in(
            &node,
            &["keygen", "--out", &dir.join(name).display().to_string()],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    let section = registry.registry_section("");
    let entry = |oci: &str, digest: &str, mtu: &str| {
        format!(
            "\n[policy]\nplugins = [\"namespace-guard\"]\n\n[[plugins]]\nname = \"namespace-guard\"\n\
             kind = \"policy\"\noci = \"{oci}\"\ndigest = \"{digest}\"\n[plugins.grants]\nlog = {{}}\n\
             netlink = {{ mtu = {mtu} }}\n[plugins.config]\nallow_namespaces = \"default\"\n"
        )
    };
    let trust = format!(
        "\n[trust]\nkeys = [{}]\nrequired = 2\napprovals = \"{}\"\n",
        ["alice", "bob", "carol"]
            .iter()
            .map(|k| format!("\"{}\"", dir.join(format!("{k}.pub")).display()))
            .collect::<Vec<_>>()
            .join(", "),
        approvals.display()
    );
    let configured = |oci: &str, digest: &str, mtu: &str| {
        format!("{base}{section}{}{trust}", entry(oci, digest, mtu))
    };

    node.write_config(&configured(&tagged, &digest, "[1280, 9001]"));
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("plugins[0].oci") && refused.contains("tags are refused"),
        "{refused}"
    );

    // Reviewers audit the pulled component (audit pulls it into the node's cache) and sign:
    // one trusted reviewer and a stranger are not two reviewers.
    node.write_config(&configured(&oci, &digest, "[1280, 9001]"));
    let audit = host_in(
        &node,
        &[
            "audit",
            "--config",
            &node.config_path().display().to_string(),
        ],
    );
    let table = String::from_utf8_lossy(&audit.stdout);
    assert!(
        table.contains(&format!("ok (digest verified; from {oci})")),
        "{audit:?}"
    );
    let file = approvals.join("namespace-guard.json");
    approve(&node, &dir.join("alice.key"), None, &file);
    approve(&node, &dir.join("mallory.key"), Some(&file), &file);
    let cache = node.state_dir().join("components");
    std::fs::remove_dir_all(&cache).unwrap();
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("approved as configured by 1 of the 2 reviewers required"),
        "{refused}"
    );
    assert!(
        refused.contains("which is not one of [trust] keys"),
        "{refused}"
    );

    // The second trusted reviewer co-signs: a cold start pulls the component and loads it.
    approve(&node, &dir.join("bob.key"), Some(&file), &file);
    std::fs::remove_dir_all(&cache).unwrap();
    node.start_daemon();
    let log = node.daemon_log_text();
    assert!(log.contains("component pulled from its registry"), "{log}");
    assert!(log.contains("plugin approved as configured"), "{log}");
    let cached = cache.join(format!("{}.wasm", digest.replace(':', "-")));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&guard).unwrap()
    );
    let chain = wasmcni_only(&node, "1.1.0");
    node.add(&chain, &pod("pulled").attachment)
        .expect("ADD through the pulled policy");
    let plugins = node.inspect("plugins", true);
    assert!(plugins.contains(&oci), "{plugins}");

    // A widened grant, by reload: refused with the difference named; the running set stays.
    node.write_config(&configured(&oci, &digest, "[576, 9001]"));
    let log = wait_for_log(&node, "configuration reload refused", 1);
    assert!(
        log.contains(
            "approves other terms: grants.netlink.mtu: approved [1280,9001], configured [576,9001]"
        ),
        "{log}"
    );

    // The registry goes away: a restart starts from the cache.
    node.write_config(&configured(&oci, &digest, "[1280, 9001]"));
    registry.stop();
    node.stop_daemon("TERM");
    node.start_daemon();
    assert!(
        node.daemon_log_text().contains("component from the cache"),
        "{}",
        node.daemon_log_text()
    );
    node.add(&chain, &pod("cached").attachment)
        .expect("ADD with the registry down");

    // With the cache gone as well, the node does not start, and says why.
    node.stop_daemon("TERM");
    std::fs::remove_dir_all(&cache).unwrap();
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("plugin namespace-guard:")
            && refused.contains("is not in the component cache")
            && refused.contains("fetching the manifest"),
        "{refused}"
    );

    // Back up, but the blob was tampered with (same size, one byte): refused, nothing cached.
    registry.restart();
    let mut moved = wasmcni_core::OciReference::parse(&oci).unwrap();
    moved.registry = registry.host();
    let moved = moved.to_string();
    let blob = registry.blob_file(&digest);
    let original = std::fs::read(&blob).unwrap();
    let mut evil = original.clone();
    let at = evil.len() / 2;
    evil[at] ^= 0x01;
    std::fs::write(&blob, &evil).unwrap();
    let section = registry.registry_section("");
    node.write_config(&format!(
        "{base}{section}{}{trust}",
        entry(&moved, &digest, "[1280, 9001]")
    ));
    let refused = node.start_daemon_expecting_failure();
    assert!(refused.contains("Invalid digest"), "{refused}");
    assert!(!cached.exists());

    // A reference to one build with the digest of another: refused, both named.
    std::fs::write(&blob, &original).unwrap();
    let other = wasmcni_runtime::digest_of_file(&plugins_dir().join("pack.wasm")).unwrap();
    node.write_config(&format!(
        "{base}{section}{}{trust}",
        entry(&moved, &other, "[1280, 9001]")
    ));
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains(&format!(
            "the manifest's component is {digest}, the configuration pins {other}"
        )),
        "{refused}"
    );

    // And the genuine one, from the registry at its new address, starts.
    node.write_config(&format!(
        "{base}{section}{}{trust}",
        entry(&moved, &digest, "[1280, 9001]")
    ));
    node.start_daemon();
    assert!(node
        .daemon_log_text()
        .contains("component pulled from its registry"));
}
