//! ADD, DEL and ADD+DEL latency of wasmcni against Debian's ptp + host-local (with and without
//! `ipMasq`) and against the kernel floor (wasmcni's own netlink work, in process), measured in
//! the same run, in the same node namespace, with the same pod-namespace setup; plus 100
//! concurrent ADDs and DELs and the daemon's memory. A measurement, not a test: it prints
//! figures and asserts nothing about time.
//!
//! Run (root): `scripts/bench.sh [--iterations N]` (builds the release binaries first).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;

struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
        min: samples[0],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn attachment(ns: &NetNs, i: usize) -> Attachment {
    Attachment {
        container_id: format!("bench-{}-{i}", ns.name()),
        netns: ns.path(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "bench".into()),
            ("K8S_POD_NAME".into(), format!("pod-{}-{i}", ns.name())),
        ],
        capability_args: Default::default(),
    }
}

/// One plugin alone, run exactly like libcni runs a one-plugin list.
struct Subject {
    label: &'static str,
    list: Conflist,
}

/// The kernel floor of one cycle: wasmcni's own netlink work, in process (no exec, socket,
/// datastore or plugins).
struct Floor {
    /// `setup_pod`: the netlink requests of an ADD.
    add: Duration,
    /// `detach_pod`: what a DEL now waits for.
    detach: Duration,
    /// `remove_link` after the detach: the kernel deleting the veth (what a DEL that waits for
    /// the kernel, ptp's, pays on top).
    remove: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations: usize = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let mut node = TestNode::new("10.88.0.0/16");
    node.start_daemon();
    let host_local_dir = tempfile::tempdir().expect("tempdir");
    let ptp = |name: &str, subnet: &str, masq: bool| Conflist {
        name: name.into(),
        cni_version: "1.0.0".into(),
        plugins: vec![json!({
            "type": "ptp",
            "ipMasq": masq,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": host_local_dir.path()}
        })],
    };
    let subjects = [
        Subject {
            label: "wasmcni",
            list: Conflist {
                name: "bench-wasmcni".into(),
                cni_version: "1.0.0".into(),
                plugins: vec![node.wasmcni_plugin()],
            },
        },
        Subject {
            label: "ptp + host-local",
            list: ptp("bench-ptp", "10.99.0.0/16", false),
        },
        Subject {
            label: "ptp + host-local, ipMasq",
            list: ptp("bench-ptp-masq", "10.98.0.0/16", true),
        },
    ];

    // Warm-up: page cache, first exec of each binary, the daemon's first connection.
    for subject in &subjects {
        cycle(&node, &subject.list, 0);
    }
    floor_cycle(&node, 0);

    let n = subjects.len();
    let mut adds = vec![Vec::new(); n];
    let mut dels = vec![Vec::new(); n];
    let mut cycles = vec![Vec::new(); n];
    let mut floors = Vec::new();
    let daemon_before = DaemonTimes::scrape(&node);
    for i in 0..iterations {
        // Interleave the subjects so drift in machine load hits all alike.
        for (s, subject) in subjects.iter().enumerate() {
            let (add, del) = cycle(&node, &subject.list, i + 1);
            adds[s].push(add);
            dels[s].push(del);
            cycles[s].push(add + del);
        }
        floors.push(floor_cycle(&node, i + 1));
    }
    let daemon_times = DaemonTimes::scrape(&node).since(&daemon_before);

    println!("\nSequential, {iterations} iterations each, interleaved; wall time around each plugin exec (ms):\n");
    println!("| subject | ADD median | ADD p90 | DEL median | DEL p90 | ADD+DEL median | ADD+DEL p90 | ADD min |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (s, subject) in subjects.iter().enumerate() {
        let (a, d, c) = (
            stats(adds[s].clone()),
            stats(dels[s].clone()),
            stats(cycles[s].clone()),
        );
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            subject.label,
            ms(a.median),
            ms(a.p90),
            ms(d.median),
            ms(d.p90),
            ms(c.median),
            ms(c.p90),
            ms(a.min)
        );
        medians.push((a.median, d.median, c.median));
    }
    let floor_add = stats(floors.iter().map(|f| f.add).collect());
    let floor_del = stats(floors.iter().map(|f| f.detach + f.remove).collect());
    let floor_cycle = stats(floors.iter().map(|f| f.add + f.detach + f.remove).collect());
    println!(
        "| kernel floor (in process; DEL = detach + veth deletion) | {} | {} | {} | {} | {} | {} | {} |",
        ms(floor_add.median),
        ms(floor_add.p90),
        ms(floor_del.median),
        ms(floor_del.p90),
        ms(floor_cycle.median),
        ms(floor_cycle.p90),
        ms(floor_add.min)
    );
    let detach = stats(floors.iter().map(|f| f.detach).collect());
    let remove = stats(floors.iter().map(|f| f.remove).collect());
    println!(
        "\nKernel floor parts (ms): detach (veth down, rules) median {} p90 {}; veth deletion median {} p90 {}",
        ms(detach.median),
        ms(detach.p90),
        ms(remove.median),
        ms(remove.p90)
    );
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    for s in 1..n {
        println!(
            "wasmcni / {}: ADD {:.2}x, DEL {:.2}x, ADD+DEL {:.2}x",
            subjects[s].label,
            ratio(medians[0].0, medians[s].0),
            ratio(medians[0].1, medians[s].1),
            ratio(medians[0].2, medians[s].2),
        );
    }
    println!("(targets against ptp without ipMasq: ADD <= 0.3x, DEL <= 0.2x)");
    println!(
        "wasmcni ADD above the kernel floor: {} ms (median against median); DEL above the detach: {} ms",
        ms(medians[0].0.saturating_sub(floor_add.median)),
        ms(medians[0].1.saturating_sub(detach.median))
    );

    print_daemon_times(
        "the sequential run",
        &daemon_times,
        Some((medians[0].0, medians[0].1)),
    );

    println!("\nExec floor: VERSION answered by the plugin itself, {iterations} runs (ms):\n");
    println!("| plugin | median | p90 |");
    println!("|---|---|---|");
    for plugin in ["wasmcni", "ptp"] {
        let samples = (0..iterations)
            .map(|_| {
                wasmcni_harness::chain::exec_plugin(
                    plugin,
                    "VERSION",
                    &Attachment::default(),
                    &wasmcni_harness::cni_path(),
                    br#"{"cniVersion":"1.0.0"}"#,
                )
                .elapsed
            })
            .collect();
        let s = stats(samples);
        println!("| {plugin} | {} | {} |", ms(s.median), ms(s.p90));
    }

    println!(
        "\n100 concurrent ADDs (100 threads released together), then 100 concurrent DELs (ms):\n"
    );
    println!("| subject | ADD wall | ADD median | ADD p90 | DEL wall | DEL median | DEL p90 |");
    println!("|---|---|---|---|---|---|---|");
    let mut burst_times = Vec::new();
    for (s, subject) in subjects.iter().enumerate() {
        let before = (s == 0).then(|| DaemonTimes::scrape(&node));
        let (add_wall, add_each, del_wall, del_each) = concurrent(&node, &subject.list, 100);
        if let Some(before) = before {
            burst_times = DaemonTimes::scrape(&node).since(&before);
        }
        let (a, d) = (stats(add_each), stats(del_each));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            subject.label,
            ms(add_wall),
            ms(a.median),
            ms(a.p90),
            ms(del_wall),
            ms(d.median),
            ms(d.p90)
        );
    }
    print_daemon_times("the 100 concurrent ADDs and DELs", &burst_times, None);
    let (rss, peak) = node.daemon_memory_kib();
    println!(
        "\nDaemon memory after the run (no plugins configured): RSS {:.1} MiB, peak {:.1} MiB",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    node.stop_daemon("TERM");
}

/// wasmcni's netlink work for one pod, in process in the node namespace: `setup_pod`, then
/// `detach_pod`, then `remove_link` (pod namespace creation is not timed).
fn floor_cycle(node: &TestNode, i: usize) -> Floor {
    use wasmcni_datapath::netlink::NetlinkDatapath;
    use wasmcni_datapath::{Datapath, HostSide, PodAttachment};
    let pod = NetNs::new("bf");
    let netns = pod.path();
    node.node.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let datapath = NetlinkDatapath::connect().expect("netlink");
            let ip: std::net::IpAddr = format!("10.77.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .expect("address");
            let host = HostSide {
                host_veth: format!("flr{i}"),
                ip,
                ipv6: None,
                route_table: None,
                pod_rule: None,
            };
            let attachment = PodAttachment {
                host: host.clone(),
                netns,
                pod_ifname: "eth0".into(),
                mtu: 1500,
                pod_mac: None,
                routes: Default::default(),
                egress_v4: None,
            };
            let started = Instant::now();
            datapath.setup_pod(&attachment).await.expect("setup_pod");
            let add = started.elapsed();
            let started = Instant::now();
            let index = datapath
                .detach_pod(&host)
                .await
                .expect("detach_pod")
                .expect("the veth exists");
            let detach = started.elapsed();
            let started = Instant::now();
            datapath
                .remove_link(index, &host.host_veth)
                .await
                .expect("remove_link");
            Floor {
                add,
                detach,
                remove: started.elapsed(),
            }
        })
    })
}

/// One ADD and one DEL of a fresh pod namespace (namespace creation is not timed).
fn cycle(node: &TestNode, list: &Conflist, i: usize) -> (Duration, Duration) {
    let pod = NetNs::new("bp");
    let att = attachment(&pod, i);
    let (list, att2) = (list.clone(), att.clone());
    node.node.run(move || {
        let started = Instant::now();
        let result = list.add(&att2).unwrap_or_else(|f| panic!("ADD: {f}"));
        let add = started.elapsed();
        let started = Instant::now();
        list.del(&att2, Some(&result))
            .unwrap_or_else(|f| panic!("DEL: {f}"));
        (add, started.elapsed())
    })
}

fn concurrent(
    node: &TestNode,
    list: &Conflist,
    n: usize,
) -> (Duration, Vec<Duration>, Duration, Vec<Duration>) {
    let pods: Vec<NetNs> = (0..n).map(|_| NetNs::new("bc")).collect();
    let attachments: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| attachment(p, 10_000 + i))
        .collect();
    let node_ns = node.node.path();
    let run_all = |verb: &'static str,
                   results: Vec<Option<Value>>|
     -> (Duration, Vec<(Duration, Value)>) {
        let barrier = Arc::new(Barrier::new(n + 1));
        let threads: Vec<_> = attachments
            .iter()
            .cloned()
            .zip(results)
            .map(|(att, prev)| {
                let (list, barrier, node_ns) = (list.clone(), barrier.clone(), node_ns.clone());
                std::thread::spawn(move || {
                    let file = std::fs::File::open(&node_ns).expect("node netns");
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                    barrier.wait();
                    let started = Instant::now();
                    let outcome = if verb == "ADD" {
                        list.add(&att)
                            .unwrap_or_else(|f| panic!("concurrent ADD: {f}"))
                    } else {
                        list.del(&att, prev.as_ref())
                            .unwrap_or_else(|f| panic!("concurrent DEL: {f}"));
                        Value::Null
                    };
                    (started, Instant::now(), outcome)
                })
            })
            .collect();
        barrier.wait();
        let out: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        // Wall time: first request started to last request answered.
        let first = out
            .iter()
            .map(|(start, _, _)| *start)
            .min()
            .expect("threads");
        let last = out.iter().map(|(_, end, _)| *end).max().expect("threads");
        let each = out
            .into_iter()
            .map(|(start, end, value)| (end - start, value))
            .collect();
        (last - first, each)
    };
    let (add_wall, added) = run_all("ADD", vec![None; n]);
    let add_each = added.iter().map(|(d, _)| *d).collect();
    let results = added.into_iter().map(|(_, v)| Some(v)).collect();
    let (del_wall, deleted) = run_all("DEL", results);
    let del_each = deleted.iter().map(|(d, _)| *d).collect();
    drop(pods);
    (add_wall, add_each, del_wall, del_each)
}

/// The daemon's own account of the sequential run, from its request and phase histograms
/// (`/metrics`, scraped before and after): the client's wall time splits into the daemon's
/// phases and what lies outside the daemon (exec, the shim, the socket). Exact means (from the
/// sums and counts), and medians located in the histogram's buckets, which double from 0.1 ms:
/// the bucket holding the median is printed with a linear interpolation inside it, which is
/// only as good as the bucket is narrow.
#[derive(Default)]
struct DaemonTimes {
    /// Per "VERB phase": cumulative bucket counts by upper bound.
    buckets: std::collections::BTreeMap<String, Vec<(f64, f64)>>,
    /// Per "VERB phase": (sum of seconds, count).
    sums: std::collections::BTreeMap<String, (f64, f64)>,
}

/// One verb's phase over the run.
struct PhaseTimes {
    key: String,
    count: f64,
    mean: f64,
    /// The bucket holding the median, and the median interpolated in it (seconds).
    bucket: (f64, f64),
    median: f64,
}

impl DaemonTimes {
    fn scrape(node: &TestNode) -> DaemonTimes {
        let text = node.inspect("metrics", false);
        let mut times = DaemonTimes::default();
        for line in text.lines() {
            let Some((name, rest)) = line.split_once('{') else {
                continue;
            };
            let Some(kind) = [
                "wasmcni_cni_request_duration_seconds_",
                "wasmcni_request_phase_duration_seconds_",
            ]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix)) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            let key = format!(
                "{} {}",
                label("verb").unwrap_or_default(),
                label("phase").unwrap_or_else(|| "total".into())
            );
            let value: f64 = value.trim().parse().unwrap_or(0.0);
            match kind {
                "bucket" => {
                    let bound = match label("le").as_deref() {
                        Some("+Inf") | None => f64::INFINITY,
                        Some(le) => le.parse().unwrap_or(f64::INFINITY),
                    };
                    times.buckets.entry(key).or_default().push((bound, value));
                }
                "sum" => times.sums.entry(key).or_default().0 = value,
                "count" => times.sums.entry(key).or_default().1 = value,
                _ => {}
            }
        }
        times
    }

    /// The requests between `before` and `self`.
    fn since(&self, before: &DaemonTimes) -> Vec<PhaseTimes> {
        let mut out = Vec::new();
        for (key, buckets) in &self.buckets {
            let earlier = before.buckets.get(key);
            let cumulative: Vec<(f64, f64)> = buckets
                .iter()
                .enumerate()
                .map(|(i, (bound, count))| {
                    let was = earlier.and_then(|b| b.get(i)).map_or(0.0, |(_, c)| *c);
                    (*bound, count - was)
                })
                .collect();
            let count = cumulative.last().map_or(0.0, |(_, c)| *c);
            if count == 0.0 {
                continue;
            }
            let (sum, _) = self.sums.get(key).copied().unwrap_or_default();
            let (sum_before, _) = before.sums.get(key).copied().unwrap_or_default();
            let half = count / 2.0;
            let (mut lower, mut below) = (0.0, 0.0);
            let (mut bucket, mut median) = ((f64::NAN, f64::NAN), f64::NAN);
            for (bound, cumulated) in &cumulative {
                if *cumulated >= half {
                    bucket = (lower, *bound);
                    median = if bound.is_finite() {
                        lower + (bound - lower) * (half - below) / (cumulated - below)
                    } else {
                        lower
                    };
                    break;
                }
                (lower, below) = (*bound, *cumulated);
            }
            out.push(PhaseTimes {
                key: key.clone(),
                count,
                mean: (sum - sum_before) / count,
                bucket,
                median,
            });
        }
        out
    }
}

/// `rows` under `title`; with the client's ADD and DEL medians, where the daemon's lie.
fn print_daemon_times(title: &str, rows: &[PhaseTimes], client: Option<(Duration, Duration)>) {
    println!("\nInside the daemon during {title} (its /metrics histograms, ms):\n");
    println!("| verb | phase | requests | mean | median's bucket | median, interpolated |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let (verb, phase) = row.key.split_once(' ').unwrap_or((&row.key, ""));
        if verb == "ADD" || verb == "DEL" {
            println!(
                "| {verb} | {phase} | {} | {:.2} | {:.2}–{:.2} | {:.2} |",
                row.count,
                row.mean * 1e3,
                row.bucket.0 * 1e3,
                row.bucket.1 * 1e3,
                row.median * 1e3
            );
        }
    }
    let Some((add_median, del_median)) = client else {
        return;
    };
    for (verb, client) in [("ADD", add_median), ("DEL", del_median)] {
        if let Some(row) = rows.iter().find(|r| r.key == format!("{verb} total")) {
            println!(
                "{verb}: client median {} ms; the daemon's median lies in {:.2}–{:.2} ms (mean {:.2})",
                ms(client),
                row.bucket.0 * 1e3,
                row.bucket.1 * 1e3,
                row.mean * 1e3,
            );
        }
    }
}
