//! What a runtime asks of the pod interface, through the real shim and daemon: the `ips` and
//! `mac` capabilities (containerd, Multus) and `CNI_ARGS` `IP=` (podman's `--ip`). A requested
//! address is granted exactly or refused with its reason, never replaced by another.

use serde_json::{json, Value};
use wasmcni_harness::chain::{Conflist, PluginFailure};
use wasmcni_harness::traffic::{tcp_fetch, EchoServer};

use crate::support::{pod, pod_ip, running_node};

fn error_of(failure: &PluginFailure) -> Value {
    serde_json::from_str(&failure.stdout).unwrap_or_else(|_| panic!("{failure:?}"))
}

#[test]
fn a_requested_address_and_mac_are_the_pods_and_a_taken_or_foreign_address_is_refused() {
    let node = running_node();
    let mut plugin = node.wasmcni_plugin();
    // The conflist entry declares the capabilities, as for containerd or Multus.
    plugin["capabilities"] = json!({"ips": true, "mac": true});
    let chain = Conflist {
        name: "wasmcni-requested".into(),
        cni_version: "1.1.0".into(),
        plugins: vec![plugin],
    };

    let mut a = pod("ips");
    a.attachment
        .capability_args
        .insert("ips".into(), json!(["10.88.0.200/24"]));
    a.attachment
        .capability_args
        .insert("mac".into(), json!("02:aa:bb:cc:dd:02"));
    let result = node
        .add(&chain, &a.attachment)
        .unwrap_or_else(|f| panic!("ADD: {f:?}\n{}", node.daemon_log_text()));
    assert_eq!(pod_ip(&result), "10.88.0.200", "{result}");
    let shown: Value = serde_json::from_str(&a.ns.ip(&["-j", "addr", "show", "eth0"])).unwrap();
    assert_eq!(shown[0]["address"], "02:aa:bb:cc:dd:02", "{shown}");
    assert!(
        shown.to_string().contains("\"local\":\"10.88.0.200\""),
        "{shown}"
    );
    let addr = "10.88.0.200:80".parse().unwrap();
    let _server = EchoServer::start(&a.ns, addr, "static");
    assert_eq!(tcp_fetch(&node.node, addr).as_deref(), Some("static"));
    node.check(&chain, &a.attachment, &result).expect("CHECK");

    // podman's `--ip` for an address another pod holds, and for one outside the pool: refused
    // with the reason, and nothing is built in the pod.
    for (ip, code, reason) in [
        ("10.88.0.200", 108, "is held by attachment"),
        ("10.77.0.1", 108, "is outside the pool (10.88.0.0/24)"),
    ] {
        let mut b = pod("taken");
        b.attachment.args.push(("IP".into(), ip.into()));
        let refused = node
            .add(&chain, &b.attachment)
            .expect_err("a request that cannot be served is refused");
        let error = error_of(&refused);
        assert_eq!(error["code"], json!(code), "{error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("CNI_ARGS IP asks for {ip}, which {reason}")),
            "{msg}"
        );
        assert!(
            !b.ns.try_ip(&["link", "show", "eth0"]),
            "nothing in the pod"
        );
    }

    // Once the holder is gone, the next pod that asks for it gets it.
    node.del(&chain, &a.attachment, Some(&result)).expect("DEL");
    let mut c = pod("again");
    c.attachment.args.push(("IP".into(), "10.88.0.200".into()));
    let again = node.add(&chain, &c.attachment).expect("ADD after DEL");
    assert_eq!(pod_ip(&again), "10.88.0.200", "{again}");
    node.del(&chain, &c.attachment, Some(&again)).expect("DEL");
}
