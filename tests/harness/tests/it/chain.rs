//! wasmcni chained with Debian's reference plugins, run the way libcni runs a conflist.

use serde_json::json;
use wasmcni_harness::chain::Conflist;
use wasmcni_harness::node::NODE_IP;
use wasmcni_harness::traffic::{tcp_fetch, EchoServer};

use crate::support::{pod, pod_ip, running_node};

#[test]
fn wasmcni_portmap_bandwidth_chain_serves_a_host_port() {
    let node = running_node();
    // Debian's peers speak CNI <= 1.0.0; portmap 1.1.1's CHECK is broken for IPv4-only pods,
    // so the list disables CHECK as AWS's own conflist does.
    let chain = Conflist {
        name: "wasmcni-chain".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![
            node.wasmcni_plugin(),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        ],
    };
    let mut p = pod("web");
    // containerd (go-cni) sends PascalCase capability keys; podman camelCase. Use containerd's.
    p.attachment.capability_args.insert(
        "portMappings".into(),
        json!([{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]),
    );
    p.attachment.capability_args.insert(
        "bandwidth".into(),
        json!({"IngressRate": 100_000_000u64, "IngressBurst": 1_000_000u64, "EgressRate": 100_000_000u64, "EgressBurst": 1_000_000u64}),
    );
    let result = node
        .add(&chain, &p.attachment)
        .unwrap_or_else(|f| panic!("chain ADD: {f}\n{}", node.daemon_log_text()));
    let ip = pod_ip(&result);
    // portmap and bandwidth passed wasmcni's result through; bandwidth added its ifb.
    assert_eq!(
        result["ips"][0]["address"],
        json!(format!("{ip}/32")),
        "{result}"
    );
    assert!(
        result["interfaces"].as_array().unwrap().len() >= 2,
        "{result}"
    );

    let _server = EchoServer::start(
        &p.ns,
        format!("{ip}:80").parse().unwrap(),
        "served through portmap",
    );
    let via_host_port = tcp_fetch(&node.outside, format!("{NODE_IP}:8080").parse().unwrap());
    assert_eq!(via_host_port.as_deref(), Some("served through portmap"));
    let qdisc = node.node.ip(&["link", "show"]);
    assert!(
        qdisc.contains("bwp"),
        "bandwidth's ifb device is missing: {qdisc}"
    );

    node.del(&chain, &p.attachment, Some(&result))
        .expect("chain DEL");
    assert_eq!(
        tcp_fetch(&node.outside, format!("{NODE_IP}:8080").parse().unwrap()),
        None,
        "host port still mapped after DEL"
    );
    p.ns.delete();
}

#[test]
fn gc_releases_attachments_missing_from_the_valid_list_and_status_reports_readiness() {
    let node = running_node();
    let chain = crate::support::wasmcni_only(&node, "1.1.0");
    let keep = pod("keep");
    let drop = pod("drop");
    let kept = node.add(&chain, &keep.attachment).expect("ADD keep");
    let dropped = node.add(&chain, &drop.attachment).expect("ADD drop");
    let dropped_veth = dropped["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    node.status(&chain).expect("STATUS with free addresses");
    let valid = vec![(keep.attachment.container_id.clone(), "eth0".to_owned())];
    let failures = node.gc(&chain, &valid);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        node.node
            .link_gone_within(&dropped_veth, crate::support::VETH_GONE_WITHIN),
        "GC left the stale veth"
    );
    node.check(&chain, &keep.attachment, &kept)
        .expect("GC kept the valid attachment");
}
