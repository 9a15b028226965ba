//! The daemon with a WebAssembly allocator: real components, real namespaces.

use std::time::{Duration, Instant};

use wasmcni_harness::node::TestNode as Node;
use wasmcni_harness::node::TestNode;
use wasmcni_harness::{allocator_plugin_config, plugin_entry};

use crate::support::{assert_detached_then_gone, pod, pod_ip, wasmcni_only};

fn node_with(sections: &str) -> TestNode {
    let node = TestNode::new("10.88.0.0/24");
    node.append_config(sections);
    node
}

#[test]
fn the_pack_allocator_chooses_addresses_for_real_adds() {
    let mut node = node_with(&allocator_plugin_config(
        "pack",
        &["pool-view", "eni-ops", "log"],
    ));
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.0.0");
    let pods: Vec<_> = (0..3).map(|i| pod(&format!("packed{i}"))).collect();
    let mut results = Vec::new();
    for p in &pods {
        results.push(node.add(&chain, &p.attachment).expect("ADD through pack"));
    }
    let ips: Vec<String> = results.iter().map(pod_ip).collect();
    assert_eq!(ips, ["10.88.0.1", "10.88.0.2", "10.88.0.3"]);
    // pack fills the lowest hole once its veth is gone, where the built-in allocator would
    // rotate onwards.
    node.del(&chain, &pods[1].attachment, Some(&results[1]))
        .expect("DEL");
    let host_veth = results[1]["interfaces"][0]["name"].as_str().expect("veth");
    assert_detached_then_gone(&node.node, host_veth, "10.88.0.2");
    // The daemon sees the veth gone a moment after the kernel says so.
    let drained = Instant::now() + Duration::from_secs(5);
    let draining = |node: &TestNode| {
        let pool: serde_json::Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
        pool["draining"].as_array().is_some_and(|d| !d.is_empty())
    };
    while draining(&node) && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = pod("packed-again");
    let result = node.add(&chain, &again.attachment).expect("ADD");
    assert_eq!(pod_ip(&result), "10.88.0.2");
    assert!(
        node.daemon_log_text().contains("allocator=pack"),
        "{}",
        node.daemon_log_text()
    );
}

#[test]
fn a_plugin_missing_from_the_cache_is_compiled_once_by_a_child_process() {
    let mut node = node_with(&allocator_plugin_config(
        "pack",
        &["pool-view", "eni-ops", "log"],
    ));
    let compiled = "compiled in a child process into the cache";
    node.start_daemon();
    assert_eq!(node.daemon_log_text().matches(compiled).count(), 1);
    let cached: Vec<_> = std::fs::read_dir(node.state_dir().join("plugin-cache"))
        .expect("the plugin cache")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // The daemon serves with what the child compiled; a restart finds it in the cache.
    let chain = wasmcni_only(&node, "1.0.0");
    let p = pod("child-compiled");
    let result = node.add(&chain, &p.attachment).expect("ADD through pack");
    node.stop_daemon("TERM");
    node.start_daemon();
    let log = node.daemon_log_text();
    assert_eq!(log.matches(compiled).count(), 1, "{log}");
    assert!(!log.contains("compiling in the daemon"), "{log}");
    node.del(&chain, &p.attachment, Some(&result)).expect("DEL");
}

#[test]
fn a_plugin_importing_an_ungranted_interface_stops_the_daemon_with_its_name() {
    let mut node = node_with(&allocator_plugin_config("pack", &["log"]));
    let log = node.start_daemon_expecting_failure();
    assert!(
        log.contains("plugin pack imports wasmcni:plugin/pool-view@0.3.0, wasmcni:plugin/eni-ops@0.3.0 which its grant does not include (granted: [log])"),
        "{log}"
    );
}

#[test]
fn a_plugin_whose_file_changed_is_refused() {
    let text = allocator_plugin_config("pack", &["pool-view", "eni-ops", "log"]);
    let digest_line = text
        .lines()
        .find(|l| l.starts_with("digest"))
        .expect("digest line")
        .to_owned();
    let tampered = text.replace(
        &digest_line,
        &format!("digest = \"sha256:{}\"", "0".repeat(64)),
    );
    let mut node = node_with(&tampered);
    let log = node.start_daemon_expecting_failure();
    assert!(
        log.contains("but the configuration pins sha256:0000"),
        "{log}"
    );
}

/// Waits until the daemon log has `needle` at least `count` times.
pub(crate) fn wait_for_log(node: &Node, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = node.daemon_log_text();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} ×{count} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_in(namespace: &str, name: &str) -> crate::support::Pod {
    // args: IgnoreUnknown, K8S_POD_NAMESPACE, K8S_POD_NAME
    let mut p = pod(name);
    p.attachment.args[1].1 = namespace.to_owned();
    p
}

#[test]
fn a_changed_configuration_applies_without_restart_and_an_invalid_one_is_refused() {
    let mut node = TestNode::new("10.88.0.0/24");
    let base = std::fs::read_to_string(node.config_path()).unwrap();
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.0.0");
    let first = pod("before");
    let first_result = node
        .add(&chain, &first.attachment)
        .expect("ADD with the built-in allocator");

    // Reload 1: the pack allocator and a namespace guard, applied to the next requests.
    let guard = plugin_entry(
        "namespace-guard",
        "policy",
        "[plugins.grants]\nlog = {}\nnetlink = { mtu = [1280, 9001] }\n[plugins.config]\nallow_namespaces = \"default\"\n\"mtu.default\" = \"1400\"",
    );
    let with_plugins = format!(
        "{base}{}\n[policy]\nplugins = [\"namespace-guard\"]\n{guard}",
        allocator_plugin_config("pack", &["pool-view", "eni-ops", "log"])
    );
    std::fs::write(node.config_path(), &with_plugins).unwrap();
    wait_for_log(&node, "configuration reloaded", 1);
    let blocked = pod_in("blocked", "denied");
    let failure = node
        .add(&chain, &blocked.attachment)
        .expect_err("denied by the guard");
    let error: serde_json::Value = serde_json::from_str(&failure.stdout).unwrap();
    assert_eq!(error["code"], 107, "{failure:?}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("policy namespace-guard denied the ADD of pod blocked/"),
        "{failure:?}"
    );
    let second = pod("after");
    let result = node
        .add(&chain, &second.attachment)
        .expect("ADD through pack + guard");
    assert_eq!(
        pod_ip(&result),
        "10.88.0.2",
        "pack fills the lowest free address"
    );
    let link = second.ns.exec("ip", &["link", "show", "eth0"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains(" mtu 1400 "),
        "the hook's adjustment is applied inside the pod: {link}"
    );
    // The pod attached before the reload is untouched.
    node.check(&chain, &first.attachment, &first_result)
        .expect("CHECK of the earlier pod");

    // Reload 2: invalid (a plugin importing an interface it is not granted): refused, and the
    // running set stays in force.
    let stray = plugin_entry(
        "stray-import",
        "allocator",
        "[plugins.grants]\npool-view = {}",
    );
    let invalid = with_plugins.replace("plugin = \"pack\"", "plugin = \"stray-import\"") + &stray;
    std::fs::write(node.config_path(), invalid).unwrap();
    let log = wait_for_log(&node, "configuration reload refused", 1);
    assert!(
        log.contains("plugin stray-import imports wasmcni:plugin/eni-ops@0.3.0"),
        "{log}"
    );
    let still_blocked = pod_in("blocked", "denied-again");
    let failure = node
        .add(&chain, &still_blocked.attachment)
        .expect_err("guard still in force");
    assert!(failure.stdout.contains("\"code\":107"), "{failure:?}");

    // Reload 3: a [datapath] change needs a restart and is refused as a whole.
    std::fs::write(
        node.config_path(),
        with_plugins.replace("mtu = 1500", "mtu = 1400"),
    )
    .unwrap();
    let log = wait_for_log(&node, "configuration reload refused", 2);
    assert!(
        log.contains("changed [datapath], which needs a restart"),
        "{log}"
    );
    assert!(node.daemon_running());
}
