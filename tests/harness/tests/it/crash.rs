//! SIGKILL the daemon at random moments during a burst of concurrent ADDs and DELs, restart
//! it, and check the invariants: no address twice, every pod that got a result keeps its
//! address and working routes, nothing leaked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmcni_datastore::{AllocationState, Datastore, WalOptions};
use wasmcni_harness::chain::Conflist;
use wasmcni_harness::node::TestNode;

use crate::support::{pod, pod_ip, wasmcni_only, Pod};

/// A tiny deterministic generator (no dependency), seeded per run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORKERS: usize = 4;
const PODS_PER_WORKER: usize = 3;
const KILLS: usize = 30;

#[test]
fn sigkill_during_concurrent_adds_and_dels_loses_nothing() {
    let node = Arc::new(Mutex::new(TestNode::new("10.88.0.0/26")));
    node.lock().unwrap().start_daemon();
    let (chain, node_ns_path) = {
        let n = node.lock().unwrap();
        (wasmcni_only(&n, "1.1.0"), n.node.path())
    };
    let pods: Vec<Pod> = (0..WORKERS * PODS_PER_WORKER)
        .map(|i| pod(&format!("crash{i}")))
        .collect();
    let pods = Arc::new(pods);
    // What the "runtime" believes: pod index -> the result it received.
    let attached: Arc<Mutex<BTreeMap<usize, Value>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (chain, pods, attached, stop) =
                (chain.clone(), pods.clone(), attached.clone(), stop.clone());
            let ns_path = node_ns_path.clone();
            std::thread::spawn(move || {
                enter(&ns_path);
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                let mut operations = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let i = w * PODS_PER_WORKER + (rng.next() as usize % PODS_PER_WORKER);
                    step(&chain, &pods[i], i, &attached);
                    operations += 1;
                }
                operations
            })
        })
        .collect();

    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut kills = 0;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 250));
        let mut n = node.lock().unwrap();
        n.stop_daemon("KILL");
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.next() % 50));
        n.start_daemon();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let operations: u32 = workers.into_iter().map(|w| w.join().expect("worker")).sum();

    let mut n = node.lock().unwrap();
    let attached = attached.lock().unwrap().clone();
    eprintln!("crash test: survived {kills} SIGKILLs during {operations} CNI operations; {} pods attached at the end", attached.len());

    // Invariant 1: no address assigned twice.
    let ips: Vec<String> = attached.values().map(pod_ip).collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        distinct.len(),
        ips.len(),
        "an address is held twice: {ips:?}"
    );

    // Invariant 1b: the daemon's own record says the same — exactly the attached pods,
    // committed, each with the address the runtime was given.
    let held = |n: &mut TestNode| -> BTreeMap<String, String> {
        n.stop_daemon("TERM");
        let (store, _) = Datastore::open(&n.state_dir(), WalOptions::default())
            .expect("open the daemon's datastore");
        let held = store
            .allocations()
            .map(|a| {
                assert_eq!(a.state, AllocationState::Committed, "{a:?}");
                (a.key.container_id.clone(), a.ip.to_string())
            })
            .collect();
        drop(store);
        n.start_daemon();
        held
    };
    let expected: BTreeMap<String, String> = attached
        .iter()
        .map(|(i, r)| (pods[*i].attachment.container_id.clone(), pod_ip(r)))
        .collect();
    assert_eq!(
        held(&mut n),
        expected,
        "the datastore disagrees with what the runtime was told"
    );

    // Invariant 2: every pod that got a result keeps its address and working routes.
    for (i, result) in &attached {
        n.check(&chain, &pods[*i].attachment, result)
            .unwrap_or_else(|f| {
                panic!("pod {i} lost its attachment: {f}\n{}", n.daemon_log_text())
            });
        assert!(
            wasmcni_harness::traffic::ping(&n.node, &pod_ip(&attached[i])),
            "pod {i} unreachable"
        );
    }

    // Invariant 3: nothing leaked — the node holds exactly the attached pods' veths and rules.
    let veths: BTreeSet<String> = n
        .node
        .ip(&["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("eni"))
        .collect();
    let expected_veths: BTreeSet<String> = attached
        .values()
        .map(|r| r["interfaces"][0]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        veths, expected_veths,
        "veths on the node differ from attached pods"
    );
    let rules: BTreeSet<String> = n
        .node
        .ip(&["-4", "rule", "show", "priority", "512"])
        .lines()
        .filter_map(|l| l.split(" to ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    let expected_rules: BTreeSet<String> = ips.iter().cloned().collect();
    assert_eq!(
        rules, expected_rules,
        "priority-512 rules differ from attached pods"
    );

    // And everything can still be deleted cleanly.
    for (i, result) in &attached {
        n.del(&chain, &pods[*i].attachment, Some(result))
            .expect("final DEL");
    }
    assert!(n
        .node
        .ip(&["-4", "rule", "show", "priority", "512"])
        .trim()
        .is_empty());
    assert!(
        held(&mut n).is_empty(),
        "the datastore still holds addresses after every DEL"
    );
}

/// One runtime step for pod `i`: ADD if detached, DEL if attached. A failed ADD is followed by a
/// DEL, as the CNI spec asks of runtimes.
fn step(chain: &Conflist, pod: &Pod, i: usize, attached: &Mutex<BTreeMap<usize, Value>>) {
    let current = attached.lock().unwrap().get(&i).cloned();
    match current {
        None => match chain.add(&pod.attachment) {
            Ok(result) => {
                attached.lock().unwrap().insert(i, result);
            }
            Err(_) => {
                // Retry the DEL until it succeeds; a DEL never fails when the daemon is down.
                let deadline = Instant::now() + Duration::from_secs(30);
                while chain.del(&pod.attachment, None).is_err() {
                    assert!(
                        Instant::now() < deadline,
                        "DEL after a failed ADD kept failing"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        },
        Some(result) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(f) = chain.del(&pod.attachment, Some(&result)) {
                assert!(Instant::now() < deadline, "DEL kept failing: {f}");
                std::thread::sleep(Duration::from_millis(20));
            }
            attached.lock().unwrap().remove(&i);
        }
    }
}

fn enter(netns_path: &str) {
    let file = std::fs::File::open(netns_path).expect("open node netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into node");
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
