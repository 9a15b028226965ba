//! The EC2 provider end to end: the daemon on an emulated instance (hypervisor mode, so every
//! attached ENI is a real link in the node namespace), pack planning the pool, real pods.

use std::time::{Duration, Instant};

use wasmcni_harness::allocator_plugin_config;
use wasmcni_harness::ec2::Ec2Node;
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer, PEER_ADDRESS};

use crate::support::{pod, pod_ip, wasmcni_only, Pod};

/// `[allocator]` pack with its grants (eni-ops scoped to the node's subnet and groups) and
/// settings.
fn pack(warm_ips: u32, prefix_delegation: bool) -> String {
    format!(
        "{}[plugins.config]\nWARM_IPS = \"{warm_ips}\"\nENABLE_PREFIX_DELEGATION = \"{prefix_delegation}\"\nMIN_ENI_AGE_SECONDS = \"0\"\n",
        allocator_plugin_config("pack", &["pool-view", "eni-ops", "log"])
    )
}

/// Fast reconciler and short cooldown, so a test sees the pool move in seconds.
const QUICK: &str = "reconcile_interval_ms = 300\nip_cooldown_ms = 500\n";

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {limit:?}");
}

fn started(instance_type: &str, ec2_extra: &str, rest: &str) -> Ec2Node {
    let mut ec2 = Ec2Node::start(instance_type, |s| s);
    ec2.node.write_config(&ec2.config(ec2_extra, rest));
    ec2.node.start_daemon();
    ec2
}

#[test]
fn pods_fill_the_primary_eni_then_a_new_eni_and_scale_down_gives_it_back() {
    // t3.medium: 3 ENIs of 6 addresses, so 5 pods per ENI.
    let ec2 = started("t3.medium", QUICK, &pack(2, false));
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let pods: Vec<Pod> = (0..8).map(|i| pod(&format!("e{i}"))).collect();
    let results: Vec<_> = pods
        .iter()
        .map(|p| ec2.node.add(&chain, &p.attachment).expect("ADD"))
        .collect();
    let ips: Vec<String> = results.iter().map(pod_ip).collect();

    let enis = ec2.attached_enis();
    assert_eq!(enis.len(), 2, "the pool grew by one ENI: {enis:?}");
    assert_eq!(enis[1].0, 1, "attached at the next device index");
    let primary: Vec<String> = ec2.eni_addresses(0).iter().map(|a| a.to_string()).collect();
    let second: Vec<String> = ec2.eni_addresses(1).iter().map(|a| a.to_string()).collect();
    let on_second: Vec<&String> = ips.iter().filter(|ip| second.contains(ip)).collect();
    let on_primary: Vec<&String> = ips.iter().filter(|ip| primary.contains(ip)).collect();
    assert_eq!(
        (on_primary.len(), on_second.len()),
        (5, 3),
        "pods fill the primary ENI first: {ips:?} primary {primary:?} second {second:?}"
    );
    let (tags, delete_on_termination) = ec2.eni_tags(1);
    assert_eq!(
        tags.get("node.k8s.amazonaws.com/instance_id"),
        Some(&ec2.instance_id),
        "{tags:?}"
    );
    assert!(
        tags.contains_key("node.k8s.amazonaws.com/createdAt"),
        "{tags:?}"
    );
    assert!(delete_on_termination, "DeleteOnTermination is set");

    // The ENI's link came up with its routing table (device 1 + 1) and the pods' rules.
    let link = ec2.node.node.ip(&["-o", "link", "show", "eth1"]);
    assert!(link.contains("state UP") || link.contains(",UP"), "{link}");
    let table = ec2.node.node.ip(&["route", "show", "table", "2"]);
    let gateway = wasmcni::ec2::provider::subnet_gateway(ec2.subnet_cidr);
    assert!(
        table.contains(&format!("default via {gateway} dev eth1")),
        "{table}"
    );
    let rules = ec2.node.node.ip(&["rule", "show"]);
    for ip in &on_second {
        assert!(
            rules.contains(&format!("from {ip} lookup 2")),
            "{ip}: {rules}"
        );
    }
    for ip in &on_primary {
        assert!(
            !rules.contains(&format!("from {ip} lookup")),
            "{ip}: {rules}"
        );
    }

    // Pods on the new ENI reach pods on the primary one, both ways.
    let first_second = pods
        .iter()
        .zip(&ips)
        .find(|(_, ip)| second.contains(ip))
        .unwrap();
    let first_primary = pods
        .iter()
        .zip(&ips)
        .find(|(_, ip)| primary.contains(ip))
        .unwrap();
    assert!(
        ping(&first_second.0.ns, first_primary.1),
        "second -> primary"
    );
    assert!(
        ping(&first_primary.0.ns, first_second.1),
        "primary -> second"
    );

    // Off the VPC, a pod of the second ENI goes out through the primary ENI, translated to
    // its address (SNAT, connmark, the fwmark rule).
    let internet = ec2.route_to_internet();
    let server = EchoServer::start(
        &ec2.node.outside,
        std::net::SocketAddr::from((internet, 7000)),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&first_second.0.ns, server.addr).as_deref(),
        Some(ec2.primary_ip.to_string().as_str()),
        "SNAT to the primary ENI's address"
    );
    assert!(rules.contains("fwmark 0x80/0x80 lookup main"), "{rules}");

    // Scale down: the pods of the second ENI and two of the primary's go; the pool keeps 2
    // free addresses on the primary ENI and gives the second ENI back.
    let mut gone = 0;
    for ((p, result), ip) in pods.iter().zip(&results).zip(&ips) {
        if second.contains(ip) || (primary.contains(ip) && gone < 2) {
            if primary.contains(ip) {
                gone += 1;
            }
            ec2.node
                .del(&chain, &p.attachment, Some(result))
                .expect("DEL");
        }
    }
    wait_until(
        "the second ENI detached and deleted",
        Duration::from_secs(20),
        || ec2.attached_enis().len() == 1,
    );
    assert!(
        ec2.unattached_enis().is_empty(),
        "{:?}",
        ec2.unattached_enis()
    );
    wait_until("table 2 emptied", Duration::from_secs(5), || {
        ec2.node
            .node
            .ip(&["route", "show", "table", "2"])
            .trim()
            .is_empty()
    });
    let left = ec2.attached_enis();
    assert_eq!(
        left[0].2, 5,
        "the primary ENI keeps its 5 addresses: {left:?}"
    );
}
