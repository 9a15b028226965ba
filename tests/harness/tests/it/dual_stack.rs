//! Dual stack from a static pool of both families (`provider.static.cidrs` with IPv4 CIDRs and
//! IPv6 prefixes): each pod gets one address of each on its one interface, both routed,
//! CHECKed, recovered and given back.

use std::net::SocketAddr;

use serde_json::{json, Value};
use wasmcni_harness::node::{TestNode, NODE_IP, NODE_IP6, OUTSIDE_IP6};
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer, PEER_ADDRESS};

use crate::support::{assert_detached_then_gone, pod, wasmcni_only};
use wasmcni_harness::campaign::pod_ip_of_family;

/// A result's address of one family, without its prefix length.
fn address(result: &Value, v6: bool) -> String {
    pod_ip_of_family(result, v6).unwrap_or_else(|| {
        panic!(
            "no {} address in {result}",
            if v6 { "IPv6" } else { "IPv4" }
        )
    })
}

#[test]
fn a_dual_stack_pod_is_reached_in_both_families_and_check_and_del_cover_both() {
    let mut node = TestNode::new("10.88.6.0/29,fd00:86::/120");
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let a = pod("dual-a");
    let b = pod("dual-b");
    let result_a = node
        .add(&chain, &a.attachment)
        .expect("ADD of the first pod");
    let result_b = node
        .add(&chain, &b.attachment)
        .expect("ADD of the second pod");
    assert_eq!(
        result_a["ips"].as_array().map(Vec::len),
        Some(2),
        "{result_a}"
    );
    let (v4_a, v6_a) = (address(&result_a, false), address(&result_a, true));
    let (v4_b, v6_b) = (address(&result_b, false), address(&result_b, true));
    assert!(
        v4_a.starts_with("10.88.6.") && v6_a.starts_with("fd00:86::"),
        "{result_a}"
    );
    assert_ne!((&v4_a, &v6_a), (&v4_b, &v6_b));
    let routes: Vec<&Value> = result_a["routes"].as_array().unwrap().iter().collect();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == json!("0.0.0.0/0") && r["gw"] == json!("169.254.1.1"))
            && routes
                .iter()
                .any(|r| r["dst"] == json!("::/0") && r["gw"] == json!("fe80::1")),
        "{result_a}"
    );
    // Both on the pod's one interface.
    let inside = a.ns.ip(&["-o", "addr", "show", "eth0"]);
    assert!(
        inside.contains(&format!(" {v4_a}/32 ")) && inside.contains(&format!(" {v6_a}/128 ")),
        "{inside}"
    );

    // Real packets in both families: to the node, pod to pod, and from beyond the node.
    assert!(
        ping(&a.ns, NODE_IP),
        "pod a cannot reach the node over IPv4"
    );
    assert!(
        ping(&a.ns, NODE_IP6),
        "pod a cannot reach the node over IPv6"
    );
    assert!(ping(&a.ns, &v4_b), "pod a cannot reach pod b over IPv4");
    assert!(ping(&a.ns, &v6_b), "pod a cannot reach pod b over IPv6");
    assert!(
        ping(&node.outside, &v6_a),
        "the outside cannot reach pod a over IPv6"
    );
    // IPv6 leaves the node untranslated: a server beyond it sees the pod's own /128.
    let server = EchoServer::start(
        &node.outside,
        SocketAddr::new(OUTSIDE_IP6.parse().unwrap(), 8080),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&b.ns, server.addr).as_deref(),
        Some(v6_b.as_str())
    );
    node.check(&chain, &a.attachment, &result_a)
        .expect("CHECK of a dual-stack pod");
    let pool: Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    let held: Vec<(&str, &str)> = pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["ip"].as_str().unwrap(), a["ipv6"].as_str().unwrap()))
        .collect();
    assert!(held.contains(&(v4_a.as_str(), v6_a.as_str())), "{pool}");

    // CHECK catches a removed IPv6 route, inside the pod and on the node.
    a.ns.ip(&["-6", "route", "del", "default"]);
    let broken = node
        .check(&chain, &a.attachment, &result_a)
        .expect_err("CHECK without the IPv6 default route");
    assert!(
        broken
            .stdout
            .contains("default route via fe80::1 dev eth0 in the pod is missing"),
        "{broken:?}"
    );
    let veth_b = result_b["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    node.node
        .ip(&["-6", "route", "del", &format!("{v6_b}/128"), "dev", &veth_b]);
    let broken = node
        .check(&chain, &b.attachment, &result_b)
        .expect_err("CHECK without the IPv6 host route");
    assert!(
        broken
            .stdout
            .contains(&format!("host route {v6_b}/128 dev {veth_b} is missing")),
        "{broken:?}"
    );

    // A restarted daemon knows both addresses are held: the next pod gets neither.
    node.crash_and_restart_daemon();
    let c = pod("dual-c");
    let result_c = node
        .add(&chain, &c.attachment)
        .expect("ADD after a restart");
    let (v4_c, v6_c) = (address(&result_c, false), address(&result_c, true));
    assert!(![&v4_a, &v4_b].contains(&&v4_c), "{result_c}");
    assert!(![&v6_a, &v6_b].contains(&&v6_c), "{result_c}");

    // DEL takes both away: routes, neighbour entries, rules, the veth.
    let veth_a = result_a["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    node.del(&chain, &a.attachment, Some(&result_a))
        .expect("DEL of the first pod");
    assert_detached_then_gone(&node.node, &veth_a, &v6_a);
    assert_detached_then_gone(&node.node, &veth_a, &v4_a);
    for (family, ip) in [("-4", &v4_a), ("-6", &v6_a)] {
        let rules = node.node.ip(&[family, "rule", "show"]);
        assert!(
            !rules.contains(&format!("to {ip} ")),
            "a rule to {ip} survived DEL: {rules}"
        );
    }
    for (pod, result) in [(&b, &result_b), (&c, &result_c)] {
        node.del(&chain, &pod.attachment, Some(result))
            .expect("DEL");
    }
    let pool: Value = serde_json::from_str(&node.inspect("pool", true)).unwrap();
    assert_eq!(pool["allocations"], json!([]), "{pool}");
}

#[test]
fn on_ec2_a_dual_stack_pod_gets_an_eni_address_and_a_128_of_the_primary_enis_80() {
    use crate::ec2::{assert_on_attached_enis, pack, wait_until};
    use std::time::Duration;
    use wasmcni_harness::ec2::Ec2Node;

    // m5.large with IPv6 subnets; pack plans the IPv4 pool as in IPv4 mode.
    let mut ec2 = Ec2Node::start("m5.large", |s| s.with_ipv6());
    ec2.node.write_config(&ec2.config(
        "ip_family = \"dual\"\nreconcile_interval_ms = 300\nip_cooldown_ms = 500\n",
        &pack(2, false),
    ));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let prefixes = ec2.ipv6_prefixes();
    assert_eq!(
        prefixes.len(),
        1,
        "one /80 on the primary ENI: {prefixes:?}"
    );
    let prefix = prefixes[0];

    let pods: Vec<_> = (0..3).map(|i| pod(&format!("ds-{i}"))).collect();
    let results: Vec<Value> = pods
        .iter()
        .map(|p| ec2.node.add(&chain, &p.attachment).expect("ADD"))
        .collect();
    let v4: Vec<String> = results.iter().map(|r| address(r, false)).collect();
    let v6: Vec<String> = results.iter().map(|r| address(r, true)).collect();
    assert_on_attached_enis(&ec2, &v4);
    for ip in &v6 {
        let ip: std::net::Ipv6Addr = ip.parse().unwrap();
        assert!(
            prefix.contains(&ip) && ip != prefix.network(),
            "{ip} in {prefix}"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = v4.iter().chain(&v6).collect();
    assert_eq!(distinct.len(), 6, "{v4:?} {v6:?}");
    assert_eq!(ec2.emulator.counter("AssignIpv6Addresses").succeeded, 1);

    // Both families: pod to pod, node to pod; off the VPC, IPv4 as the node's primary
    // address (SNAT, as in IPv4 mode) and IPv6 as the pod's own /128.
    // (The primary ENI's own IPv6 address on the node, and a route off the VPC.)
    let internet_v6 = ec2.route_ipv6();
    let internet_v4 = ec2.route_to_internet();
    assert!(ping(&pods[0].ns, &v4[1]), "pod -> pod over IPv4");
    assert!(ping(&pods[0].ns, &v6[1]), "pod -> pod over IPv6");
    assert!(ping(&ec2.node.node, &v4[2]), "node -> pod over IPv4");
    assert!(ping(&ec2.node.node, &v6[2]), "node -> pod over IPv6");
    let server_v6 = EchoServer::start(
        &ec2.node.outside,
        SocketAddr::new(internet_v6.into(), 8080),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&pods[1].ns, server_v6.addr).as_deref(),
        Some(v6[1].as_str()),
        "the internet sees the pod's own IPv6 address"
    );
    let server_v4 = EchoServer::start(
        &ec2.node.outside,
        SocketAddr::new(internet_v4.into(), 8081),
        PEER_ADDRESS,
    );
    let seen_v4 = tcp_fetch(&pods[1].ns, server_v4.addr).expect("IPv4 off the VPC");
    assert_ne!(seen_v4, v4[1], "IPv4 leaving the VPC is translated");
    assert!(
        !seen_v4.starts_with("169.254."),
        "no egress address: {seen_v4}"
    );
    ec2.node
        .check(&chain, &pods[2].attachment, &results[2])
        .expect("CHECK of a dual-stack pod");

    // A restart keeps the prefix and both addresses of every pod.
    ec2.node.crash_and_restart_daemon();
    assert_eq!(ec2.ipv6_prefixes(), vec![prefix]);
    ec2.node
        .check(&chain, &pods[0].attachment, &results[0])
        .expect("CHECK after the restart");
    let pool: Value = serde_json::from_str(&ec2.node.inspect("pool", true)).unwrap();
    let kinds: Vec<&str> = pool["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"ipv6-prefix") && kinds.contains(&"secondary-ip"),
        "{pool}"
    );
    for (pod, result) in pods.iter().zip(&results) {
        ec2.node
            .del(&chain, &pod.attachment, Some(result))
            .expect("DEL");
    }
    let pool: Value = serde_json::from_str(&ec2.node.inspect("pool", true)).unwrap();
    assert_eq!(pool["allocations"], json!([]), "{pool}");
    drop((server_v4, server_v6));
}

#[test]
fn beside_another_networks_ipv4_default_route_a_dual_stack_interface_takes_only_the_ipv6_one() {
    let mut node = TestNode::new("10.88.7.0/29,fd00:87::/120");
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let mut p = pod("dual-beside");
    // Another network's interface came first: IPv4 only, with the pod's IPv4 default route
    // (a veth pair inside the pod stands for it: this kernel has no dummy links).
    for args in [
        &[
            "link", "add", "other0", "type", "veth", "peer", "name", "otherp",
        ][..],
        &["addr", "add", "192.0.2.5/24", "dev", "other0"],
        &["link", "set", "otherp", "up"],
        &["link", "set", "other0", "up"],
        &[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.1",
            "dev",
            "other0",
        ],
    ] {
        p.ns.ip(args);
    }
    p.attachment.ifname = "net1".into();
    // No `defaultRoute` key: each family's default route unless the pod has one already.
    let result = node
        .add(&chain, &p.attachment)
        .expect("ADD beside another network");
    let defaults: Vec<&str> = result["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .filter(|d| d.ends_with("/0"))
        .collect();
    assert_eq!(defaults, ["::/0"], "{result}");
    let v4 = p.ns.ip(&["-4", "route", "show"]);
    assert!(v4.contains("default via 192.0.2.1 dev other0"), "{v4}");
    assert!(
        !v4.contains("dev net1") || !v4.contains("default via 169.254.1.1"),
        "{v4}"
    );
    let v6 = p.ns.ip(&["-6", "route", "show"]);
    assert!(v6.contains("default via fe80::1 dev net1"), "{v6}");
    node.check(&chain, &p.attachment, &result)
        .expect("CHECK of what was decided");
    // The restarted daemon CHECKs the same decision (it is in the record).
    node.crash_and_restart_daemon();
    node.check(&chain, &p.attachment, &result)
        .expect("CHECK after a restart");
    node.del(&chain, &p.attachment, Some(&result)).expect("DEL");
    let v4 = p.ns.ip(&["-4", "route", "show"]);
    assert!(
        v4.contains("default via 192.0.2.1 dev other0"),
        "the other network's route stays: {v4}"
    );
}
