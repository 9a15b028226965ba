//! The daemon with a WebAssembly allocator: real components, real namespaces.

use wasmcni_harness::allocator_plugin_config;
use wasmcni_harness::node::TestNode;

use crate::support::{pod, pod_ip, wasmcni_only};

fn node_with(sections: &str) -> TestNode {
    let node = TestNode::new("10.88.0.0/24");
    node.append_config(sections);
    node
}

#[test]
fn the_pack_allocator_chooses_addresses_for_real_adds() {
    let mut node = node_with(&allocator_plugin_config("pack", &["pool-view"]));
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.0.0");
    let pods: Vec<_> = (0..3).map(|i| pod(&format!("packed{i}"))).collect();
    let mut results = Vec::new();
    for p in &pods {
        results.push(node.add(&chain, &p.attachment).expect("ADD through pack"));
    }
    let ips: Vec<String> = results.iter().map(pod_ip).collect();
    assert_eq!(ips, ["10.88.0.1", "10.88.0.2", "10.88.0.3"]);
    // pack fills the lowest hole at once, where the built-in allocator would rotate onwards.
    node.del(&chain, &pods[1].attachment, Some(&results[1]))
        .expect("DEL");
    let again = pod("packed-again");
    let result = node.add(&chain, &again.attachment).expect("ADD");
    assert_eq!(pod_ip(&result), "10.88.0.2");
    assert!(
        node.daemon_log_text().contains("allocator plugin loaded"),
        "{}",
        node.daemon_log_text()
    );
}

#[test]
fn a_plugin_importing_an_ungranted_interface_stops_the_daemon_with_its_name() {
    let mut node = node_with(&allocator_plugin_config("pack", &["log"]));
    let log = node.start_daemon_expecting_failure();
    assert!(
        log.contains("plugin pack imports wasmcni:plugin/pool-view@0.1.0 which its grant does not include (granted: [log])"),
        "{log}"
    );
}

#[test]
fn a_plugin_whose_file_changed_is_refused() {
    let text = allocator_plugin_config("pack", &["pool-view"]);
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
