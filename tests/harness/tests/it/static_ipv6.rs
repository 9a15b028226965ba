//! IPv6 pods from a static pool (`provider.static.cidrs` of IPv6 prefixes): a node without
//! EC2 whose pods get a /128 each, routed like the EC2 provider's IPv6 prefix mode.

use serde_json::json;
use wasmcni_harness::node::{TestNode, OUTSIDE_IP6};
use wasmcni_harness::traffic::ping;

use crate::support::{assert_detached_then_gone, pod, pod_ip, wasmcni_only};

#[test]
fn a_static_ipv6_pool_gives_each_pod_a_routed_128_and_del_takes_it_back() {
    let mut node = TestNode::new("fd00:88::/126");
    node.append_config("exclude = [\"fd00:88::2\"]\n");
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");

    // The node forwards IPv6 and still takes router advertisements on its uplink.
    let sysctl = |path: &str| {
        let output = node.node.exec("cat", &[path]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(sysctl("/proc/sys/net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(sysctl("/proc/sys/net/ipv6/conf/eth0/accept_ra"), "2");

    let a = pod("six-a");
    let b = pod("six-b");
    let result_a = node
        .add(&chain, &a.attachment)
        .expect("ADD of the first pod");
    let result_b = node
        .add(&chain, &b.attachment)
        .expect("ADD of the second pod");
    // The first address of the prefix is never a pod's and the excluded one is skipped, so
    // the /126 holds these two pods (where the cursor starts depends on the clock).
    let (ip_a, ip_b) = (pod_ip(&result_a), pod_ip(&result_b));
    let mut held = [ip_a.as_str(), ip_b.as_str()];
    held.sort_unstable();
    assert_eq!(held, ["fd00:88::1", "fd00:88::3"], "{result_a} {result_b}");
    assert_eq!(result_a["ips"][0]["address"], json!(format!("{ip_a}/128")));
    assert_eq!(result_a["ips"][0]["gateway"], json!("fe80::1"));
    let full = node
        .add(&chain, &pod("six-full").attachment)
        .expect_err("the pool is full");
    assert!(full.stdout.contains("no free IPv6 address"), "{full:?}");
    let inside = a.ns.ip(&["-6", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains(&format!(" {ip_a}/128 ")), "{inside}");

    // Real packets: pod to pod through the node, pod to the network beyond it and back.
    assert!(ping(&a.ns, &ip_b), "pod a cannot reach pod b");
    assert!(ping(&b.ns, OUTSIDE_IP6), "pod b cannot reach the outside");
    assert!(ping(&node.outside, &ip_a), "the outside cannot reach pod a");
    node.check(&chain, &a.attachment, &result_a)
        .expect("CHECK of an IPv6 pod");

    let pool: serde_json::Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    let held: Vec<&str> = pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["ip"].as_str())
        .collect();
    assert_eq!(held.len(), 2, "{pool}");
    assert!(
        held.contains(&"fd00:88::1") && held.contains(&"fd00:88::3"),
        "{pool}"
    );

    let veth_a = result_a["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    node.del(&chain, &a.attachment, Some(&result_a))
        .expect("DEL of the first pod");
    assert_detached_then_gone(&node.node, &veth_a, &ip_a);
    let pool: serde_json::Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    assert_eq!(
        pool["allocations"].as_array().map(Vec::len),
        Some(1),
        "{pool}"
    );
    // The freed /128 is the only one left, and the next pod gets it.
    let c = pod("six-c");
    let result_c = node.add(&chain, &c.attachment).expect("ADD of a third pod");
    assert_eq!(pod_ip(&result_c), ip_a, "{result_c}");
}
