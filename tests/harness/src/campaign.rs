//! Crash campaigns: SIGKILL the daemon at random moments while workers run concurrent ADD and
//! DEL bursts, restart it, and at quiet points check — through `ip`, CNI CHECK and
//! `inspect pool` — that no address is held twice, no pod that got a result lost its address
//! or its routes, no veth, rule or route is left without a pod, nothing the daemon holds is
//! unaccounted for, and (against EC2) no ENI leaked.
//!
//! CI runs a short campaign (`tests/it/crash.rs`); `benches/crash_campaign.rs` runs 1000 kills
//! against the static provider and against the EC2 emulator with throttling and server errors.
//! A violation is recorded and the campaign goes on, so one run counts them all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chain::{Attachment, Conflist};
use crate::netns::NetNs;
use crate::node::TestNode;

/// A pod: its namespace and its attachment parameters (Kubernetes-style `CNI_ARGS`).
pub struct Pod {
    /// The pod's network namespace.
    pub ns: NetNs,
    /// What the runtime passes for it.
    pub attachment: Attachment,
}

/// A pod named `name` in a fresh namespace, in Kubernetes namespace `default`.
pub fn pod(name: &str) -> Pod {
    let ns = NetNs::new("wp");
    let attachment = Attachment {
        container_id: format!("{}-{name}", ns.name()),
        netns: ns.path(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), format!("{name}-{}", ns.name())),
        ],
        capability_args: Default::default(),
    };
    Pod { ns, attachment }
}

/// The pod address in a result (`ips[0].address` without the prefix length, the one on
/// interface 1 when there are several).
pub fn pod_ip(result: &Value) -> String {
    let address = result["ips"]
        .as_array()
        .and_then(|ips| {
            ips.iter()
                .find(|ip| ip["interface"] == serde_json::json!(1))
                .or(ips.first())
        })
        .and_then(|ip| ip["address"].as_str())
        .unwrap_or_else(|| panic!("no address in {result}"));
    address.split('/').next().unwrap_or(address).to_owned()
}

/// A result's address of one family (a dual-stack pod has one of each), without its prefix
/// length.
pub fn pod_ip_of_family(result: &Value, v6: bool) -> Option<String> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .find(|a| a.contains(':') == v6)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
}

/// How a campaign runs.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// SIGKILLs in all.
    pub kills: usize,
    /// Threads running ADD/DEL bursts, each over its own pods.
    pub workers: usize,
    /// Pods per worker.
    pub pods_per_worker: usize,
    /// The invariants are checked after every this many kills, and at the end.
    pub check_every: usize,
    /// Seeds the moments of the kills and each worker's choices.
    pub seed: u64,
    /// A kill comes a random time in this range (ms) after the daemon answered again.
    pub between_kills_ms: (u64, u64),
}

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// SIGKILLs made.
    pub kills: usize,
    /// CNI operations made (ADDs, DELs and each retry of a DEL).
    pub operations: u64,
    /// ADDs that failed (the daemon was killed under them, EC2 refused or throttled, …); each
    /// was followed by a DEL, as the CNI spec asks of runtimes.
    pub failed_adds: u64,
    /// Quiet points at which the invariants were checked.
    pub checks: usize,
    /// Every invariant that did not hold, with where.
    pub violations: Vec<String>,
    /// Pods attached when the campaign ended (before the final DELs).
    pub attached_at_end: usize,
    /// Wall time.
    pub wall: Duration,
}

/// What a campaign runs against: a node, and what else must hold there.
pub trait Target: Sync {
    /// The node whose daemon is killed.
    fn node(&self) -> &TestNode;

    /// Violations outside the node (EC2: ENIs that leaked); checked at every quiet point.
    fn extra_violations(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Target for TestNode {
    fn node(&self) -> &TestNode {
        self
    }
}

/// A tiny deterministic generator (xorshift64), seeded per run.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

/// Sets its flag when dropped (also while a panic unwinds).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the workers share: the results the "runtime" holds, and the counters.
#[derive(Default)]
struct Shared {
    /// Pod index → the result its ADD returned (the runtime's belief).
    attached: Mutex<BTreeMap<usize, Value>>,
    operations: AtomicU64,
    failed_adds: AtomicU64,
    violations: Mutex<Vec<String>>,
}

/// How long a DEL may keep failing before that is a violation (the daemon restarts within a
/// second or two; the shim spools a DEL while it is down).
const DEL_RETRY_FOR: Duration = Duration::from_secs(60);

/// How long, at a quiet point, the daemon may take to finish deleting DELeted pods' veths.
const DRAIN_WITHIN: Duration = Duration::from_secs(15);

/// Runs `campaign` against `target` with `chain` (whose wasmcni entry talks to the target's
/// daemon, running when this is called). Leaves the daemon running and no pod attached.
pub fn run(target: &impl Target, chain: &Conflist, campaign: &Campaign) -> Outcome {
    assert!(
        campaign.workers > 0 && campaign.pods_per_worker > 0 && campaign.check_every > 0,
        "a campaign needs workers, pods and a check interval: {campaign:?}"
    );
    let started = Instant::now();
    let node = target.node();
    let pods: Vec<Pod> = (0..campaign.workers * campaign.pods_per_worker)
        .map(|i| pod(&format!("k{i}")))
        .collect();
    let shared = Shared::default();
    // Workers take it shared for each step; a quiet point takes it exclusively.
    let quiet = RwLock::new(());
    let stop = AtomicBool::new(false);
    let node_ns = node.node.path();
    let mut outcome = Outcome::default();
    std::thread::scope(|scope| {
        for w in 0..campaign.workers {
            let (pods, shared, quiet, stop, node_ns) = (&pods, &shared, &quiet, &stop, &node_ns);
            scope.spawn(move || {
                // A worker that panics stops the campaign.
                let _stop_all = StopOnDrop(stop);
                enter(node_ns);
                let mut rng = XorShift::new(campaign.seed ^ (0x9e37_79b9 * (w as u64 + 1)));
                while !stop.load(Ordering::Relaxed) {
                    let _step = quiet.read().unwrap_or_else(|p| p.into_inner());
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = w * campaign.pods_per_worker
                        + (rng.next() as usize % campaign.pods_per_worker);
                    step(chain, &pods[i], i, shared);
                }
            });
        }
        // Should a check or a restart panic, the workers still stop (else the scope would
        // wait for them forever).
        let _stop_workers = StopOnDrop(&stop);
        let mut rng = XorShift::new(campaign.seed);
        for kill in 1..=campaign.kills {
            if stop.load(Ordering::Relaxed) {
                outcome
                    .violations
                    .push(format!("a worker stopped (panicked) before kill {kill}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(
                rng.between(campaign.between_kills_ms),
            ));
            node.crash_and_restart_daemon_after(Duration::from_millis(rng.next() % 50));
            outcome.kills += 1;
            if kill % campaign.check_every == 0 || kill == campaign.kills {
                let _all_quiet = quiet.write().unwrap_or_else(|p| p.into_inner());
                let attached = shared
                    .attached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let found = check(target, chain, &pods, &attached);
                outcome.checks += 1;
                outcome
                    .violations
                    .extend(found.into_iter().map(|v| format!("after kill {kill}: {v}")));
            }
        }
    });
    let attached = shared
        .attached
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    outcome.attached_at_end = attached.len();
    outcome.operations = shared.operations.into_inner();
    outcome.failed_adds = shared.failed_adds.into_inner();
    outcome.violations.extend(
        shared
            .violations
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
    );
    // Everything can still be deleted cleanly, and then nothing is left.
    for (i, result) in &attached {
        if let Err(f) = node.del(chain, &pods[*i].attachment, Some(result)) {
            outcome
                .violations
                .push(format!("final DEL of pod {i} failed: {f}"));
        }
    }
    outcome.violations.extend(
        check(target, chain, &pods, &BTreeMap::new())
            .into_iter()
            .map(|v| format!("after the final DELs: {v}")),
    );
    outcome.wall = started.elapsed();
    outcome
}

/// One runtime step for pod `i`: ADD if detached, DEL if attached. A failed ADD is followed by
/// a DEL, as the CNI spec asks of runtimes; a DEL is retried until it succeeds.
fn step(chain: &Conflist, pod: &Pod, i: usize, shared: &Shared) {
    let current = shared
        .attached
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&i)
        .cloned();
    let violation = |what: String| {
        shared
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what)
    };
    let del = |prev: Option<&Value>| {
        let deadline = Instant::now() + DEL_RETRY_FOR;
        loop {
            shared.operations.fetch_add(1, Ordering::Relaxed);
            match chain.del(&pod.attachment, prev) {
                Ok(()) => return true,
                Err(f) if Instant::now() >= deadline => {
                    violation(format!(
                        "the DEL of pod {i} kept failing for {} s: {f}",
                        DEL_RETRY_FOR.as_secs()
                    ));
                    return false;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    };
    match current {
        None => {
            shared.operations.fetch_add(1, Ordering::Relaxed);
            match chain.add(&pod.attachment) {
                Ok(result) => {
                    shared
                        .attached
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(i, result);
                }
                Err(_) => {
                    shared.failed_adds.fetch_add(1, Ordering::Relaxed);
                    del(None);
                }
            }
        }
        Some(result) => {
            if del(Some(&result)) {
                shared
                    .attached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&i);
            }
        }
    }
}

fn enter(netns_path: &str) {
    let file = std::fs::File::open(netns_path).expect("open the node namespace");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("setns into the node namespace");
}

/// The invariants at a quiet point (no CNI operation in flight, the daemon running), for the
/// pods the runtime believes `attached`.
fn check(
    target: &impl Target,
    chain: &Conflist,
    pods: &[Pod],
    attached: &BTreeMap<usize, Value>,
) -> Vec<String> {
    let node = target.node();
    let mut violations = Vec::new();
    let ips: BTreeMap<usize, String> = attached.iter().map(|(i, r)| (*i, pod_ip(r))).collect();
    let distinct: BTreeSet<&String> = ips.values().collect();
    if distinct.len() != ips.len() {
        violations.push(format!("an address is held twice: {ips:?}"));
    }
    let expected_ips: BTreeSet<String> = ips.values().cloned().collect();

    // The daemon finishes deleting DELeted pods' veths in the background; wait for it.
    let deadline = Instant::now() + DRAIN_WITHIN;
    let pool = loop {
        let pool: Value = match serde_json::from_str(&node.inspect("pool", true)) {
            Ok(pool) => pool,
            Err(e) => {
                violations.push(format!("inspect pool: {e}"));
                return violations;
            }
        };
        let draining = pool["draining"].as_array().map_or(0, Vec::len);
        // DELs the shim spooled while the daemon was down are replayed by its next sweep.
        let spooled = std::fs::read_dir(wasmcni_cni::proto::pending_del_dir(&node.socket()))
            .map_or(0, |entries| entries.count());
        if (draining == 0 && spooled == 0) || Instant::now() >= deadline {
            if spooled > 0 {
                violations.push(format!(
                    "{spooled} spooled DELs still not replayed after {} s",
                    DRAIN_WITHIN.as_secs()
                ));
            }
            break pool;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // What the daemon holds is exactly what the runtime was told (every allocation: two for
    // one container would show).
    let mut held: Vec<String> = pool["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{}/{} {} {}",
                a["containerId"].as_str().unwrap_or("?"),
                a["ifname"].as_str().unwrap_or("?"),
                a["ip"].as_str().unwrap_or("?"),
                a["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    held.sort();
    let mut told: Vec<String> = ips
        .iter()
        .map(|(i, ip)| {
            let attachment = &pods[*i].attachment;
            format!(
                "{}/{} {ip} committed",
                attachment.container_id, attachment.ifname
            )
        })
        .collect();
    told.sort();
    if held != told {
        violations.push(format!(
            "the daemon holds {held:?}, the runtime was told {told:?}"
        ));
    }
    for key in ["heldOutsideStore", "draining"] {
        if pool[key].as_array().is_some_and(|a| !a.is_empty()) {
            violations.push(format!("inspect pool shows {key} {}", pool[key]));
        }
    }

    // Every pod that got a result keeps its address and routes (CHECK inspects the pod's
    // namespace and the node's side), and answers the node.
    for (i, result) in attached {
        if let Err(f) = node.check(chain, &pods[*i].attachment, result) {
            violations.push(format!("pod {i} ({}) fails CHECK: {f}", ips[i]));
        } else if !crate::traffic::ping(&node.node, &ips[i]) {
            violations.push(format!(
                "pod {i} ({}) does not answer a ping from the node",
                ips[i]
            ));
        }
    }

    // Nothing on the node without a pod: veths, priority-512 rules, host routes.
    let prefix = "eni";
    let veths: BTreeSet<String> = node
        .node
        .ip(&["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    let expected_veths: BTreeSet<String> = attached
        .values()
        .filter_map(|r| r["interfaces"][0]["name"].as_str())
        .map(str::to_owned)
        .collect();
    if veths != expected_veths {
        violations.push(format!(
            "veths on the node {veths:?}, attached pods' {expected_veths:?}"
        ));
    }
    let rules = word_after(node, &["-4", "rule", "show", "priority", "512"], " to ");
    if rules != expected_ips {
        violations.push(format!(
            "priority-512 rules to {rules:?}, attached pods' addresses {expected_ips:?}"
        ));
    }
    // Pods on a secondary ENI also have `from <pod> lookup <table>` rules.
    let from_rules = word_after(node, &["-4", "rule", "show", "priority", "1536"], "from ");
    if !from_rules.is_subset(&expected_ips) {
        violations.push(format!(
            "priority-1536 rules from {:?}, which no attached pod holds",
            from_rules.difference(&expected_ips).collect::<Vec<_>>()
        ));
    }
    let routes: BTreeSet<String> = node
        .node
        .ip(&["-4", "route", "show", "table", "main"])
        .lines()
        .filter(|l| {
            l.split(" dev ")
                .nth(1)
                .is_some_and(|d| d.starts_with(prefix))
        })
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    if routes != expected_ips {
        violations.push(format!(
            "host routes via pod veths to {routes:?}, attached pods' addresses {expected_ips:?}"
        ));
    }
    violations.extend(target.extra_violations());
    violations
}

/// The word after `marker` on each line of `ip <args>` in the node's namespace.
fn word_after(node: &TestNode, args: &[&str], marker: &str) -> BTreeSet<String> {
    node.node
        .ip(args)
        .lines()
        .filter_map(|l| l.split(marker).nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
