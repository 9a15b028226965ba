//! A pod with two networks, as Multus (`net1` from a NetworkAttachmentDefinition) and podman
//! (`--network a,b`) build it: Debian's ptp on one interface, wasmcni on the other, in both
//! orders. Each is reachable, CHECK passes for each, and a DEL of one leaves the other whole.

use serde_json::{json, Value};
use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::node::TestNode;
use wasmcni_harness::traffic::{tcp_fetch, EchoServer};

use crate::support::{pod, pod_ip, running_node, VETH_GONE_WITHIN};

/// Debian's ptp with host-local, its own data directory; `routes` as its IPAM should add.
fn ptp(dir: &tempfile::TempDir, routes: Value) -> Conflist {
    Conflist {
        name: "ptp-net".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![json!({
            "type": "ptp",
            "ipam": {
                "type": "host-local",
                "subnet": "10.99.0.0/16",
                "dataDir": dir.path(),
                "routes": routes,
            }
        })],
    }
}

/// wasmcni with the route keys `keys` added to its plugin object.
fn wasmcni(node: &TestNode, keys: Value) -> Conflist {
    let mut plugin = node.wasmcni_plugin();
    plugin
        .as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    Conflist {
        name: "wasmcni-net".into(),
        cni_version: "1.1.0".into(),
        plugins: vec![plugin],
    }
}

fn on(attachment: &Attachment, ifname: &str) -> Attachment {
    Attachment {
        ifname: ifname.into(),
        ..attachment.clone()
    }
}

/// Serves on `ip:80` in the pod and fetches it from the node.
fn reachable(node: &TestNode, pod_ns: &wasmcni_harness::netns::NetNs, ip: &str) -> bool {
    let addr = format!("{ip}:80").parse().unwrap();
    let _server = EchoServer::start(pod_ns, addr, "hello");
    tcp_fetch(&node.node, addr).as_deref() == Some("hello")
}

#[test]
fn wasmcni_as_net1_beside_ptp_keeps_ptps_default_route_and_each_del_leaves_the_other() {
    let node = running_node();
    let host_local = tempfile::tempdir().unwrap();
    let first = ptp(&host_local, json!([{"dst": "0.0.0.0/0"}]));
    // As a Multus NetworkAttachmentDefinition would say it: no default route of its own
    // (the pod has ptp's), and source-based routing for its address in table 101.
    let second = wasmcni(&node, json!({"routeTable": 101}));
    let mut p = pod("multi");
    let eth0 = on(&p.attachment, "eth0");
    let net1 = on(&p.attachment, "net1");
    let ptp_result = node.add(&first, &eth0).expect("ptp ADD on eth0");
    let ours = node
        .add(&second, &net1)
        .unwrap_or_else(|f| panic!("wasmcni ADD on net1: {f}\n{}", node.daemon_log_text()));
    let (ptp_ip, our_ip) = (pod_ip(&ptp_result), pod_ip(&ours));
    assert_eq!(ours["interfaces"][1]["name"], "net1", "{ours}");

    // The pod's default route is still ptp's; wasmcni's is in table 101 with the rule.
    let main = p.ns.ip(&["-4", "route", "show", "default"]);
    assert!(
        main.contains("dev eth0") && !main.contains("net1"),
        "{main}"
    );
    let table = p.ns.ip(&["-4", "route", "show", "table", "101"]);
    assert!(
        table.contains("default via 169.254.1.1 dev net1"),
        "{table}"
    );
    let rules = p.ns.ip(&["-4", "rule", "show"]);
    assert!(
        rules.contains(&format!("from {our_ip} lookup 101")),
        "{rules}"
    );
    assert!(reachable(&node, &p.ns, &ptp_ip), "ptp's {ptp_ip}");
    assert!(reachable(&node, &p.ns, &our_ip), "wasmcni's {our_ip}");
    node.check(&second, &net1, &ours).expect("CHECK net1");

    // CHECK names a removed route of the second interface.
    p.ns.ip(&["-4", "route", "del", "default", "table", "101"]);
    let broken = node
        .check(&second, &net1, &ours)
        .expect_err("CHECK finds the route gone");
    assert!(
        broken
            .stdout
            .contains("default route via 169.254.1.1 dev net1 table 101 in the pod is missing"),
        "{broken}"
    );
    p.ns.ip(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "net1",
        "onlink",
        "table",
        "101",
    ]);
    node.check(&second, &net1, &ours).expect("CHECK net1 again");

    // DEL of wasmcni's attachment leaves ptp's whole, and no rule into an empty table.
    node.del(&second, &net1, Some(&ours)).expect("DEL net1");
    assert!(p.ns.link_gone_within("net1", VETH_GONE_WITHIN));
    let rules = p.ns.ip(&["-4", "rule", "show"]);
    assert!(!rules.contains("lookup 101"), "{rules}");
    assert!(
        reachable(&node, &p.ns, &ptp_ip),
        "ptp's {ptp_ip} after DEL net1"
    );
    node.del(&first, &eth0, Some(&ptp_result)).expect("ptp DEL");
    p.ns.delete();
}

#[test]
fn ptp_as_net1_beside_wasmcni_and_wasmcni_del_leaves_ptp_working() {
    let node = running_node();
    let host_local = tempfile::tempdir().unwrap();
    let first = wasmcni(&node, json!({}));
    // ptp's IPAM routes only its own subnet: the second network takes no default route.
    let second = ptp(&host_local, json!([]));
    let mut p = pod("reverse");
    let eth0 = on(&p.attachment, "eth0");
    let net1 = on(&p.attachment, "net1");
    let ours = node.add(&first, &eth0).expect("wasmcni ADD on eth0");
    let ptp_result = node
        .add(&second, &net1)
        .unwrap_or_else(|f| panic!("ptp ADD on net1: {f}"));
    let (our_ip, ptp_ip) = (pod_ip(&ours), pod_ip(&ptp_result));
    assert_eq!(ours["routes"][0]["dst"], "0.0.0.0/0", "{ours}");
    assert!(reachable(&node, &p.ns, &our_ip), "wasmcni's {our_ip}");
    assert!(reachable(&node, &p.ns, &ptp_ip), "ptp's {ptp_ip}");
    node.check(&first, &eth0, &ours).expect("CHECK eth0");

    node.del(&first, &eth0, Some(&ours)).expect("DEL eth0");
    assert!(p.ns.link_gone_within("eth0", VETH_GONE_WITHIN));
    assert!(
        reachable(&node, &p.ns, &ptp_ip),
        "ptp's {ptp_ip} after DEL eth0"
    );
    node.del(&second, &net1, Some(&ptp_result))
        .expect("ptp DEL");
    p.ns.delete();
}

#[test]
fn a_second_wasmcni_interface_beside_the_first_takes_no_default_route() {
    // podman's `--network a,b` with wasmcni twice, or two NetworkAttachmentDefinitions.
    let node = running_node();
    let list = wasmcni(&node, json!({}));
    let p = pod("twice");
    let eth0 = on(&p.attachment, "eth0");
    let eth1 = on(&p.attachment, "eth1");
    let first = node.add(&list, &eth0).expect("ADD eth0");
    let second = node
        .add(&list, &eth1)
        .unwrap_or_else(|f| panic!("ADD eth1: {f}\n{}", node.daemon_log_text()));
    assert!(second.get("routes").is_none(), "{second}");
    let routes = p.ns.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0") && !routes.contains("dev eth1"),
        "{routes}"
    );
    // Each answers on its own interface: the pod's replies to the node leave through eth0,
    // which reaches the node too.
    assert!(reachable(&node, &p.ns, &pod_ip(&first)));
    node.check(&list, &eth0, &first).expect("CHECK eth0");
    node.check(&list, &eth1, &second).expect("CHECK eth1");
    node.del(&list, &eth1, Some(&second)).expect("DEL eth1");
    node.check(&list, &eth0, &first)
        .expect("CHECK eth0 after DEL eth1");
    node.del(&list, &eth0, Some(&first)).expect("DEL eth0");
}
