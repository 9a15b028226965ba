//! Plugins from a real OCI registry end to end: `wasmcni-host plugin push` to Debian's
//! docker-registry (TLS with a CA made for the test, basic auth, inside the node's network
//! namespace), reviewers' approvals of the pulled component (two of three required; a
//! stranger's key refused; nothing pulled that no reviewer approved), a daemon that pulls it
//! cold, starts from its cache once the registry is gone, refuses a tampered blob and a
//! reference to another build, and names a widened grant.

use std::path::Path;
use std::process::Command;

use wasmcni_config::REGISTRY_AUTH_DIR_ENV;
use wasmcni_harness::node::TestNode;
use wasmcni_harness::registry::{RegistryOptions, TestRegistry};
use wasmcni_harness::{bin_dir, plugins_dir};

use crate::approvals::trust_section;
use crate::plugins::wait_for_log;
use crate::support::{pod, wasmcni_only};

const PASSWORD: &str = "pull-token-9f3a1c";

/// `wasmcni-host ARGS` inside the node's network namespace (where the registry listens),
/// with the registry's credentials directory as the node's.
fn host_in(node: &TestNode, registry: &TestRegistry, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", node.node.name()])
        .arg(bin_dir().join("wasmcni-host"))
        .args(args)
        .env(REGISTRY_AUTH_DIR_ENV, registry.auth_dir())
        .output()
        .expect("run wasmcni-host")
}

fn approve(node: &TestNode, registry: &TestRegistry, key: &str, cosign: bool, out: &Path) {
    let config = node.config_path().display().to_string();
    let existing = out.display().to_string();
    let mut args = vec![
        "audit",
        "--config",
        &config,
        "--approve",
        "namespace-guard",
        "--key",
        key,
    ];
    if cosign {
        args.extend(["--cosign", &existing]);
    }
    let output = host_in(node, registry, &args);
    assert!(output.status.success(), "{output:?}");
    std::fs::write(out, &output.stdout).unwrap();
}

/// Starts the daemon; returns what it logged during this start only.
fn start_and_log(node: &mut TestNode) -> String {
    let before = node.daemon_log_text().len();
    node.start_daemon();
    node.daemon_log_text()[before..].to_owned()
}

#[test]
fn a_plugin_pushed_approved_and_pulled_by_digest_then_served_from_the_cache() {
    let mut node = TestNode::new("10.89.0.0/24");
    let mut registry = TestRegistry::start(RegistryOptions {
        tls: true,
        auth: Some(("plugins".into(), PASSWORD.into())),
        netns: Some(node.node.path().into()),
    });
    node.set_daemon_env(
        REGISTRY_AUTH_DIR_ENV,
        &registry.auth_dir().display().to_string(),
    );
    let ca = registry.ca_file().unwrap().display().to_string();
    let password_file = registry.password_file().unwrap().display().to_string();
    let guard = plugins_dir().join("namespace-guard.wasm");
    let guard_path = guard.display().to_string();
    let digest = wasmcni_runtime::digest_of_file(&guard).unwrap();

    // Push, as a plugin team would.
    let target = format!("oci://{}/plugins/namespace-guard:v1", registry.host());
    let push = |json: bool| {
        let mut args = vec!["plugin", "push", &guard_path, &target, "--ca", &ca];
        args.extend(["--username", "plugins", "--password-file", &password_file]);
        if json {
            args.push("--json");
        }
        let out = host_in(&node, &registry, &args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let pushed: serde_json::Value = serde_json::from_str(&push(true)).unwrap();
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
    // The human form prints the lines to paste (a second push: a new manifest, same component).
    let text = push(false);
    assert!(
        text.contains("oci = \"oci://") && text.contains(&format!("digest = \"{digest}\"")),
        "{text}"
    );

    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    let approvals = dir.join("approvals");
    std::fs::create_dir(&approvals).unwrap();
    for name in ["alice", "bob", "carol", "mallory"] {
        let out = host_in(
            &node,
            &registry,
            &["keygen", "--out", &dir.join(name).display().to_string()],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let key = |name: &str| dir.join(format!("{name}.key")).display().to_string();
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    let trust = trust_section(dir, &["alice", "bob", "carol"], 2, &approvals);
    let configured = |registry: &TestRegistry, oci: &str, digest: &str, mtu: &str| {
        format!(
            "{base}{}\n[policy]\nplugins = [\"namespace-guard\"]\n\n[[plugins]]\nname = \"namespace-guard\"\n\
             kind = \"policy\"\noci = \"{oci}\"\ndigest = \"{digest}\"\n[plugins.grants]\nlog = {{}}\n\
             netlink = {{ mtu = {mtu} }}\n[plugins.config]\nallow_namespaces = \"default\"\n{trust}",
            registry.registry_section("")
        )
    };

    // A tag is no way to name a plugin.
    node.write_config(&configured(&registry, &target, &digest, "[1280, 9001]"));
    let refused = node.start_daemon_expecting_failure();
    assert!(
        refused.contains("plugins[0].oci") && refused.contains("tags are refused"),
        "{refused}"
    );

    // Nobody approved it yet: the node refuses before it asks the registry for anything.
    node.write_config(&configured(&registry, &oci, &digest, "[1280, 9001]"));
    let cache = node.state_dir().join("components");
    let refused = node.start_daemon_expecting_failure();
    assert!(refused.contains("no approval of this digest"), "{refused}");
    assert!(!cache.exists(), "pulled before any approval");

    // Reviewers audit the pulled component (audit pulls it into the node's cache) and sign:
    // one trusted reviewer and a stranger are not two reviewers.
    let audit = host_in(
        &node,
        &registry,
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
    approve(&node, &registry, &key("alice"), false, &file);
    approve(&node, &registry, &key("mallory"), true, &file);
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
    approve(&node, &registry, &key("bob"), true, &file);
    std::fs::remove_dir_all(&cache).unwrap();
    let log = start_and_log(&mut node);
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
    node.write_config(&configured(&registry, &oci, &digest, "[576, 9001]"));
    let log = wait_for_log(&node, "configuration reload refused", 1);
    assert!(
        log.contains(
            "approves other terms: grants.netlink.mtu: approved [1280,9001], configured [576,9001]"
        ),
        "{log}"
    );
    // Nor may a reload point the node's credentials or pulls elsewhere.
    node.write_config(
        &configured(&registry, &oci, &digest, "[1280, 9001]")
            .replace("[registry]\n", "[registry]\ntimeout_ms = 1000\n"),
    );
    let log = wait_for_log(&node, "configuration reload refused", 2);
    assert!(
        log.contains("changed [registry], which needs a restart"),
        "{log}"
    );

    // The registry goes away: a restart starts from the cache.
    node.write_config(&configured(&registry, &oci, &digest, "[1280, 9001]"));
    registry.stop();
    node.stop_daemon("TERM");
    let log = start_and_log(&mut node);
    assert!(log.contains("component from the cache"), "{log}");
    assert!(!log.contains("component pulled"), "{log}");
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

    // Back up (at a new address), but the blob was tampered with (one byte): refused,
    // nothing cached.
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
    node.write_config(&configured(&registry, &moved, &digest, "[1280, 9001]"));
    let refused = node.start_daemon_expecting_failure();
    assert!(refused.contains("Invalid digest"), "{refused}");
    assert!(!cached.exists());

    // A reference to one build with the digest of another: refused (that digest has no
    // approval, so before any pull).
    std::fs::write(&blob, &original).unwrap();
    let other = wasmcni_runtime::digest_of_file(&plugins_dir().join("pack.wasm")).unwrap();
    node.write_config(&configured(&registry, &moved, &other, "[1280, 9001]"));
    let refused = node.start_daemon_expecting_failure();
    assert!(refused.contains("no approval of this digest"), "{refused}");

    // And the genuine one, from the registry at its new address, starts.
    node.write_config(&configured(&registry, &moved, &digest, "[1280, 9001]"));
    let log = start_and_log(&mut node);
    assert!(log.contains("component pulled from its registry"), "{log}");
    // The registry's password never reached the daemon's log, nor the CLI's output.
    assert!(!node.daemon_log_text().contains(PASSWORD));
    assert!(!table.contains(PASSWORD) && !text.contains(PASSWORD));
}
