//! ADD / CHECK / DEL on real namespaces, and what the pod and the node look like after each.

use serde_json::json;
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer};

use crate::support::{assert_detached_then_gone, pod, pod_ip, running_node, wasmcni_only};

#[test]
fn add_builds_the_vpc_cni_data_path_and_pods_talk() {
    let node = running_node();
    let chain = wasmcni_only(&node, "1.0.0");
    let a = pod("alpha");
    let b = pod("beta");
    let result_a = node.add(&chain, &a.attachment).expect("ADD alpha");
    let result_b = node.add(&chain, &b.attachment).expect("ADD beta");
    let ip_a = pod_ip(&result_a);
    let ip_b = pod_ip(&result_b);
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.starts_with("10.88.0."), "{result_a}");

    // The result: host veth first, pod interface second with its sandbox, /32 on interface 1.
    assert_eq!(result_a["cniVersion"], json!("1.0.0"));
    let host_veth = result_a["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        host_veth.starts_with("eni") && host_veth.len() == 14,
        "{host_veth}"
    );
    assert_eq!(result_a["interfaces"][1]["name"], json!("eth0"));
    assert_eq!(result_a["interfaces"][1]["sandbox"], json!(a.ns.path()));
    assert_eq!(result_a["ips"][0]["address"], json!(format!("{ip_a}/32")));
    assert!(
        result_a["ips"][0].get("version").is_none(),
        "1.0.0 results carry no ips[].version"
    );

    // Pod side, as VPC CNI builds it.
    let addr = a.ns.ip(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {ip_a}/32")), "{addr}");
    let routes = a.ns.ip(&["-4", "route", "show"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default via 169.254.1.1 dev eth0")),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("169.254.1.1 dev eth0") && l.contains("scope link")),
        "{routes}"
    );
    let host_mac = result_a["interfaces"][0]["mac"].as_str().unwrap();
    let neigh = a.ns.ip(&["neigh", "show", "169.254.1.1"]);
    assert!(
        neigh.contains(host_mac) && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    // Host side.
    let host_routes = node.node.ip(&["-4", "route", "show"]);
    assert!(host_routes.lines().any(|l| l.starts_with(&format!("{ip_a} dev {host_veth} ")) && l.contains("scope link")), "{host_routes}");
    let rules = node.node.ip(&["-4", "rule", "show"]);
    assert!(
        rules.contains(&format!("512:\tfrom all to {ip_a} lookup main")),
        "{rules}"
    );

    // Real packets: pod -> pod, node -> pod, and the outside world -> pod through the node.
    assert!(ping(&a.ns, &ip_b), "pod alpha cannot reach pod beta");
    assert!(ping(&node.node, &ip_a), "the node cannot reach pod alpha");
    let server = EchoServer::start(
        &b.ns,
        format!("{ip_b}:8080").parse().unwrap(),
        "hello from beta",
    );
    assert_eq!(
        tcp_fetch(&a.ns, server.addr).as_deref(),
        Some("hello from beta")
    );
    assert_eq!(
        tcp_fetch(&node.outside, server.addr).as_deref(),
        Some("hello from beta")
    );

    // CHECK passes, then DEL removes exactly what ADD made.
    node.check(&chain, &a.attachment, &result_a).expect("CHECK");
    node.del(&chain, &a.attachment, Some(&result_a))
        .expect("DEL");
    assert_detached_then_gone(&node.node, &host_veth, &ip_a);
    assert!(
        !a.ns.try_ip(&["link", "show", "eth0"]),
        "pod eth0 survived DEL"
    );
    let rules = node.node.ip(&["-4", "rule", "show"]);
    assert!(
        !rules.contains(&format!("to {ip_a} ")),
        "rule survived DEL: {rules}"
    );
}

#[test]
fn check_names_what_was_removed_by_hand() {
    let node = running_node();
    let chain = wasmcni_only(&node, "1.1.0");
    let p = pod("checked");
    let result = node.add(&chain, &p.attachment).expect("ADD");
    let ip = pod_ip(&result);
    let veth = result["interfaces"][0]["name"].as_str().unwrap().to_owned();

    node.node
        .ip(&["route", "del", &format!("{ip}/32"), "dev", &veth]);
    p.ns.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    let failure = node
        .check(&chain, &p.attachment, &result)
        .expect_err("CHECK must fail");
    let error: serde_json::Value = serde_json::from_str(&failure.stdout).unwrap();
    assert_eq!(error["code"], json!(104), "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("host route {ip}/32 dev {veth} is missing")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("address {ip}/32 on eth0 in the pod is missing")),
        "{msg}"
    );
    // Removing the address also took the routes through it; CHECK says so too.
    assert!(msg.contains("default route via 169.254.1.1"), "{msg}");
}

#[test]
fn del_twice_and_del_after_the_netns_is_gone_both_free_the_ip() {
    let node = running_node();
    let chain = wasmcni_only(&node, "1.0.0");
    let mut p = pod("ephemeral");
    let result = node.add(&chain, &p.attachment).expect("ADD");
    let ip = pod_ip(&result);

    // The runtime deletes the namespace first, then DELs with an empty CNI_NETNS (containerd's
    // second DEL), and again.
    p.ns.delete();
    let mut gone = p.attachment.clone();
    gone.netns = String::new();
    for _ in 0..2 {
        node.del(&chain, &gone, Some(&result))
            .expect("DEL must succeed");
    }
    let rules = node.node.ip(&["-4", "rule", "show"]);
    assert!(
        !rules.contains(&format!("to {ip} ")),
        "rule survived DEL: {rules}"
    );

    // The address is free again: fill the pool and find it handed out.
    let mut seen = false;
    let mut pods = Vec::new();
    for i in 0..254 {
        let q = pod(&format!("refill{i}"));
        let r = node.add(&chain, &q.attachment);
        match r {
            Ok(r) => {
                seen |= pod_ip(&r) == ip;
                pods.push(q);
            }
            Err(f) => {
                let error: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
                assert_eq!(
                    error["code"],
                    json!(101),
                    "pool exhaustion is code 101: {error}"
                );
                break;
            }
        }
        if seen {
            break;
        }
    }
    assert!(seen, "{ip} was never handed out again");
}

#[test]
fn add_without_del_is_refused_and_keeps_the_first_attachment() {
    let node = running_node();
    let chain = wasmcni_only(&node, "1.1.0");
    let p = pod("twice");
    let first = node.add(&chain, &p.attachment).expect("ADD");
    let second = node
        .add(&chain, &p.attachment)
        .expect_err("second ADD must fail");
    let error: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(error["code"], json!(103), "{error}");
    node.check(&chain, &p.attachment, &first)
        .expect("the first attachment is intact");
}

#[test]
fn a_requested_mac_is_set_on_the_pod_interface_and_a_multicast_one_refused() {
    let node = running_node();
    let chain = wasmcni_only(&node, "1.0.0");
    // What podman sends for `--mac-address`.
    let mut a = pod("mac");
    a.attachment
        .args
        .push(("MAC".into(), "02:aa:bb:cc:dd:01".into()));
    let result = node.add(&chain, &a.attachment).expect("ADD");
    assert_eq!(
        result["interfaces"][1]["mac"], "02:aa:bb:cc:dd:01",
        "{result}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&a.ns.ip(&["-j", "link", "show", "eth0"])).unwrap();
    assert_eq!(shown[0]["address"], "02:aa:bb:cc:dd:01", "{shown}");
    node.del(&chain, &a.attachment, Some(&result)).expect("DEL");

    let mut b = pod("multicast");
    b.attachment
        .args
        .push(("MAC".into(), "01:00:5e:00:00:01".into()));
    let refused = node
        .add(&chain, &b.attachment)
        .expect_err("a multicast MAC is refused");
    assert!(refused.stdout.contains("\"code\":7"), "{refused:?}");
    assert!(
        refused.stdout.contains("is a multicast MAC address"),
        "{refused:?}"
    );
    assert!(
        !b.ns.try_ip(&["link", "show", "eth0"]),
        "nothing was created in the pod"
    );
}

#[test]
fn an_add_racing_the_teardown_for_the_same_address_gets_it_only_after_the_old_veth_is_gone() {
    // DEL answers before the kernel has deleted the veth (~20 ms later); a pod that asks for
    // the address at once must wait for that deletion, every time.
    let node = running_node();
    let chain = wasmcni_only(&node, "1.1.0");
    const ADDRESS: &str = "10.88.0.123";
    let asking = |name: &str| {
        let mut p = pod(name);
        p.attachment.args.push(("IP".into(), ADDRESS.into()));
        p
    };
    let mut holder = asking("race0");
    let mut result = node.add(&chain, &holder.attachment).expect("first ADD");
    for round in 1..=10 {
        let old_veth = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
        node.del(&chain, &holder.attachment, Some(&result))
            .expect("DEL");
        let next = asking(&format!("race{round}"));
        result = node
            .add(&chain, &next.attachment)
            .unwrap_or_else(|f| panic!("round {round}: ADD for the drained address: {f}"));
        assert_eq!(pod_ip(&result), ADDRESS);
        assert!(
            !node.node.try_ip(&["link", "show", &old_veth]),
            "round {round}: {ADDRESS} was handed out while the old veth {old_veth} still existed"
        );
        let new_veth = result["interfaces"][0]["name"].as_str().unwrap();
        let routes = node
            .node
            .ip(&["-4", "route", "show", &format!("{ADDRESS}/32")]);
        let routes: Vec<&str> = routes.lines().collect();
        assert!(
            routes.len() == 1 && routes[0].starts_with(&format!("{ADDRESS} dev {new_veth} ")),
            "round {round}: {routes:?}"
        );
        assert!(
            ping(&node.node, ADDRESS),
            "round {round}: the new pod is unreachable"
        );
        holder = next;
    }
    node.del(&chain, &holder.attachment, Some(&result))
        .expect("last DEL");
}
