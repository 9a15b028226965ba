//! A real client: containerd's `ctr run --cni --rootfs DIR` (Debian `containerd`, a
//! busybox-static rootfs) with the wasmcni conflist. `ctr` executes the plugins itself, from
//! its own process inside the node namespace: ADD with `CNI_CONTAINERID=<namespace>-<id>`,
//! `CNI_NETNS=/proc/<pid>/ns/net` and no CNI_ARGS; when the task ends, DEL with `CNI_NETNS=""`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcni_harness::containerd::Containerd;
use wasmcni_harness::netns::NetNs;
use wasmcni_harness::node::TestNode;
use wasmcni_harness::traffic::ping;

use crate::support::{pod, pod_ip, wasmcni_only};

/// The pool is this one address, so after the container is gone only a freed address lets the
/// next ADD succeed.
const POD_IP: &str = "10.88.0.7";

#[test]
fn ctr_run_cni_container_gets_a_reachable_ip_and_stop_removes_everything() {
    let started = Instant::now();
    // Drop order (reverse of declaration): the container (ctr DELs), containerd, the node.
    let mut node = TestNode::new(&format!("{POD_IP}/32"));
    node.start_daemon();
    let mut containerd = Containerd::start();
    containerd.install_plugin("wasmcni", &wasmcni_harness::shim());
    let network = wasmcni_harness::unique_name("wasmcni-ctr");
    containerd.set_conflist(&json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [node.wasmcni_plugin()],
    }));
    let rootfs = containerd.busybox_rootfs();
    let marker = format!("served by busybox httpd in {network}");
    std::fs::write(rootfs.join("www/index.html"), format!("{marker}\n")).unwrap();

    let id = wasmcni_harness::unique_name("web");
    let cni_id = containerd.cni_container_id(&id);
    let mut container = containerd.run_cni(
        &node.node,
        &id,
        &rootfs,
        &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let pid = container.pid();

    // ctr ran our plugin from our conflist, the way the module doc says.
    let shim_log = shim_messages(&node);
    let add = format!("ADD {cni_id}/eth0 netns=\"/proc/{pid}/ns/net\": ok");
    assert!(shim_log.contains(&add), "no `{add}` in {shim_log:?}");
    let cache = containerd.cni_cache_file(&id);
    let cached: Value = serde_json::from_slice(
        &std::fs::read(&cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display())),
    )
    .unwrap();
    assert_eq!(cached["containerId"], json!(cni_id), "{cached}");
    assert_eq!(
        cached["result"]["ips"][0]["address"],
        json!(format!("{POD_IP}/32")),
        "{cached}"
    );

    // Node side: the pod's route through its host veth, and the VPC CNI rule.
    let routes = node.node.ip(&["-4", "route", "show"]);
    let veth = routes
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!("{POD_IP} dev "))?;
            rest.split_whitespace()
                .next()
                .filter(|dev| dev.starts_with("eni"))
        })
        .unwrap_or_else(|| panic!("no route to {POD_IP} via an eni veth: {routes}"))
        .to_owned();
    let rules = node.node.ip(&["-4", "rule", "show", "priority", "512"]);
    assert!(
        rules.contains(&format!("512:\tfrom all to {POD_IP} lookup main")),
        "{rules}"
    );

    // Container side, seen from inside the container (`ctr task exec`, busybox `ip`).
    let addr = exec_ok(
        &container,
        &["/bin/ip", "-4", "addr", "show", "dev", "eth0"],
    );
    assert!(addr.contains(&format!("inet {POD_IP}/32")), "{addr}");
    let container_routes = exec_ok(&container, &["/bin/ip", "-4", "route", "show"]);
    assert!(
        container_routes.contains("default via 169.254.1.1 dev eth0"),
        "{container_routes}"
    );

    // Real packets, from the node and from the outside world through the node.
    assert!(
        ping(&node.node, POD_IP),
        "the node cannot ping the container"
    );
    assert!(
        ping(&node.outside, POD_IP),
        "the outside cannot ping the container"
    );
    let page = http_get(&node.outside, format!("{POD_IP}:80").parse().unwrap());
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 ") && page.contains(&marker),
        "{page}"
    );

    // Stop: SIGKILL the task; the foreground `ctr run` DELs the network and removes the
    // container. ctr only logs a failed DEL ("network review"), so its output is checked.
    let (status, output) = container.stop();
    assert_eq!(status.code(), Some(137), "ctr run: {output}");
    assert!(
        !output.contains("network review") && !output.contains("level=error"),
        "ctr reported an error: {output}"
    );
    let shim_log = shim_messages(&node);
    let del = format!("DEL {cni_id}/eth0 netns=\"\": ok");
    assert!(shim_log.contains(&del), "no `{del}` in {shim_log:?}");
    drop(container);
    assert_eq!(ctr_list(&containerd, "task"), "", "a task survived");
    assert_eq!(
        ctr_list(&containerd, "container"),
        "",
        "the container survived"
    );
    assert!(!cache.exists(), "libcni cache {} survived", cache.display());

    // Nothing of the attachment is left on the node (the veth once the kernel has deleted it).
    assert!(node
        .node
        .link_gone_within(&veth, crate::support::VETH_GONE_WITHIN));
    let links = node.node.ip(&["-o", "link", "show"]);
    assert!(
        !links.contains(&veth) && !links.contains(": eni"),
        "a veth survived: {links}"
    );
    let rules = node.node.ip(&["-4", "rule", "show", "priority", "512"]);
    assert!(rules.trim().is_empty(), "rule survived: {rules}");
    let routes = node.node.ip(&["-4", "route", "show"]);
    assert!(
        !routes.lines().any(|l| l.starts_with(&format!("{POD_IP} "))),
        "route survived: {routes}"
    );

    // The daemon freed the address: the one-address pool hands it out again.
    let chain = wasmcni_only(&node, "1.0.0");
    let next = pod("afterctr");
    let result = node
        .add(&chain, &next.attachment)
        .unwrap_or_else(|f| panic!("ADD after the container is gone: {f}"));
    assert_eq!(pod_ip(&result), POD_IP, "{result}");
    node.del(&chain, &next.attachment, Some(&result))
        .expect("DEL");

    drop(containerd);
    node.stop_daemon("TERM");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The `message` of every line the shim logged, each line checked against the field schema
/// every wasmcni log shares (docs/operating.md).
fn shim_messages(node: &TestNode) -> Vec<String> {
    std::fs::read_to_string(node.shim_log())
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let timestamp = line["timestamp"].as_str().unwrap_or_default();
            assert!(
                timestamp.ends_with('Z') && humantime::parse_rfc3339(timestamp).is_ok(),
                "no RFC 3339 UTC timestamp: {l}"
            );
            assert!(
                matches!(line["level"].as_str(), Some("INFO" | "ERROR")),
                "{l}"
            );
            assert!(line["pid"].is_u64(), "{l}");
            line["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {l}"))
                .to_owned()
        })
        .collect()
}

fn exec_ok(container: &wasmcni_harness::containerd::RunningContainer, argv: &[&str]) -> String {
    let output = container.exec(argv);
    assert!(
        output.status.success(),
        "{argv:?} in {}: {}",
        container.id(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ctr_list(containerd: &Containerd, what: &str) -> String {
    let output = containerd
        .ctr()
        .args([what, "ls", "--quiet"])
        .output()
        .expect("ctr ls");
    assert!(
        output.status.success(),
        "ctr {what} ls: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `GET /` over HTTP/1.0 from inside `ns`; retries briefly while the server starts listening.
fn http_get(ns: &NetNs, addr: SocketAddr) -> String {
    ns.run(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                stream.write_all(b"GET / HTTP/1.0\r\nHost: container\r\n\r\n")?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            })();
            match attempt {
                Ok(text) => return text,
                Err(e) if Instant::now() >= deadline => panic!("GET http://{addr}/: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}
