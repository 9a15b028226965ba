//! `wasmcni-demo`: the README's main job. Starts the node daemon on the embedded default
//! configuration inside a throwaway "node" namespace, attaches three pod namespaces through
//! the real `wasmcni` binary chained with Debian's `portmap` (as libcni runs a conflist),
//! proves connectivity with real packets, and removes everything again.

#[path = "wasmcni-demo/ec2.rs"]
mod ec2;
#[path = "wasmcni-demo/registry.rs"]
mod registry;

use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Value};
use wasmcni_harness::chain::{Attachment, Conflist};
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::{TestNode, NODE_IP};
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer};

struct Pod {
    name: String,
    ns: NetNs,
    attachment: Attachment,
    result: Value,
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("wasmcni-demo needs root (it creates network namespaces)");
        return ExitCode::FAILURE;
    }
    let flag = |name: &str| std::env::args().any(|a| a == name);
    // (`--dual-stack` is an EC2 mode: `--ec2` may be left out.)
    if flag("--ec2") || flag("--dual-stack") || flag("--registry") {
        let failures = if flag("--registry") {
            registry::run()
        } else if flag("--dual-stack") {
            ec2::run_dual_stack()
        } else if flag("--ipv6") {
            ec2::run_ipv6()
        } else {
            ec2::run()
        };
        return if failures == 0 {
            println!("demo passed");
            ExitCode::SUCCESS
        } else {
            println!("demo FAILED: {failures} check(s)");
            ExitCode::FAILURE
        };
    }
    let mut failures = 0u32;

    println!("== wasmcni demo: the embedded default configuration + the `pack` allocator plugin");
    let config = format!(
        "{}{}",
        wasmcni_config::DEFAULT_CONFIG,
        wasmcni_harness::allocator_plugin_config("pack", &["pool-view", "eni-ops", "log"])
    );
    let mut node = TestNode::with_cluster_config(&config);
    audit(&mut failures, &node.config_path());
    let started = Instant::now();
    node.start_daemon();
    println!(
        "  daemon wasmcni-host ready in {:?} inside namespace {} (socket {})",
        started.elapsed(),
        node.node.name(),
        node.socket().display()
    );

    let conflist = Conflist {
        name: "wasmcni-demo".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![
            json!({"type": "wasmcni", "capabilities": {"io.kubernetes.cri.pod-annotations": true}, "logFile": node.shim_log().display().to_string()}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ],
    };
    println!("== conflist (run like libcni: ADD forward, DEL in reverse)");
    println!(
        "  {}",
        json!({"cniVersion": conflist.cni_version, "name": conflist.name, "plugins": conflist.plugins})
    );

    println!("== CNI ADD for three pods");
    let mut pods = Vec::new();
    for (i, name) in ["frontend", "backend", "cache"].iter().enumerate() {
        let ns = NetNs::new("demo");
        let mut attachment = Attachment {
            container_id: format!("demo-{}", ns.name()),
            netns: ns.path(),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), "demo".into()),
                ("K8S_POD_NAME".into(), (*name).into()),
            ],
            capability_args: Default::default(),
        };
        if i == 0 {
            // containerd sends PascalCase keys here; wasmcni and portmap both accept them.
            attachment.capability_args.insert(
                "portMappings".into(),
                json!([{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]),
            );
        }
        let started = Instant::now();
        let outcome = node.add(&conflist, &attachment);
        match outcome {
            Ok(result) => {
                println!("  ADD {name}: {:?}", started.elapsed());
                pods.push(Pod {
                    name: (*name).into(),
                    ns,
                    attachment,
                    result,
                });
            }
            Err(f) => {
                println!("  ADD {name} failed: {f}");
                failures += 1;
            }
        }
    }

    println!("== pods");
    println!(
        "  {:<10} {:<16} {:<16} {:<15} pod mac",
        "pod", "netns", "ip", "host veth"
    );
    for pod in &pods {
        println!(
            "  {:<10} {:<16} {:<16} {:<15} {}",
            pod.name,
            pod.ns.name(),
            pod_ip(&pod.result),
            pod.result["interfaces"][0]["name"].as_str().unwrap_or("?"),
            pod.result["interfaces"][1]["mac"].as_str().unwrap_or("?"),
        );
    }

    println!("== connectivity with real packets");
    for pair in pods.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        check(
            &mut failures,
            &format!("ping {} -> {} ({})", a.name, b.name, pod_ip(&b.result)),
            ping(&a.ns, &pod_ip(&b.result)),
        );
    }
    for pod in &pods {
        check(
            &mut failures,
            &format!("ping node -> {} ({})", pod.name, pod_ip(&pod.result)),
            ping(&node.node, &pod_ip(&pod.result)),
        );
    }
    if let Some(frontend) = pods.first() {
        let server = EchoServer::start(
            &frontend.ns,
            format!("{}:80", pod_ip(&frontend.result))
                .parse()
                .expect("address"),
            "hello from frontend:80",
        );
        let fetched = tcp_fetch(
            &node.outside,
            format!("{NODE_IP}:8080").parse().expect("address"),
        );
        check(
            &mut failures,
            &format!("TCP outside -> node {NODE_IP}:8080 (portmap hostPort) -> frontend:80 answered {fetched:?}"),
            fetched.as_deref() == Some("hello from frontend:80"),
        );
        drop(server);
    }

    println!("== CNI CHECK and DEL");
    // Debian's portmap 1.1.1 cannot CHECK IPv4-only pods (it always checks ip6tables), so
    // CHECK runs wasmcni alone, as a conflist with disableCheck would skip portmap's.
    let wasmcni_only = Conflist {
        plugins: conflist.plugins[..1].to_vec(),
        ..conflist.clone()
    };
    for pod in &pods {
        let ok = node
            .check(&wasmcni_only, &pod.attachment, &pod.result)
            .is_ok();
        check(
            &mut failures,
            &format!(
                "CHECK {} (wasmcni verifies every route, rule and neighbour)",
                pod.name
            ),
            ok,
        );
    }
    for pod in &pods {
        let started = Instant::now();
        let ok = node
            .del(&conflist, &pod.attachment, Some(&pod.result))
            .is_ok();
        check(
            &mut failures,
            &format!("DEL {} in {:?}", pod.name, started.elapsed()),
            ok,
        );
    }
    // DEL answers once the pod is cut off routing; the kernel deletes the veths right after
    // (in one batch, once no other pod's netlink work is in flight).
    let deleting = Instant::now();
    let leftover_veths = loop {
        let leftovers = node.node.ip(&["-o", "link", "show", "type", "veth"]);
        let count = leftovers.lines().filter(|l| l.contains(": eni")).count();
        if count == 0 || deleting.elapsed() > std::time::Duration::from_secs(5) {
            break count;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    check(
        &mut failures,
        &format!(
            "no pod veth left on the node after DEL (the kernel's deletions done {:?} after the last DEL answered)",
            deleting.elapsed()
        ),
        leftover_veths == 0,
    );
    let rules = node.node.ip(&["-4", "rule", "show", "priority", "512"]);
    check(
        &mut failures,
        "no priority-512 rule left after DEL",
        rules.trim().is_empty(),
    );

    drop(pods);
    node.stop_daemon("TERM");
    println!("== cleaned up: namespaces removed, daemon stopped");
    if failures == 0 {
        println!("demo passed");
        ExitCode::SUCCESS
    } else {
        println!("demo FAILED: {failures} check(s)");
        ExitCode::FAILURE
    }
}

/// Prints `wasmcni-host audit` of the configuration at `path` and checks it is clean.
fn audit(failures: &mut u32, path: &std::path::Path) {
    println!("== audit of that configuration (wasmcni-host audit)");
    let audit = std::process::Command::new(wasmcni_harness::bin_dir().join("wasmcni-host"))
        .args(["audit", "--config"])
        .arg(path)
        .output()
        .expect("run wasmcni-host audit");
    for line in String::from_utf8_lossy(&audit.stdout).lines() {
        println!("  {line}");
    }
    check(
        failures,
        "audit: every plugin verified and granted what it imports",
        audit.status.success(),
    );
}

fn check(failures: &mut u32, what: &str, ok: bool) {
    println!("  [{}] {what}", if ok { " ok " } else { "FAIL" });
    if !ok {
        *failures += 1;
    }
}

fn pod_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or("?")
        .to_owned()
}
