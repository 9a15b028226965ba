//! Shared set-up for the integration tests.

use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;

/// A node with its daemon running and a pod CIDR of 10.88.0.0/24.
pub(crate) fn running_node() -> TestNode {
    let mut node = TestNode::new("10.88.0.0/24");
    node.start_daemon();
    node
}

pub(crate) use wasmcni_harness::campaign::{pod, pod_ip, Pod};
pub(crate) use wasmcni_harness::wasmcni_only;

/// How long a DELeted pod's veth may take to disappear: the kernel's deletion runs after the
/// answer (~20 ms; generous for a loaded CI machine).
pub(crate) const VETH_GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What a DEL's answer promises at once: `host_veth`, if the kernel has not deleted it yet, is
/// down, and nothing on the node routes to `ip` through it (no route, no neighbour entry).
/// Then the veth goes within [`VETH_GONE_WITHIN`].
pub(crate) fn assert_detached_then_gone(node: &NetNs, host_veth: &str, ip: &str) {
    let link = node.ip(&["-o", "link", "show"]);
    if let Some(line) = link.lines().find(|l| l.contains(&format!(" {host_veth}@"))) {
        assert!(
            !line.contains(",UP") && !line.contains("<UP"),
            "a DELeted pod's veth is still up: {line}"
        );
    }
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let routes = node.ip(&[family, "route", "show", "table", "all"]);
    assert!(
        !routes.lines().any(|r| r.starts_with(&format!("{ip} "))),
        "a route to {ip} survived DEL: {routes}"
    );
    let neighbours = node.ip(&[family, "neigh", "show"]);
    assert!(
        !neighbours.lines().any(|n| n.starts_with(&format!("{ip} "))),
        "a neighbour entry for {ip} survived DEL: {neighbours}"
    );
    assert!(
        node.link_gone_within(host_veth, VETH_GONE_WITHIN),
        "host veth {host_veth} still there {} s after DEL",
        VETH_GONE_WITHIN.as_secs()
    );
}
