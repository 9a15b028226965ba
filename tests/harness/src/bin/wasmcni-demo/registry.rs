//! `wasmcni-demo --registry`: the demo's plugins (`pack`, `namespace-guard`) pushed to a local
//! OCI registry (Debian's docker-registry, TLS with a CA made for the demo, inside the node's
//! namespace), approved by two reviewers out of two required, pulled by digest at start; a
//! widened grant refused with the difference named; a restart with the registry down served
//! from the node's component cache.

use std::process::Command;

use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;
use wasmcni_harness::registry::{RegistryOptions, TestRegistry};
use wasmcni_harness::traffic::ping;
use wasmcni_harness::{bin_dir, plugins_dir};

use super::check;
use super::ec2::{wasmcni_chain, web_pod};
use super::pod_ip;

/// `wasmcni-host ARGS` inside the node's namespace (where the registry listens); prints its
/// output indented, returns its stdout and whether it succeeded.
fn host_in(node: &TestNode, args: &[&str], show: bool) -> (String, bool) {
    let out = Command::new("ip")
        .args(["netns", "exec", node.node.name()])
        .arg(bin_dir().join("wasmcni-host"))
        .args(args)
        .output()
        .expect("run wasmcni-host");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if show || !out.status.success() {
        for line in stdout
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            println!("  {line}");
        }
    }
    (stdout, out.status.success())
}

/// A daemon log line (JSON) as `message: field=value …`, for reading.
fn show(line: &str) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        println!("  {line}");
        return;
    };
    let rest: Vec<String> = fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "timestamp" | "level" | "message" | "target"))
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    println!(
        "  {}: {}",
        fields["message"].as_str().unwrap_or("?"),
        rest.join(" ")
    );
}

fn log_lines(node: &TestNode, needle: &str) -> Vec<String> {
    node.daemon_log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn run() -> u32 {
    let mut failures = 0u32;
    println!(
        "== wasmcni demo: plugins from a local OCI registry, two reviewers' approvals required"
    );
    let mut node = TestNode::new("10.77.0.0/24");
    let mut registry = TestRegistry::start(RegistryOptions {
        tls: true,
        netns: Some(node.node.path().into()),
        ..Default::default()
    });
    let ca = registry
        .ca_file()
        .expect("a TLS registry")
        .display()
        .to_string();
    println!(
        "  docker-registry serving TLS on {} inside namespace {} (CA {ca})",
        registry.host(),
        node.node.name()
    );

    println!("== a plugin team pushes its components (wasmcni-host plugin push)");
    let mut pinned = Vec::new();
    for name in ["pack", "namespace-guard"] {
        let file = plugins_dir()
            .join(format!("{name}.wasm"))
            .display()
            .to_string();
        let target = format!("oci://{}/platform/{name}:demo", registry.host());
        let (out, ok) = host_in(
            &node,
            &["plugin", "push", &file, &target, "--ca", &ca, "--json"],
            false,
        );
        check(&mut failures, &format!("push {name} to {target}"), ok);
        let pushed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let (oci, digest) = (
            pushed["oci"].as_str().unwrap_or("?"),
            pushed["digest"].as_str().unwrap_or("?"),
        );
        println!("    oci = \"{oci}\"\n    digest = \"{digest}\"");
        pinned.push((oci.to_owned(), digest.to_owned()));
    }

    let reviewers = tempfile::tempdir().expect("a directory for the reviewers");
    let dir = reviewers.path();
    let approvals = dir.join("approvals");
    std::fs::create_dir(&approvals).expect("approvals directory");
    for name in ["alice", "bob"] {
        let (out, ok) = host_in(
            &node,
            &["keygen", "--out", &dir.join(name).display().to_string()],
            false,
        );
        check(&mut failures, &format!("keygen {name}: {}", out.trim()), ok);
    }
    let base = std::fs::read_to_string(node.config_path()).expect("the node's configuration");
    let configured = |mtu: &str| {
        format!(
            "{base}{section}\n[allocator]\nplugin = \"pack\"\n\n[policy]\nplugins = [\"namespace-guard\"]\n\n\
             [[plugins]]\nname = \"pack\"\nkind = \"allocator\"\noci = \"{}\"\ndigest = \"{}\"\n\
             [plugins.grants]\npool-view = {{}}\nlog = {{}}\neni-ops = {{ subnets = [\"node\"], security_groups = [\"node\"] }}\n\n\
             [[plugins]]\nname = \"namespace-guard\"\nkind = \"policy\"\noci = \"{}\"\ndigest = \"{}\"\n\
             [plugins.grants]\nlog = {{}}\nnetlink = {{ mtu = {mtu} }}\n[plugins.config]\nallow_namespaces = \"demo\"\n\n\
             [trust]\nkeys = [\"{}\", \"{}\"]\nrequired = 2\napprovals = \"{}\"\n",
            pinned[0].0,
            pinned[0].1,
            pinned[1].0,
            pinned[1].1,
            dir.join("alice.pub").display(),
            dir.join("bob.pub").display(),
            approvals.display(),
            section = registry.registry_section(""),
        )
    };
    node.write_config(&configured("[1280, 9001]"));

    println!(
        "== the reviewers audit what the registry serves (wasmcni-host audit pulls it) and approve"
    );
    let config = node.config_path().display().to_string();
    let (_, ok) = host_in(&node, &["audit", "--config", &config], true);
    check(
        &mut failures,
        "audit: both plugins verified, from the registry",
        ok,
    );
    for plugin in ["pack", "namespace-guard"] {
        let file = approvals.join(format!("{plugin}.json"));
        for (reviewer, cosign) in [("alice", false), ("bob", true)] {
            let key = dir.join(format!("{reviewer}.key")).display().to_string();
            let existing = file.display().to_string();
            let mut args = vec![
                "audit",
                "--config",
                &config,
                "--approve",
                plugin,
                "--key",
                &key,
            ];
            if cosign {
                args.extend(["--cosign", &existing]);
            }
            let (envelope, ok) = host_in(&node, &args, false);
            check(&mut failures, &format!("{reviewer} approves {plugin}"), ok);
            std::fs::write(&file, envelope).expect("write the approval");
        }
    }

    println!("== the node starts with an empty component cache: it pulls both by digest, then checks the approvals");
    let _ = std::fs::remove_dir_all(node.state_dir().join("components"));
    node.start_daemon();
    for line in log_lines(&node, "component pulled")
        .iter()
        .chain(&log_lines(&node, "approved as configured"))
    {
        show(line);
    }
    check(
        &mut failures,
        "both components pulled and approved by both reviewers",
        log_lines(&node, "component pulled").len() == 2
            && log_lines(&node, "approved as configured").len() == 2,
    );
    let chain = wasmcni_chain(&node, "wasmcni-registry-demo");
    let mut pods = Vec::new();
    for i in 0..2 {
        add_pod(&mut failures, &node, &chain, i, "", &mut pods);
    }
    if let [(a, ..), (_, _, b)] = &pods[..] {
        check(
            &mut failures,
            &format!("ping web-0 -> web-1 ({})", pod_ip(b)),
            ping(a, &pod_ip(b)),
        );
    }

    println!(
        "== someone widens namespace-guard's netlink grant in the cluster configuration (a reload)"
    );
    node.write_config(&configured("[576, 9001]"));
    let refused = wait_for(&node, "configuration reload refused");
    for line in &refused {
        show(line);
    }
    check(
        &mut failures,
        "the reload is refused, naming the difference a reviewer would have to approve",
        refused
            .iter()
            .any(|l| l.contains("grants.netlink.mtu: approved [1280,9001], configured [576,9001]")),
    );
    node.write_config(&configured("[1280, 9001]"));
    let restored = wait_for(&node, "configuration reloaded");
    check(
        &mut failures,
        "the approved terms reload",
        restored.len() == 1,
    );

    println!("== the registry goes down; the daemon restarts from its component cache");
    registry.stop();
    node.stop_daemon("TERM");
    let before = log_lines(&node, "component from the cache").len();
    node.start_daemon();
    let cached = log_lines(&node, "component from the cache").split_off(before);
    for line in &cached {
        show(line);
    }
    check(
        &mut failures,
        "both plugins served from the cache with the registry down",
        cached.len() == 2,
    );
    add_pod(
        &mut failures,
        &node,
        &chain,
        2,
        " with the registry down",
        &mut pods,
    );

    println!("== CNI DEL for every pod");
    for (ns, attachment, result) in pods {
        check(
            &mut failures,
            &format!("DEL {}", pod_ip(&result)),
            node.del(&chain, &attachment, Some(&result)).is_ok(),
        );
        drop(ns);
    }
    node.stop_daemon("TERM");
    println!("== cleaned up: registry stopped, namespaces removed, daemon stopped");
    failures
}

/// ADD of pod `demo/web-<i>`, checked (`when` says under what); a pod that got its address
/// joins `pods`.
fn add_pod(
    failures: &mut u32,
    node: &TestNode,
    chain: &Conflist,
    i: usize,
    when: &str,
    pods: &mut Vec<(NetNs, Attachment, serde_json::Value)>,
) {
    let (ns, attachment) = web_pod("demo", "registry-demo", i);
    match node.add(chain, &attachment) {
        Ok(result) => {
            check(
                failures,
                &format!("ADD demo/web-{i}{when}: {}", pod_ip(&result)),
                true,
            );
            pods.push((ns, attachment, result));
        }
        Err(e) => check(failures, &format!("ADD demo/web-{i}{when}: {e}"), false),
    }
}

/// The daemon log's lines holding `needle`, waiting up to 20 s for the first.
fn wait_for(node: &TestNode, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let lines = log_lines(node, needle);
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
