//! Shared set-up for the integration tests.

use serde_json::{json, Value};
use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;

/// A node with its daemon running and a pod CIDR of 10.88.0.0/24.
pub(crate) fn running_node() -> TestNode {
    let mut node = TestNode::new("10.88.0.0/24");
    node.start_daemon();
    node
}

/// A conflist with wasmcni alone at `version`.
pub(crate) fn wasmcni_only(node: &TestNode, version: &str) -> Conflist {
    Conflist {
        name: "wasmcni-test".into(),
        cni_version: version.into(),
        plugins: vec![node.wasmcni_plugin()],
    }
}

/// A pod: its namespace and its attachment parameters (Kubernetes-style CNI_ARGS).
pub(crate) struct Pod {
    pub ns: NetNs,
    pub attachment: Attachment,
}

pub(crate) fn pod(name: &str) -> Pod {
    let ns = NetNs::new("wp");
    let attachment = Attachment {
        container_id: format!("{}-{name}", ns.name()),
        netns: ns.path(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), format!("{name}-{}", ns.name())),
        ],
        capability_args: Default::default(),
    };
    Pod { ns, attachment }
}

/// The pod address in a result (`ips[0].address` without the prefix length).
pub(crate) fn pod_ip(result: &Value) -> String {
    let address = result["ips"]
        .as_array()
        .and_then(|ips| {
            ips.iter()
                .find(|ip| ip["interface"] == json!(1))
                .or(ips.first())
        })
        .and_then(|ip| ip["address"].as_str())
        .unwrap_or_else(|| panic!("no address in {result}"));
    address.split('/').next().unwrap().to_owned()
}
