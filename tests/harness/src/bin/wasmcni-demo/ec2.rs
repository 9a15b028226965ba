//! `wasmcni-demo --ec2`: the same job on an emulated EC2 instance. The EC2 emulator runs in
//! hypervisor mode (every attached ENI becomes a link in the node namespace); the daemon
//! discovers the node through IMDS, `vpc-warm-pool` plans the pool with VPC CNI's defaults,
//! `cluster-tags` tags each new ENI, and pods spill from the primary ENI onto a new one.
//! `--ec2 --ipv6`: IPv6 prefix mode on an emulated m5.large: one /80 on the primary ENI, a
//! /128 per pod, `namespace-guard` asked about each pod (its audit entry shows the /128), no
//! SNAT. `--ec2 --dual-stack`: both at once on the same m5.large: every pod gets an IPv4
//! address of an ENI (planned by `vpc-warm-pool`, SNATed off the VPC) and a /128 of the
//! primary ENI's /80 (its own address everywhere), and `namespace-guard` sees both.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::ec2::Ec2Node;
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;
use wasmcni_harness::plugin_entry;
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer, PEER_ADDRESS};

use super::{audit, check, pod_ip};

pub(crate) fn run() -> u32 {
    let mut failures = 0u32;
    println!("== wasmcni demo, EC2 mode: an emulated t3.medium (3 ENIs x 5 pod addresses)");
    let ec2 = Ec2Node::start("t3.medium", |s| s);
    println!(
        "  instance {} primary ENI {} ({}) in {} {}",
        ec2.instance_id, ec2.primary_eni, ec2.primary_ip, ec2.subnet_id, ec2.subnet_cidr
    );
    let plugins = format!(
        "[cluster]\nname = \"demo\"\n[allocator]\nplugin = \"vpc-warm-pool\"\n[tagger]\nplugin = \"cluster-tags\"\n{}{}",
        plugin_entry(
            "vpc-warm-pool",
            "allocator",
            "[plugins.grants]\npool-view = {}\nlog = {}\neni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }\n",
        ),
        plugin_entry(
            "cluster-tags",
            "tagger",
            "tag_keys = [\"wasmcni.io/cluster\", \"wasmcni.io/instance-id\", \"wasmcni.io/created-at\", \"team\"]\n[plugins.grants]\nclock = {}\nlog = {}\n[plugins.config]\n\"tag.team\" = \"platform\"\n",
        ),
    );
    let mut ec2 = ec2;
    let config = ec2.config("reconcile_interval_ms = 1000\n", &plugins);
    ec2.node.write_config(&config);
    audit(&mut failures, &ec2.node.config_path());

    let started = Instant::now();
    ec2.node.start_daemon();
    let chain = wasmcni_chain(&ec2.node, "wasmcni-ec2-demo");
    let ready = wait(Duration::from_secs(30), || ec2.node.status(&chain).is_ok());
    check(
        &mut failures,
        &format!(
            "STATUS ready once the warm pool is filled ({:?})",
            started.elapsed()
        ),
        ready,
    );
    show_enis(&ec2);

    println!("== CNI ADD for eight pods: five fill the primary ENI, the pool grows a second");
    let mut pods = Vec::new();
    for i in 0..8 {
        let (ns, attachment) = web_pod("demo", "ec2demo", i);
        let t = Instant::now();
        match ec2.node.add(&chain, &attachment) {
            Ok(result) => {
                println!("  ADD web-{i}: {} in {:?}", pod_ip(&result), t.elapsed());
                pods.push((ns, attachment, result));
            }
            Err(e) => {
                println!("  ADD web-{i} failed: {e}");
                failures += 1;
            }
        }
    }
    show_enis(&ec2);
    let second: Vec<String> = ec2.eni_addresses(1).iter().map(|a| a.to_string()).collect();
    let (on_second, on_primary): (Vec<_>, Vec<_>) = pods
        .iter()
        .partition(|(_, _, r)| second.contains(&pod_ip(r)));
    check(
        &mut failures,
        &format!(
            "{} pods on the primary ENI, {} on the second",
            on_primary.len(),
            on_second.len()
        ),
        on_primary.len() == 5 && on_second.len() == 3,
    );
    let (tags, delete_on_termination) = ec2.eni_tags(1);
    check(
        &mut failures,
        &format!("the second ENI carries the daemon's and cluster-tags' tags ({} tags) and DeleteOnTermination", tags.len()),
        tags.get("team").map(String::as_str) == Some("platform")
            && tags.contains_key("node.k8s.amazonaws.com/instance_id")
            && delete_on_termination,
    );
    let table = ec2.node.node.ip(&["route", "show", "table", "2"]);
    println!(
        "  ip route show table 2: {}",
        table.trim().replace('\n', "; ")
    );
    check(
        &mut failures,
        "eth1 has its routing table (device 1 + 1) via the subnet's gateway",
        table.contains("default via") && table.contains("eth1"),
    );
    if let (Some(a), Some(b)) = (on_second.first(), on_primary.first()) {
        check(
            &mut failures,
            &format!(
                "ping {} (second ENI) -> {} (primary ENI)",
                pod_ip(&a.2),
                pod_ip(&b.2)
            ),
            ping(&a.0, &pod_ip(&b.2)),
        );
        let internet = ec2.route_to_internet();
        let seen = seen_outside(&ec2, &a.0, std::net::SocketAddr::from((internet, 7000)));
        check(
            &mut failures,
            &format!("TCP {} -> {internet} (outside the VPC) is seen from {seen:?}: SNAT to the primary ENI", pod_ip(&a.2)),
            seen.as_deref() == Some(ec2.primary_ip.to_string().as_str()),
        );
    }

    del_all(&mut failures, &ec2, &chain, pods);
    print_audit(&ec2, "what the plugins asked the daemon to do", "eni-ops");
    println!(
        "== EC2 calls made: {} (the emulator's request log)",
        ec2.emulator.request_log().len()
    );
    check(
        &mut failures,
        "no ENI left unattached",
        ec2.unattached_enis().is_empty(),
    );
    drop(ec2);
    println!("== cleaned up: daemon and emulator stopped, namespaces removed");
    failures
}

pub(crate) fn run_ipv6() -> u32 {
    let mut failures = 0u32;
    println!("== wasmcni demo, EC2 IPv6 prefix mode: an emulated m5.large in IPv6 subnets");
    let mut ec2 = Ec2Node::start("m5.large", |s| s.with_ipv6());
    println!(
        "  instance {} primary ENI {} in {}",
        ec2.instance_id, ec2.primary_eni, ec2.subnet_id
    );
    let policy = format!(
        "[policy]\nplugins = [\"namespace-guard\"]\n{}",
        plugin_entry(
            "namespace-guard",
            "policy",
            "[plugins.grants]\nlog = {}\nnetlink = { mtu = [1280, 9001] }\n[plugins.config]\nallow_namespaces = \"demo\"\n\"mtu.demo\" = \"1500\"\n",
        ),
    );
    let config = ec2.config("ip_family = \"ipv6\"\n", &policy);
    ec2.node.write_config(&config);
    audit(&mut failures, &ec2.node.config_path());
    ec2.node.start_daemon();
    let chain = wasmcni_chain(&ec2.node, "wasmcni-ec2-ipv6-demo");
    check(
        &mut failures,
        "STATUS ready",
        ec2.node.status(&chain).is_ok(),
    );
    let prefixes = ec2.ipv6_prefixes();
    check(
        &mut failures,
        &format!("one /80 delegated to the primary ENI: {prefixes:?}"),
        prefixes.len() == 1 && prefixes[0].prefix_len() == 80,
    );
    let internet = ec2.route_ipv6();

    println!("== CNI ADD for three pods");
    let mut pods = Vec::new();
    for i in 0..3 {
        let (ns, attachment) = web_pod("demo6", "ec2v6demo", i);
        let t = Instant::now();
        match ec2.node.add(&chain, &attachment) {
            Ok(result) => {
                println!(
                    "  ADD web-{i}: {} gateway {} in {:?}",
                    pod_ip(&result),
                    result["ips"][0]["gateway"].as_str().unwrap_or("?"),
                    t.elapsed()
                );
                pods.push((ns, attachment, result));
            }
            Err(e) => {
                println!("  ADD web-{i} failed: {e}");
                failures += 1;
            }
        }
    }
    let in_prefix = pods.iter().all(|(_, _, r)| {
        pod_ip(r)
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| prefixes.iter().any(|p| p.contains(&ip)))
    });
    check(
        &mut failures,
        "every pod's /128 lies in the node's /80",
        in_prefix,
    );
    check(
        &mut failures,
        "no secondary ENI, no EC2 call per pod",
        ec2.attached_enis().len() == 1,
    );
    if let [a, b, ..] = pods.as_slice() {
        check(
            &mut failures,
            &format!("ping {} -> {}", pod_ip(&a.2), pod_ip(&b.2)),
            ping(&a.0, &pod_ip(&b.2)),
        );
        let seen = seen_outside(&ec2, &a.0, std::net::SocketAddr::new(internet.into(), 7000));
        check(
            &mut failures,
            &format!(
                "TCP {} -> [{internet}] (outside the VPC) is seen from {seen:?}: the pod's own address, no SNAT",
                pod_ip(&a.2)
            ),
            seen.as_deref() == Some(pod_ip(&a.2).as_str()),
        );
    }
    print_audit(&ec2, "what namespace-guard was asked", "evaluate");
    del_all(&mut failures, &ec2, &chain, pods);
    println!(
        "== EC2 calls made: {} (the emulator's request log)",
        ec2.emulator.request_log().len()
    );
    drop(ec2);
    println!("== cleaned up: daemon and emulator stopped, namespaces removed");
    failures
}

pub(crate) fn run_dual_stack() -> u32 {
    let mut failures = 0u32;
    println!("== wasmcni demo, EC2 dual stack: an emulated m5.large in IPv6 subnets");
    let mut ec2 = Ec2Node::start("m5.large", |s| s.with_ipv6());
    println!(
        "  instance {} primary ENI {} ({}) in {} {}",
        ec2.instance_id, ec2.primary_eni, ec2.primary_ip, ec2.subnet_id, ec2.subnet_cidr
    );
    let plugins = format!(
        "[allocator]\nplugin = \"vpc-warm-pool\"\n[policy]\nplugins = [\"namespace-guard\"]\n{}{}",
        plugin_entry(
            "vpc-warm-pool",
            "allocator",
            "[plugins.grants]\npool-view = {}\nlog = {}\neni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }\n",
        ),
        plugin_entry(
            "namespace-guard",
            "policy",
            "[plugins.grants]\nlog = {}\nnetlink = { mtu = [1280, 9001] }\n[plugins.config]\nallow_namespaces = \"demo\"\n",
        ),
    );
    let config = ec2.config(
        "ip_family = \"dual\"\nreconcile_interval_ms = 1000\n",
        &plugins,
    );
    ec2.node.write_config(&config);
    audit(&mut failures, &ec2.node.config_path());
    let started = Instant::now();
    ec2.node.start_daemon();
    let chain = wasmcni_chain(&ec2.node, "wasmcni-ec2-dual-stack-demo");
    let ready = wait(Duration::from_secs(30), || ec2.node.status(&chain).is_ok());
    check(
        &mut failures,
        &format!(
            "STATUS ready once the IPv4 warm pool is filled and the /80 delegated ({:?})",
            started.elapsed()
        ),
        ready,
    );
    let prefixes = ec2.ipv6_prefixes();
    check(
        &mut failures,
        &format!("one /80 delegated to the primary ENI: {prefixes:?}"),
        prefixes.len() == 1 && prefixes[0].prefix_len() == 80,
    );
    show_enis(&ec2);
    let internet_v6 = ec2.route_ipv6();
    let internet_v4 = ec2.route_to_internet();

    println!("== CNI ADD for three pods: one address of each family each");
    let mut pods = Vec::new();
    for i in 0..3 {
        let (ns, attachment) = web_pod("demods", "ec2dsdemo", i);
        let t = Instant::now();
        match ec2.node.add(&chain, &attachment) {
            Ok(result) => {
                let (v4, v6) = (family_ip(&result, false), family_ip(&result, true));
                println!("  ADD web-{i}: {v4} and {v6} in {:?}", t.elapsed());
                pods.push((ns, attachment, result));
            }
            Err(e) => {
                println!("  ADD web-{i} failed: {e}");
                failures += 1;
            }
        }
    }
    let on_enis: Vec<String> = ec2
        .attached_enis()
        .iter()
        .flat_map(|(device, ..)| ec2.eni_addresses(*device))
        .map(|a| a.to_string())
        .collect();
    check(
        &mut failures,
        "every pod's IPv4 address is an ENI's secondary address, its /128 of the node's /80",
        pods.iter().all(|(_, _, r)| {
            on_enis.contains(&family_ip(r, false))
                && family_ip(r, true)
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| prefixes.iter().any(|p| p.contains(&ip)))
        }),
    );
    if let [a, b, ..] = pods.as_slice() {
        for v6 in [false, true] {
            let to = family_ip(&b.2, v6);
            check(
                &mut failures,
                &format!("ping {} -> {to}", family_ip(&a.2, v6)),
                ping(&a.0, &to),
            );
        }
        let seen = seen_outside(
            &ec2,
            &a.0,
            std::net::SocketAddr::new(internet_v4.into(), 7000),
        );
        check(
            &mut failures,
            &format!(
                "TCP {} -> {internet_v4} (outside the VPC) is seen from {seen:?}: SNAT to the primary ENI",
                family_ip(&a.2, false)
            ),
            seen.as_deref() == Some(ec2.primary_ip.to_string().as_str()),
        );
        let seen = seen_outside(
            &ec2,
            &a.0,
            std::net::SocketAddr::new(internet_v6.into(), 7001),
        );
        check(
            &mut failures,
            &format!(
                "TCP {} -> [{internet_v6}] (outside the VPC) is seen from {seen:?}: the pod's own address, no SNAT",
                family_ip(&a.2, true)
            ),
            seen.as_deref() == Some(family_ip(&a.2, true).as_str()),
        );
    }
    print_audit(
        &ec2,
        "what namespace-guard was asked (both addresses)",
        "evaluate",
    );
    del_all(&mut failures, &ec2, &chain, pods);
    println!(
        "== EC2 calls made: {} (the emulator's request log)",
        ec2.emulator.request_log().len()
    );
    drop(ec2);
    println!("== cleaned up: daemon and emulator stopped, namespaces removed");
    failures
}

/// A result's address of one family, without its prefix length ("-" when it has none).
fn family_ip(result: &serde_json::Value, v6: bool) -> String {
    wasmcni_harness::campaign::pod_ip_of_family(result, v6).unwrap_or_else(|| "-".into())
}

/// The source address a server outside the VPC at `addr` sees a TCP connection from `pod`
/// come from.
fn seen_outside(ec2: &Ec2Node, pod: &NetNs, addr: std::net::SocketAddr) -> Option<String> {
    let server = EchoServer::start(&ec2.node.outside, addr, PEER_ADDRESS);
    tcp_fetch(pod, server.addr)
}

/// DEL for every pod, each checked; their namespaces go with them.
fn del_all(
    failures: &mut u32,
    ec2: &Ec2Node,
    chain: &Conflist,
    pods: Vec<(NetNs, Attachment, serde_json::Value)>,
) {
    println!("== CNI DEL for every pod");
    for (ns, attachment, result) in pods {
        check(
            failures,
            &format!("DEL {}", pod_ip(&result)),
            ec2.node.del(chain, &attachment, Some(&result)).is_ok(),
        );
        drop(ns);
    }
}

/// Prints the audit log's entries for plugin calls named `call`.
fn print_audit(ec2: &Ec2Node, heading: &str, call: &str) {
    let audit_log =
        std::fs::read_to_string(ec2.node.state_dir().join("plugin-audit.log")).unwrap_or_default();
    println!("== {heading} (plugin-audit.log, {call})");
    let needle = format!("\"{call}\"");
    for line in audit_log.lines().filter(|l| l.contains(&needle)) {
        println!("  {line}");
    }
}

/// The conflist the demo's runtime calls: wasmcni alone, on this node's daemon.
pub(crate) fn wasmcni_chain(node: &TestNode, name: &str) -> Conflist {
    Conflist {
        name: name.into(),
        cni_version: "1.1.0".into(),
        plugins: vec![
            json!({"type": "wasmcni", "capabilities": {"io.kubernetes.cri.pod-annotations": true}, "daemonSocket": node.socket().display().to_string(), "logFile": node.shim_log().display().to_string()}),
        ],
    }
}

/// Pod `demo/web-<i>` in a new namespace named after `ns_prefix`.
pub(crate) fn web_pod(ns_prefix: &str, container_prefix: &str, i: usize) -> (NetNs, Attachment) {
    let ns = NetNs::new(ns_prefix);
    let attachment = Attachment {
        container_id: format!("{container_prefix}-{}", ns.name()),
        netns: ns.path(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "demo".into()),
            ("K8S_POD_NAME".into(), format!("web-{i}")),
        ],
        capability_args: Default::default(),
    };
    (ns, attachment)
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn show_enis(ec2: &Ec2Node) {
    println!(
        "  {:<7} {:<22} {:>9} {:>9}",
        "device", "ENI", "IPs", "prefixes"
    );
    for (device, id, ips, prefixes) in ec2.attached_enis() {
        println!("  {device:<7} {id:<22} {ips:>9} {prefixes:>9}");
    }
}
