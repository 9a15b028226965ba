//! The kubelet path: containerd's CRI plugin (Debian `containerd`) driven over gRPC the way
//! kubelet drives it, with the conflist wasmcni's install mode writes (wasmcni → portmap →
//! bandwidth, Debian's plugins) and a sandbox image made locally. The CRI sends what kubelet's
//! pods cause: `K8S_POD_*` CNI_ARGS, the pod annotations, PascalCase `portMappings` and
//! `bandwidth`, and a DEL for each StopPodSandbox and the RemovePodSandbox.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcni_harness::cri::{api, CriRuntime};
use wasmcni_harness::node::{TestNode, NODE_IP, OUTSIDE_IP};
use wasmcni_harness::plugin_entry;
use wasmcni_harness::traffic::{tcp_fetch, EchoServer, PEER_ADDRESS};

/// The annotation namespace-guard requires of every pod in these tests.
const OWNER: &str = "example.com/owner";

/// A node whose daemon installs wasmcni into a CNI directory of the test's (as on a kubelet
/// node: the conflist appears once the daemon is ready), with namespace-guard requiring
/// [`OWNER`], and a CRI runtime reading that directory.
struct KubeletNode {
    // Drop order (declaration order): the runtime first (its sandboxes' DELs need the
    // daemon), then the node, then the CNI directories.
    cri: CriRuntime,
    node: TestNode,
    _cni: tempfile::TempDir,
}

impl KubeletNode {
    fn start(pod_cidr: &str) -> KubeletNode {
        let mut node = TestNode::new(pod_cidr);
        let cni = tempfile::Builder::new()
            .prefix("wasmcni-cri-cni")
            .tempdir()
            .unwrap();
        let (bin, conf) = (cni.path().join("bin"), cni.path().join("net.d"));
        std::fs::create_dir_all(&bin).unwrap();
        // The chain's peers and the CRI's own loopback, from Debian's plugins.
        for plugin in ["loopback", "portmap", "bandwidth"] {
            std::os::unix::fs::symlink(
                Path::new(wasmcni_harness::DEBIAN_CNI_DIR).join(plugin),
                bin.join(plugin),
            )
            .unwrap();
        }
        let guard = plugin_entry(
            "namespace-guard",
            "policy",
            &format!(
                "[plugins.grants]\nlog = {{}}\nnetlink = {{ mtu = [1280, 9001] }}\n\
                 [plugins.config]\n\"annotations.*\" = \"{OWNER}\"\n"
            ),
        );
        // The shim as it ships (static); the default, beside the daemon, is the workspace's
        // dynamically linked build.
        node.append_config(&format!(
            "[install]\ncni_bin_dir = \"{}\"\ncni_conf_dir = \"{}\"\nshim = \"{}\"\nbandwidth = true\n\
             [policy]\nplugins = [\"namespace-guard\"]\n{guard}",
            bin.display(),
            conf.display(),
            wasmcni_harness::shim().display()
        ));
        // The runtime starts first, as on a booting node: no network until wasmcni is ready.
        let cri = CriRuntime::start(&node.node, &bin, &conf);
        let not_ready = cri
            .network_ready()
            .expect_err("no CNI configuration yet, so the network is not ready");
        assert!(not_ready.contains("cni"), "{not_ready}");
        node.start_daemon();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(why) = cri.network_ready() {
            assert!(
                Instant::now() < deadline,
                "the CRI's network is not ready 20 s after the daemon: {why}; {}",
                node.daemon_log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        KubeletNode {
            cri,
            node,
            _cni: cni,
        }
    }

    fn cri(&self) -> &CriRuntime {
        &self.cri
    }

    /// The sandbox config kubelet sends for an annotated pod `namespace/name`.
    fn pod(&self, namespace: &str, name: &str) -> api::PodSandboxConfig {
        let mut config = self.cri().sandbox_config(namespace, name);
        config
            .annotations
            .insert(OWNER.to_owned(), "team-a".to_owned());
        config
    }

    /// The host-side veth the node routes `ip` through.
    fn host_veth(&self, ip: &str) -> String {
        let route = self.node.node.ip(&["-4", "route", "show", ip]);
        route
            .split_whitespace()
            .skip_while(|word| *word != "dev")
            .nth(1)
            .unwrap_or_else(|| panic!("no route to {ip}: {route:?}"))
            .to_owned()
    }

    /// Nothing of any pod is left: no allocation, no pod veth (the kernel deletes them after
    /// the DEL answers), no portmap or bandwidth state, no sandbox, and none of the pods'
    /// `namespaces` is still pinned.
    fn assert_nothing_left(&self, namespaces: &[PathBuf]) {
        let pool: serde_json::Value =
            serde_json::from_str(&self.node.inspect("pool", true)).unwrap();
        assert_eq!(
            pool["allocations"],
            serde_json::json!([]),
            "addresses still held: {pool}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let links = self.node.node.ip(&["-o", "link", "show"]);
            let left: Vec<&str> = links
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .filter(|name| name.starts_with("eni") || name.starts_with("bwp"))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pod links left 10 s after removal: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let nat = self.node.node.exec("iptables", &["-t", "nat", "-S"]);
        let nat = String::from_utf8_lossy(&nat.stdout);
        assert!(
            !nat.lines().any(|l| l.starts_with("-N CNI-DN-")),
            "portmap chains left: {nat}"
        );
        let pinned: Vec<&PathBuf> = namespaces.iter().filter(|path| path.exists()).collect();
        assert!(pinned.is_empty(), "pod namespaces left: {pinned:?}");
        assert!(self.cri().list_pod_sandbox().is_empty());
    }
}

/// `ip -4 -o addr` inside the pod's namespace.
fn addresses_in(netns: &Path) -> String {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_cri_sandbox_gets_its_address_host_port_and_bandwidth_and_leaves_nothing() {
    let kubelet = KubeletNode::start("10.88.0.0/28");
    let cri = kubelet.cri();

    let mut config = kubelet.pod("default", "web");
    config.port_mappings.push(api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 30080,
        host_ip: String::new(),
    });
    for (annotation, rate) in [
        ("kubernetes.io/ingress-bandwidth", "10M"),
        ("kubernetes.io/egress-bandwidth", "20M"),
    ] {
        config
            .annotations
            .insert(annotation.to_owned(), rate.to_owned());
    }
    let started = Instant::now();
    let id = cri
        .run_pod_sandbox(config)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cri.log_text()));
    let run = started.elapsed();

    // The address kubelet would publish is the one inside the pod.
    let status = cri.pod_sandbox_status(&id);
    assert!(status.ready, "{status:?}");
    // Pinned where kubelet's containerd pins it, the path the plugins were given.
    let pinned = status.netns.display().to_string();
    assert!(
        pinned.starts_with("/var/run/netns/cni-") || pinned.starts_with("/run/netns/cni-"),
        "{status:?}"
    );
    let ip = status.ip.clone();
    assert!(ip.starts_with("10.88.0."), "{status:?}");
    let inside = addresses_in(&status.netns);
    assert!(inside.contains(&format!(" {ip}/32 ")), "{inside}");

    // The host port reaches the pod from another machine (portmap's DNAT), its source intact.
    let server = EchoServer::start_in(
        &status.netns,
        SocketAddr::new(ip.parse().unwrap(), 8080),
        PEER_ADDRESS,
    );
    let host_port = SocketAddr::new(NODE_IP.parse().unwrap(), 30080);
    assert_eq!(
        tcp_fetch(&kubelet.node.outside, host_port).as_deref(),
        Some(OUTSIDE_IP),
        "the host port {host_port} did not reach the pod"
    );
    drop(server);

    // The bandwidth annotations became tc shaping on the pod's host veth (ingress) and its
    // ifb (egress).
    let veth = kubelet.host_veth(&ip);
    let tc = kubelet.node.node.exec("tc", &["qdisc", "show"]);
    let tc = String::from_utf8_lossy(&tc.stdout);
    assert!(
        tc.lines()
            .any(|l| l.contains(&format!("dev {veth} ")) && l.contains("rate 10Mbit")),
        "no 10 Mbit/s shaping on {veth}: {tc}"
    );
    assert!(
        tc.lines()
            .any(|l| l.contains("dev bwp") && l.contains("rate 20Mbit")),
        "no 20 Mbit/s egress shaping: {tc}"
    );

    // A pod without the annotation: namespace-guard saw the pod's annotations (there are
    // none it needs) and refused; the CRI reports the plugin's reason, the daemon logs it
    // with the pod, and nothing of the pod is left.
    let refused = cri
        .run_pod_sandbox(cri.sandbox_config("default", "intruder"))
        .expect_err("namespace-guard requires the owner annotation");
    assert!(
        refused
            .message()
            .contains(&format!("annotation \"{OWNER}\" is required")),
        "{refused:?}"
    );
    let log = kubelet.node.daemon_log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("intruder") && l.contains(OWNER)),
        "the refusal is not in the daemon's log: {log}"
    );

    // kubelet stops a sandbox more than once, then removes it: three DELs, all answered.
    let started = Instant::now();
    cri.stop_pod_sandbox(&id).expect("StopPodSandbox");
    let stop = started.elapsed();
    assert!(!cri.pod_sandbox_status(&id).ready);
    cri.stop_pod_sandbox(&id).expect("StopPodSandbox again");
    let started = Instant::now();
    cri.remove_pod_sandbox(&id).expect("RemovePodSandbox");
    let remove = started.elapsed();
    kubelet.assert_nothing_left(&[status.netns]);
    wasmcni_harness::report(&format!(
        "CRI sandbox (wasmcni → portmap → bandwidth): RunPodSandbox {} ms, StopPodSandbox {} ms, RemovePodSandbox {} ms",
        run.as_millis(),
        stop.as_millis(),
        remove.as_millis()
    ));
}

#[test]
fn twenty_cri_sandboxes_five_at_a_time_get_distinct_addresses_and_leave_nothing() {
    const SANDBOXES: usize = 20;
    const PARALLEL: usize = 5;
    let kubelet = KubeletNode::start("10.88.0.0/27");
    let cri = kubelet.cri();
    let names: Vec<String> = (0..SANDBOXES).map(|i| format!("pod-{i}")).collect();
    // (name, sandbox id, ip, RunPodSandbox time, network namespace).
    let mut started: Vec<(String, String, String, Duration, PathBuf)> = Vec::new();
    for batch in names.chunks(PARALLEL) {
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|name| {
                    let config = kubelet.pod("team-a", name);
                    scope.spawn(move || {
                        let begun = Instant::now();
                        let id = cri
                            .run_pod_sandbox(config)
                            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
                        let took = begun.elapsed();
                        let status = cri.pod_sandbox_status(&id);
                        assert!(status.ready, "{name}: {status:?}");
                        let inside = addresses_in(&status.netns);
                        assert!(
                            inside.contains(&format!(" {}/32 ", status.ip)),
                            "{name}: status says {} but the pod has {inside}",
                            status.ip
                        );
                        (name.clone(), id, status.ip, took, status.netns)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        started.extend(results);
    }
    let mut ips: Vec<&str> = started.iter().map(|(_, _, ip, _, _)| ip.as_str()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(
        ips.len(),
        SANDBOXES,
        "an address was given twice: {started:?}"
    );
    let pool: serde_json::Value =
        serde_json::from_str(&kubelet.node.inspect("pool", true)).unwrap();
    assert_eq!(
        pool["allocations"].as_array().map(Vec::len),
        Some(SANDBOXES),
        "{pool}"
    );

    let mut teardown: Vec<Duration> = Vec::new();
    for batch in started.chunks(PARALLEL) {
        let times: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|(name, id, _, _, _)| {
                    scope.spawn(move || {
                        let begun = Instant::now();
                        cri.stop_pod_sandbox(id)
                            .unwrap_or_else(|e| panic!("StopPodSandbox {name}: {e}"));
                        cri.remove_pod_sandbox(id)
                            .unwrap_or_else(|e| panic!("RemovePodSandbox {name}: {e}"));
                        begun.elapsed()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        teardown.extend(times);
    }
    let namespaces: Vec<PathBuf> = started.iter().map(|s| s.4.clone()).collect();
    kubelet.assert_nothing_left(&namespaces);
    let median = |mut times: Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2].as_millis()
    };
    wasmcni_harness::report(&format!(
        "CRI: {SANDBOXES} sandboxes {PARALLEL} at a time: RunPodSandbox median {} ms, StopPodSandbox + RemovePodSandbox median {} ms",
        median(started.iter().map(|(_, _, _, took, _)| *took).collect()),
        median(teardown)
    ));
}
