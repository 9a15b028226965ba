//! IPv6 pods from a static pool (`provider.static.cidrs` of IPv6 prefixes): a node without
//! EC2 whose pods get a /128 each, routed like the EC2 provider's IPv6 prefix mode.

use std::net::SocketAddr;

use serde_json::json;
use wasmcni_harness::node::{TestNode, NODE_IP, OUTSIDE_IP, OUTSIDE_IP6};
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer, PEER_ADDRESS};

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

#[test]
fn an_ipv6_pod_reaches_ipv4_endpoints_from_a_node_local_address_translated_to_the_nodes() {
    let mut node = TestNode::new("fd00:88::/120");
    // Two egress addresses, so that running out is tested too.
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    node.write_config(&config.replacen(
        "[datapath]\n",
        "[datapath]\nipv4_egress_range = \"169.254.172.0/30\"\n",
        1,
    ));
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let a = pod("egress-a");
    let b = pod("egress-b");
    let result_a = node.add(&chain, &a.attachment).expect("ADD");
    let result_b = node.add(&chain, &b.attachment).expect("ADD");
    // The egress address is not the pod's address: the result has only the /128.
    assert_eq!(
        result_a["ips"].as_array().map(Vec::len),
        Some(1),
        "{result_a}"
    );
    let egress_of = |ns: &wasmcni_harness::netns::NetNs| {
        let inside = ns.ip(&["-4", "-o", "addr", "show", "eth0"]);
        inside
            .split_whitespace()
            .skip_while(|word| *word != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("no IPv4 address in the pod: {inside}"))
            .to_owned()
    };
    let (egress_a, egress_b) = (egress_of(&a.ns), egress_of(&b.ns));
    assert!(
        egress_a.starts_with("169.254.172.") && egress_a.ends_with("/32"),
        "{egress_a}"
    );
    assert_ne!(egress_a, egress_b, "two pods share an egress address");
    let routes = a.ns.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );

    // An IPv4-only server beyond the node sees the node's address; the node answers too.
    let server = EchoServer::start(
        &node.outside,
        SocketAddr::new(OUTSIDE_IP.parse().unwrap(), 8080),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&a.ns, server.addr).as_deref(),
        Some(NODE_IP),
        "the pod's IPv4 connection did not leave as the node's address"
    );
    assert!(
        ping(&b.ns, NODE_IP),
        "pod b cannot reach the node over IPv4"
    );
    node.check(&chain, &a.attachment, &result_a)
        .expect("CHECK with IPv4 egress");
    let pool: serde_json::Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    let held: Vec<&str> = pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["egressV4"].as_str())
        .collect();
    assert_eq!(held.len(), 2, "{pool}");

    // CHECK sees the IPv4 default route gone.
    a.ns.ip(&["-4", "route", "del", "default"]);
    let broken = node
        .check(&chain, &a.attachment, &result_a)
        .expect_err("CHECK without the IPv4 default route");
    assert!(
        broken
            .stdout
            .contains("default route via 169.254.1.1 dev eth0 in the pod is missing"),
        "{broken:?}"
    );

    // The /30 has two egress addresses, both held: a third IPv6 pod is refused, by name.
    let c = pod("egress-c");
    let full = node
        .add(&chain, &c.attachment)
        .expect_err("no egress address left");
    assert!(
        full.stdout.contains("no free IPv4 egress address"),
        "{full:?}"
    );
    // DEL gives it back (after a restart, which must not lose who holds what).
    node.crash_and_restart_daemon();
    let still_full = node
        .add(&chain, &c.attachment)
        .expect_err("the restarted daemon knows who holds the egress addresses");
    assert!(
        still_full.stdout.contains("no free IPv4 egress address"),
        "{still_full:?}"
    );
    node.del(&chain, &b.attachment, Some(&result_b))
        .expect("DEL");
    let result_c = node.add(&chain, &c.attachment).expect("ADD once b is gone");
    let egress_c = egress_of(&c.ns);
    assert_eq!(egress_c, egress_b, "the only free egress address");
    assert_ne!(egress_c, egress_a);
    node.del(&chain, &c.attachment, Some(&result_c))
        .expect("DEL");
    node.del(&chain, &a.attachment, Some(&result_a))
        .expect("DEL");
    let pool: serde_json::Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    assert_eq!(pool["allocations"], json!([]), "{pool}");
    // The egress routes through the veths were the records' all along.
    let log = node.daemon_log_text();
    assert!(!log.contains("no record holds"), "{log}");
    // The translation is the node's rule, not a pod's: it stays. (In nftables where the
    // node's iptables is the nf_tables variant, as the daemon picks like VPC CNI.)
    let listing = |program: &str, args: &[&str]| {
        String::from_utf8_lossy(&node.node.exec(program, args).stdout).into_owned()
    };
    let nft = listing("nft", &["list", "table", "ip", "wasmcni"]);
    let iptables = listing("iptables", &["-t", "nat", "-S", "WASMCNI-SNAT"]);
    assert!(
        nft.contains("ip saddr 169.254.172.0/30 ip daddr != 169.254.172.0/30")
            && nft.contains("masquerade")
            || iptables.contains("-s 169.254.172.0/30 ! -d 169.254.172.0/30")
                && iptables.contains("MASQUERADE"),
        "no egress translation: nft {nft:?}, iptables {iptables:?}"
    );
}
