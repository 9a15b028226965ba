//! ADD, DEL and ADD+DEL latency of wasmcni against Debian's ptp + host-local, measured in the
//! same run, in the same node namespace, with the same pod-namespace setup; plus 100 concurrent
//! ADDs. A measurement, not a test: it prints figures and asserts nothing about time.
//!
//! Run (root): `cargo bench -p wasmcni-harness --bench cni` (`-- --iterations N` to change N).

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
            list: Conflist {
                name: "bench-ptp".into(),
                cni_version: "1.0.0".into(),
                plugins: vec![json!({
                    "type": "ptp",
                    "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": host_local_dir.path()}
                })],
            },
        },
    ];

    // Warm-up: page cache, first exec of each binary, the daemon's first connection.
    for subject in &subjects {
        cycle(&node, &subject.list, 0);
    }

    let mut adds = [Vec::new(), Vec::new()];
    let mut dels = [Vec::new(), Vec::new()];
    let mut cycles = [Vec::new(), Vec::new()];
    for i in 0..iterations {
        // Interleave the subjects so drift in machine load hits both alike.
        for (s, subject) in subjects.iter().enumerate() {
            let (add, del) = cycle(&node, &subject.list, i + 1);
            adds[s].push(add);
            dels[s].push(del);
            cycles[s].push(add + del);
        }
    }

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
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    println!(
        "\nwasmcni / ptp: ADD {:.2}x, DEL {:.2}x, ADD+DEL {:.2}x",
        ratio(medians[0].0, medians[1].0),
        ratio(medians[0].1, medians[1].1),
        ratio(medians[0].2, medians[1].2)
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
    for subject in &subjects {
        let (add_wall, add_each, del_wall, del_each) = concurrent(&node, &subject.list, 100);
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
    node.stop_daemon("TERM");
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
