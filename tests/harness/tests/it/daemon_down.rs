//! The daemon is down: ADD asks the runtime to retry (code 11), DEL still succeeds and is
//! replayed when the daemon is back, STATUS says not available (code 50).

use serde_json::json;

use crate::support::{pod, pod_ip, running_node, wasmcni_only};

#[test]
fn add_retries_del_succeeds_and_is_replayed_on_restart() {
    let mut node = running_node();
    let chain = wasmcni_only(&node, "1.1.0");
    let p = pod("survivor");
    let result = node.add(&chain, &p.attachment).expect("ADD");
    let ip = pod_ip(&result);
    let veth = result["interfaces"][0]["name"].as_str().unwrap().to_owned();

    node.stop_daemon("TERM");
    let q = pod("latecomer");
    let refused = node
        .add(&chain, &q.attachment)
        .expect_err("ADD without a daemon");
    let error: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(error["cniVersion"], json!("1.1.0"));
    assert_eq!(error["code"], json!(11), "{error}");
    let status = node.status(&chain).expect_err("STATUS without a daemon");
    let error: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(error["code"], json!(50), "{error}");

    // DEL while the daemon is down: success, and nothing removed yet.
    node.del(&chain, &p.attachment, Some(&result))
        .expect("DEL must succeed without the daemon");
    assert!(node.node.try_ip(&["link", "show", &veth]));

    // Back up: the recorded DEL is replayed before the first request is served.
    node.start_daemon();
    assert!(
        node.node
            .link_gone_within(&veth, crate::support::VETH_GONE_WITHIN),
        "the pending DEL was not replayed"
    );
    let rules = node.node.ip(&["-4", "rule", "show"]);
    assert!(!rules.contains(&format!("to {ip} ")), "{rules}");
    assert!(
        node.daemon_log_text().contains("replayed_dels: 1,"),
        "{}",
        node.daemon_log_text()
    );
}

#[test]
fn a_pod_deleted_while_the_daemon_was_down_is_released_and_a_live_one_kept() {
    let mut node = running_node();
    let chain = wasmcni_only(&node, "1.0.0");
    let mut gone = pod("gone");
    let live = pod("live");
    let gone_result = node.add(&chain, &gone.attachment).expect("ADD gone");
    let live_result = node.add(&chain, &live.attachment).expect("ADD live");
    node.stop_daemon("KILL");
    // What another CNI left at the same names and priorities (AWS VPC CNI during a migration)
    // carries no wasmcni mark and must survive recovery.
    node.node.ip(&[
        "link",
        "add",
        "eni0f0f0f0f0f0",
        "type",
        "veth",
        "peer",
        "name",
        "foreignpeer",
    ]);
    node.node.ip(&[
        "rule",
        "add",
        "to",
        "10.99.9.9",
        "lookup",
        "main",
        "priority",
        "512",
    ]);
    let gone_veth = gone_result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    gone.ns.delete();
    // The kernel deletes the pod's veth with its namespace, asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.node.try_ip(&["link", "show", &gone_veth]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the kernel kept {gone_veth}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node.start_daemon();
    assert!(
        node.node.try_ip(&["link", "show", "eni0f0f0f0f0f0"]),
        "recovery removed a foreign veth"
    );
    let foreign_rules = node.node.ip(&["-4", "rule", "show", "priority", "512"]);
    assert!(
        foreign_rules.contains("to 10.99.9.9 lookup main"),
        "recovery removed a foreign rule: {foreign_rules}"
    );
    // wasmcni's own objects carry its marks.
    let live_veth = live_result["interfaces"][0]["name"].as_str().unwrap();
    assert!(node
        .node
        .ip(&["link", "show", live_veth])
        .contains("alias wasmcni"));
    let marked = node
        .node
        .ip(&["-4", "rule", "show", "priority", "512", "protocol", "87"]);
    assert!(
        marked.contains(&format!("to {} ", pod_ip(&live_result))),
        "{marked}"
    );
    let gone_ip = pod_ip(&gone_result);
    let rules = node.node.ip(&["-4", "rule", "show"]);
    assert!(
        !rules.contains(&format!("to {gone_ip} ")),
        "stale rule kept: {rules}"
    );
    node.check(&chain, &live.attachment, &live_result)
        .expect("the live pod keeps its address and routes");
}
