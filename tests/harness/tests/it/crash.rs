//! SIGKILL the daemon at random moments during a burst of concurrent ADDs and DELs, restart
//! it, and check the invariants (CI's short crash campaign; `benches/crash_campaign.rs` runs
//! 1000 kills, also against EC2 with faults); and damage in the datastore's log.

use std::time::Duration;

use wasmcni_datastore::{Datastore, WalOptions};
use wasmcni_harness::campaign::{self, Campaign};
use wasmcni_harness::node::TestNode;

use crate::support::{pod, pod_ip, wasmcni_only};

#[test]
fn sigkill_during_concurrent_adds_and_dels_loses_nothing() {
    let mut node = TestNode::new("10.88.0.0/26");
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let campaign = Campaign {
        kills: 30,
        workers: 4,
        pods_per_worker: 3,
        check_every: 10,
        seed: 0x2545_f491_4f6c_dd1d,
        between_kills_ms: (30, 280),
    };
    let outcome = campaign::run(&node, &chain, &campaign);
    wasmcni_harness::report(&format!(
        "crash campaign: {} SIGKILLs during {} CNI operations ({} ADDs failed under a kill), {} checks, {} pods attached at the end",
        outcome.kills, outcome.operations, outcome.failed_adds, outcome.checks, outcome.attached_at_end
    ));
    assert!(
        outcome.violations.is_empty(),
        "{} violations:\n{}\n{}",
        outcome.violations.len(),
        outcome.violations.join("\n"),
        node.daemon_log_text()
    );
    assert_eq!(outcome.kills, 30);
    assert!(outcome.operations > 60, "{outcome:?}");
    // The daemon's own record agrees: nothing held once every pod is gone.
    node.stop_daemon("TERM");
    let (store, _) = Datastore::open(&node.state_dir(), WalOptions::default())
        .expect("open the daemon's datastore");
    assert_eq!(store.allocations().count(), 0);
    drop(store);
    node.start_daemon();
}

/// Damage in the middle of the datastore's log costs the records it hit, and the node's routed
/// veths stand in for them: the pod whose reservation was lost keeps its veth and its traffic,
/// and its address is given to nobody else until its namespace is gone.
#[test]
fn a_damaged_log_line_loses_a_record_but_never_the_pod_or_its_address() {
    let mut node = TestNode::new("10.88.0.0/24");
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let mut lost = pod("lost");
    let kept = pod("kept");
    let lost_result = node.add(&chain, &lost.attachment).expect("ADD");
    let kept_result = node.add(&chain, &kept.attachment).expect("ADD");
    let (lost_ip, kept_ip) = (pod_ip(&lost_result), pod_ip(&kept_result));
    let lost_veth = lost_result["interfaces"][0]["name"]
        .as_str()
        .expect("veth")
        .to_owned();
    // A crash keeps the records in the log (a clean stop would compact them into a snapshot).
    node.stop_daemon("KILL");

    // Bit rot in the first record: the lost pod's reservation.
    let log = node.state_dir().join("wal-0.log");
    let mut bytes = std::fs::read(&log).expect("the log");
    let first = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()])
        .into_owned();
    assert!(
        first.contains(&lost_ip) && first.contains("reserve"),
        "{first}"
    );
    bytes[40] ^= 0x04;
    std::fs::write(&log, &bytes).expect("write the log");

    node.start_daemon();
    let daemon_log = node.daemon_log_text();
    assert!(daemon_log.contains("lost to damage"), "{daemon_log}");
    assert!(
        daemon_log.contains("kept a routed wasmcni veth no record owns"),
        "{daemon_log}"
    );
    let set_aside = std::fs::read_dir(node.state_dir().join("damaged"))
        .expect("damaged/")
        .count();
    assert_eq!(set_aside, 1);
    // The pod is still there and reachable, beside the one the store kept.
    for ip in [&lost_ip, &kept_ip] {
        let ping = node.node.exec("ping", &["-c", "1", "-W", "2", ip]);
        assert!(
            ping.status.success(),
            "{ip} unreachable after recovery: {ping:?}"
        );
    }
    assert!(node.node.try_ip(&["link", "show", &lost_veth]));
    // Nobody else gets its address, even asking for it.
    let mut thief = pod("thief");
    thief.attachment.args.push(("IP".into(), lost_ip.clone()));
    let refused = node
        .add(&chain, &thief.attachment)
        .expect_err("the lost pod's address is held");
    assert!(
        refused.stdout.contains("the datastore does not record"),
        "{refused:?}"
    );
    let others: Vec<String> = (0..4)
        .map(|n| {
            pod_ip(
                &node
                    .add(&chain, &pod(&format!("other{n}")).attachment)
                    .expect("ADD"),
            )
        })
        .collect();
    assert!(!others.contains(&lost_ip), "{others:?}");

    // The runtime deletes the pod's namespace (its DEL finds no record: nothing to undo); the
    // veth goes with it, and so does the hold, at the next start at the latest.
    node.del(&chain, &lost.attachment, Some(&lost_result))
        .expect("DEL");
    lost.ns.delete();
    assert!(node
        .node
        .link_gone_within(&lost_veth, Duration::from_secs(5)));
    node.crash_and_restart_daemon();
    let again = node
        .add(&chain, &thief.attachment)
        .expect("the address is free again");
    assert_eq!(pod_ip(&again), lost_ip);
}
