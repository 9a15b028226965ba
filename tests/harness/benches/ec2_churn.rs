//! The warm pool under churn: EC2 calls per pod and idle warm addresses for one pod-churn
//! trace, run through the real daemon and shim against the EC2 emulator (hypervisor mode), once
//! with `vpc-warm-pool` on VPC CNI's defaults (the reference) and once with `pack`, in the
//! same run. A measurement, not a test: it prints figures and asserts nothing about them.
//!
//! The trace is seeded and the same for both: the number of live pods follows a slow wave
//! (between about 5 and 75) with noise; below the wave a new pod is added, above it a random
//! live pod is deleted, until `--pods` pods (default 1000) have been added; then the rest are
//! deleted. After every step it samples the addresses EC2 has assigned to the node's ENIs;
//! idle warm addresses = assigned − live pods. Part of them are cooling (released less than
//! `ip_cooldown_ms` ago, not yet reusable or releasable); the table shows them apart, counted
//! from the trace's own DEL times.
//!
//! Each IPv4 run loads an allocator, a tagger and a policy hook (the allocator under test,
//! `cluster-tags`, `namespace-guard`: the daemon loads only the plugins its configuration
//! uses), and the table gives the daemon's resident memory after the trace and at its peak.
//!
//! A third run puts the same trace through IPv6 prefix mode (`ip_family = "ipv6"`: one /80 on
//! the primary ENI, no allocator plugin), whose EC2 cost is one call at start and none per pod;
//! its idle column is not applicable (the /80 holds 2^48 addresses).
//!
//! Run (root, plugins built): `cargo bench -p wasmcni-harness --bench ec2_churn`
//! (`-- --pods N --instance-type T --pace-ms MS`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::ec2::Ec2Node;
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::plugin_entry;

/// The reconciler period and cooldown used for both strategies (shorter than production so a
/// trace of 2000 operations takes a minute, the same for both).
const EC2_SETTINGS: &str =
    "reconcile_interval_ms = 500\nip_cooldown_ms = 2000\nadd_wait_ms = 30000\n";
const COOLDOWN: Duration = Duration::from_millis(2000);

const GRANTS: &str = "[plugins.grants]\npool-view = {}\nlog = {}\neni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }\n";

/// The allocator `name` with `settings`, and the rest of the four plugins wasmcni ships loaded
/// beside it as a node would run them: the other allocator (loaded, not chosen),
/// `cluster-tags` tagging every new ENI and `namespace-guard` asked on every ADD and DEL. The
/// daemon's memory is measured with all four.
fn strategy_config(name: &str, settings: &str) -> String {
    let other = if name == "pack" {
        "vpc-warm-pool"
    } else {
        "pack"
    };
    format!(
        "[allocator]\nplugin = \"{name}\"\n[tagger]\nplugin = \"cluster-tags\"\n[policy]\nplugins = [\"namespace-guard\"]\n{}{settings}{}{}{}",
        plugin_entry(name, "allocator", GRANTS),
        plugin_entry(other, "allocator", GRANTS),
        plugin_entry(
            "cluster-tags",
            "tagger",
            "tag_keys = [\"wasmcni.io/cluster\", \"wasmcni.io/instance-id\", \"wasmcni.io/created-at\"]\n[plugins.grants]\nlog = {}\nclock = {}\n"
        ),
        plugin_entry(
            "namespace-guard",
            "policy",
            "[plugins.grants]\nlog = {}\nnetlink = { mtu = [1280, 9001], routes = [] }\n[plugins.config]\nallow_namespaces = \"churn\"\n"
        ),
    )
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add(usize),
    Del(usize),
}

/// xorshift64*: a seeded trace, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn trace(pods: usize) -> Vec<Op> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<usize> = Vec::new();
    let mut ops = Vec::new();
    let mut added = 0;
    let mut step = 0.0f64;
    while added < pods {
        let wave = 40.0 + 35.0 * (step * std::f64::consts::TAU / 300.0).sin();
        let target = wave + (rng.below(11) as f64 - 5.0);
        if (live.len() as f64) < target {
            live.push(added);
            ops.push(Op::Add(added));
            added += 1;
        } else if !live.is_empty() {
            let at = rng.below(live.len() as u64) as usize;
            ops.push(Op::Del(live.swap_remove(at)));
        }
        step += 1.0;
    }
    ops.extend(live.into_iter().map(Op::Del));
    ops
}

/// One strategy to put the trace through.
struct Subject {
    label: &'static str,
    /// `[allocator]`/`[[plugins]]` sections (empty in IPv6 prefix mode).
    config: String,
    /// IPv6 prefix mode (an IPv6 scenario and `ip_family = "ipv6"`).
    ipv6: bool,
}

struct Report {
    label: String,
    ipv6: bool,
    ops: usize,
    pods: usize,
    calls: usize,
    mutating: usize,
    by_action: BTreeMap<String, usize>,
    idle_mean: f64,
    cooling_mean: f64,
    idle_max: usize,
    idle_at_peak: f64,
    peak_enis: usize,
    add_failures: usize,
    add_p50: Duration,
    add_p99: Duration,
    wall: Duration,
    /// The daemon's resident memory after the trace and at its peak, KiB.
    rss_kib: (u64, u64),
}

fn run(subject: &Subject, instance_type: &str, ops: &[Op], pace: Duration) -> Report {
    let label = subject.label;
    let mut ec2 = if subject.ipv6 {
        Ec2Node::start(instance_type, |s| s.with_ipv6())
    } else {
        Ec2Node::start(instance_type, |s| s)
    };
    let settings = if subject.ipv6 {
        format!("{EC2_SETTINGS}ip_family = \"ipv6\"\n")
    } else {
        EC2_SETTINGS.to_owned()
    };
    ec2.node
        .write_config(&ec2.config(&settings, &subject.config));
    ec2.node.start_daemon();
    let chain = Conflist {
        name: "churn".into(),
        cni_version: "1.1.0".into(),
        plugins: vec![ec2.node.wasmcni_plugin()],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ec2.node.status(&chain).is_err() {
        assert!(Instant::now() < deadline, "{label}: never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    ec2.emulator.clear_request_log();

    let mut pods: BTreeMap<usize, (NetNs, Attachment, serde_json::Value)> = BTreeMap::new();
    let mut idle = Vec::with_capacity(ops.len());
    let mut cooling = Vec::with_capacity(ops.len());
    let mut released: std::collections::VecDeque<Instant> = Default::default();
    let mut idle_at_peak = Vec::new();
    let mut peak_enis = 0;
    let mut add_failures = 0;
    let mut add_times = Vec::new();
    let started = Instant::now();
    for op in ops {
        std::thread::sleep(pace);
        match *op {
            Op::Add(i) => {
                let ns = NetNs::new("ch");
                let attachment = Attachment {
                    container_id: format!("churn-{i}-{}", ns.name()),
                    netns: ns.path(),
                    ifname: "eth0".into(),
                    args: vec![
                        ("IgnoreUnknown".into(), "1".into()),
                        ("K8S_POD_NAMESPACE".into(), "churn".into()),
                        ("K8S_POD_NAME".into(), format!("pod-{i}")),
                    ],
                    capability_args: Default::default(),
                };
                let t = Instant::now();
                // As kubelet: a failed ADD is retried.
                let result = loop {
                    match ec2.node.add(&chain, &attachment) {
                        Ok(result) => break result,
                        Err(e) => {
                            add_failures += 1;
                            eprintln!("{label}: ADD of pod-{i} failed, retrying: {e:?}");
                            assert!(add_failures < 20, "{label}: ADD keeps failing: {e:?}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                };
                add_times.push(t.elapsed());
                pods.insert(i, (ns, attachment, result));
            }
            Op::Del(i) => {
                if let Some((ns, attachment, result)) = pods.remove(&i) {
                    ec2.node
                        .del(&chain, &attachment, Some(&result))
                        .unwrap_or_else(|e| panic!("{label}: DEL: {e:?}"));
                    drop(ns);
                    released.push_back(Instant::now());
                }
            }
        }
        while released.front().is_some_and(|at| at.elapsed() >= COOLDOWN) {
            released.pop_front();
        }
        cooling.push(released.len());
        let enis = ec2.attached_enis();
        peak_enis = peak_enis.max(enis.len());
        let assigned: usize = enis
            .iter()
            .map(|(device, ..)| ec2.eni_addresses(*device).len())
            .sum();
        let warm = assigned.saturating_sub(pods.len());
        idle.push(warm);
        if pods.len() >= 60 {
            idle_at_peak.push(warm as f64);
        }
    }
    let wall = started.elapsed();
    let rss_kib = ec2.node.daemon_memory_kib();
    let log = ec2.emulator.request_log();
    let mut by_action = BTreeMap::new();
    for record in &log {
        *by_action.entry(record.action.clone()).or_insert(0) += 1;
    }
    let mutating = log
        .iter()
        .filter(|r| !r.action.starts_with("Describe"))
        .count();
    add_times.sort();
    let at = |q: f64| add_times[((add_times.len() as f64 - 1.0) * q).round() as usize];
    let adds = ops.iter().filter(|o| matches!(o, Op::Add(_))).count();
    Report {
        label: label.to_owned(),
        ipv6: subject.ipv6,
        ops: ops.len(),
        pods: adds,
        calls: log.len(),
        mutating,
        by_action,
        idle_mean: idle.iter().sum::<usize>() as f64 / idle.len() as f64,
        cooling_mean: cooling.iter().sum::<usize>() as f64 / cooling.len() as f64,
        idle_max: idle.iter().copied().max().unwrap_or(0),
        idle_at_peak: if idle_at_peak.is_empty() {
            0.0
        } else {
            idle_at_peak.iter().sum::<f64>() / idle_at_peak.len() as f64
        },
        peak_enis,
        add_failures,
        add_p50: at(0.5),
        add_p99: at(0.99),
        wall,
        rss_kib,
    }
}

fn main() {
    let pods: usize = wasmcni_harness::bench_arg("--pods").unwrap_or(1000);
    let instance_type: String =
        wasmcni_harness::bench_arg("--instance-type").unwrap_or_else(|| "m5.4xlarge".to_owned());
    let pace = Duration::from_millis(wasmcni_harness::bench_arg("--pace-ms").unwrap_or(0));
    let ops = trace(pods);
    println!(
        "churn trace: {pods} pods, {} operations ({} ms apart), on {instance_type}; EC2 settings: {}",
        ops.len(),
        pace.as_millis(),
        EC2_SETTINGS.replace('\n', " ")
    );
    let subjects = [
        Subject {
            label: "vpc-warm-pool (VPC CNI defaults: WARM_ENI_TARGET=1)",
            config: strategy_config("vpc-warm-pool", ""),
            ipv6: false,
        },
        Subject {
            label: "pack (WARM_IPS=8)",
            config: strategy_config("pack", "[plugins.config]\nWARM_IPS = \"8\"\n"),
            ipv6: false,
        },
        Subject {
            label: "IPv6 prefix mode (one /80, no allocator)",
            config: String::new(),
            ipv6: true,
        },
    ];
    let reports: Vec<Report> = subjects
        .iter()
        .map(|subject| run(subject, &instance_type, &ops, pace))
        .collect();
    println!(
        "\n| strategy | EC2 calls | calls/pod | mutating/pod | idle warm IPs (mean) | of which cooling (mean) | idle at ≥60 pods (mean) | idle max | peak ENIs | ADD retries | ADD p50 ms | ADD p99 ms | wall s | daemon RSS / peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        // IPv6 prefix mode has no warm IPv4 addresses to count: its /80 is 2^48 addresses.
        let idle = if r.ipv6 {
            [
                "n/a".to_owned(),
                "n/a".to_owned(),
                "n/a".to_owned(),
                "n/a".to_owned(),
            ]
        } else {
            [
                format!("{:.1}", r.idle_mean),
                format!("{:.1}", r.cooling_mean),
                format!("{:.1}", r.idle_at_peak),
                r.idle_max.to_string(),
            ]
        };
        println!(
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} / {:.1} |",
            r.label,
            r.calls,
            r.calls as f64 / r.pods as f64,
            r.mutating as f64 / r.pods as f64,
            idle[0],
            idle[1],
            idle[2],
            idle[3],
            r.peak_enis,
            r.add_failures,
            r.add_p50.as_secs_f64() * 1e3,
            r.add_p99.as_secs_f64() * 1e3,
            r.wall.as_secs_f64(),
            r.rss_kib.0 as f64 / 1024.0,
            r.rss_kib.1 as f64 / 1024.0,
        );
    }
    for r in &reports {
        println!(
            "\n{} ({} operations): calls by action {:?}",
            r.label, r.ops, r.by_action
        );
    }
}
