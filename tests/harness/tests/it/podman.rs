//! podman 4 with its CNI backend (Debian's podman), as its users run it: wasmcni as a second
//! network beside Debian's ptp in both orders, `--network NET:ip=…,mac=…` and `--ip`,
//! `podman network connect|disconnect`, `podman rm -f`. What podman sends (`IP=`, `MAC=` in
//! `CNI_ARGS`, a VERSION probe first) is what these tests answer.

use serde_json::{json, Value};
use wasmcni_harness::node::TestNode;
use wasmcni_harness::podman::Podman;

use crate::support::running_node;

/// Debian's ptp with host-local (its own data directory), with a default route or none.
fn ptp(name: &str, dir: &tempfile::TempDir, default_route: bool) -> Value {
    let routes = if default_route {
        json!([{"dst": "0.0.0.0/0"}])
    } else {
        json!([])
    };
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": dir.path(), "routes": routes},
        }],
    })
}

/// Addresses of a container's interfaces, `ifname -> (IPv4 address, MAC)`, read in its
/// network namespace.
fn interfaces(podman: &Podman, node: &TestNode, container: &str) -> Vec<(String, String, String)> {
    let netns = podman.netns_of(container);
    let out = node.node.exec(
        "nsenter",
        &[&format!("--net={netns}"), "ip", "-j", "-4", "addr"],
    );
    assert!(out.status.success(), "{out:?}");
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = node
        .node
        .exec("nsenter", &[&format!("--net={netns}"), "ip", "-j", "link"]);
    let macs: Value = serde_json::from_slice(&out.stdout).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .map(|l| {
            let name = l["ifname"].as_str().unwrap().to_owned();
            let mac = macs
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["ifname"] == l["ifname"])
                .map(|m| m["address"].as_str().unwrap().to_owned())
                .unwrap_or_default();
            let ip = l["addr_info"][0]["local"].as_str().unwrap_or("").to_owned();
            (name, ip, mac)
        })
        .collect()
}

fn default_route_dev(podman: &Podman, node: &TestNode, container: &str) -> String {
    let netns = podman.netns_of(container);
    let out = node.node.exec(
        "nsenter",
        &[
            &format!("--net={netns}"),
            "ip",
            "-4",
            "route",
            "show",
            "default",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /` from the node; the whole answer.
fn http_get(node: &TestNode, addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    node.node.run(move || {
        let timeout = std::time::Duration::from_secs(2);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    })
}

/// Whether busybox httpd in the container answers on `ip:80` from the node, waiting up to 5 s
/// for it to start listening (`podman run -d` returns before).
fn serves(node: &TestNode, ip: &str, body: &str) -> bool {
    let addr = format!("{ip}:80").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if http_get(node, addr).is_some_and(|page| page.contains(body)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn podman_attaches_wasmcni_beside_ptp_with_the_requested_address_and_mac() {
    let node = running_node();
    let podman = Podman::new(&node.node);
    podman.install_plugin("wasmcni", &wasmcni_harness::shim());
    let host_local = tempfile::tempdir().unwrap();
    podman.set_conflist(&ptp("ptp-first", &host_local, true));
    podman.set_conflist(&ptp("ptp-second", &host_local, false));
    // podman 4's libcni speaks up to 1.0.0. As a second network, wasmcni routes its address's
    // traffic by source (`routeTable`): the pod's default route is the other network's, and a
    // reply from wasmcni's address must leave where the request came in.
    podman.set_conflist(&json!({
        "cniVersion": "1.0.0",
        "name": "wasmcni-net",
        "plugins": [node.wasmcni_plugin()],
    }));
    let mut side = node.wasmcni_plugin();
    side["routeTable"] = json!(101);
    podman.set_conflist(&json!({
        "cniVersion": "1.0.0",
        "name": "wasmcni-side",
        "plugins": [side],
    }));
    let rootfs = podman.busybox_rootfs();
    std::fs::write(rootfs.join("www/index.html"), "podman\n").unwrap();
    let httpd = ["/bin/httpd", "-f", "-p", "80", "-h", "/www"];
    // One `--network` per network: podman 4 takes per-network options (`NET:ip=…`) only so.
    let run = |name: &str, networks: &[&str], extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name];
        for network in networks {
            args.extend(["--network", network]);
        }
        args.extend_from_slice(extra);
        args.extend(["--rootfs", rootfs.to_str().unwrap()]);
        args.extend_from_slice(&httpd);
        podman.run(&args)
    };

    // wasmcni second, with the address and MAC podman's per-network options ask for.
    let out = run(
        "second",
        &[
            "ptp-first",
            "wasmcni-side:ip=10.88.0.201,mac=02:aa:bb:cc:dd:03",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.daemon_log_text()
    );
    let ifaces = interfaces(&podman, &node, "second");
    let ours = ifaces
        .iter()
        .find(|i| i.1 == "10.88.0.201")
        .unwrap_or_else(|| panic!("{ifaces:?}"));
    assert_eq!(ours.2, "02:aa:bb:cc:dd:03", "{ifaces:?}");
    let theirs = ifaces
        .iter()
        .find(|i| i.1.starts_with("10.99."))
        .unwrap_or_else(|| panic!("{ifaces:?}"));
    // The pod's default route stays ptp's.
    let default = default_route_dev(&podman, &node, "second");
    assert!(
        default.contains(&format!("dev {}", theirs.0)) && !default.contains(&ours.0),
        "{default}"
    );
    assert!(
        serves(&node, "10.88.0.201", "podman"),
        "wasmcni's interface serves"
    );
    assert!(serves(&node, &theirs.1, "podman"), "ptp's interface serves");

    // `--ip` for the address another container holds: refused with the reason, nothing left.
    let out = run("taken", &["wasmcni-net"], &["--ip", "10.88.0.201"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CNI_ARGS IP asks for 10.88.0.201, which is held by attachment"),
        "{stderr}"
    );
    let _ = podman.run(&["rm", "-f", "taken"]);

    // Disconnect wasmcni: ptp's side is whole; connect again with another address.
    podman.ok(&["network", "disconnect", "wasmcni-side", "second"]);
    assert!(!interfaces(&podman, &node, "second")
        .iter()
        .any(|i| i.1 == "10.88.0.201"));
    assert!(
        serves(&node, &theirs.1, "podman"),
        "ptp's interface still serves"
    );
    assert!(!serves(&node, "10.88.0.201", "podman"));
    podman.ok(&[
        "network",
        "connect",
        "--ip",
        "10.88.0.202",
        "wasmcni-side",
        "second",
    ]);
    assert!(interfaces(&podman, &node, "second")
        .iter()
        .any(|i| i.1 == "10.88.0.202"));
    assert!(serves(&node, "10.88.0.202", "podman"));

    // wasmcni first: it takes the default route; ptp second has none of its own.
    let out = run("first", &["wasmcni-net:ip=10.88.0.200", "ptp-second"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.daemon_log_text()
    );
    let ifaces = interfaces(&podman, &node, "first");
    let ours = ifaces
        .iter()
        .find(|i| i.1 == "10.88.0.200")
        .unwrap_or_else(|| panic!("{ifaces:?}"));
    let default = default_route_dev(&podman, &node, "first");
    assert!(default.contains(&format!("dev {}", ours.0)), "{default}");
    assert!(serves(&node, "10.88.0.200", "podman"));

    // `podman rm -f` DELs every attachment: nothing of wasmcni's stays on the node.
    podman.ok(&["rm", "-f", "-t", "0", "first", "second"]);
    // (Each veth once the kernel has finished deleting it, after the DEL answered.)
    let deadline = std::time::Instant::now() + crate::support::VETH_GONE_WITHIN;
    let veths = loop {
        let veths = node.node.ip(&["-j", "link", "show"]);
        if !veths.contains("\"ifalias\":\"wasmcni\"") || std::time::Instant::now() > deadline {
            break veths;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(!veths.contains("\"ifalias\":\"wasmcni\""), "{veths}");
    let pool = node.inspect("pool", true);
    let pool: Value = serde_json::from_str(&pool).unwrap();
    assert_eq!(pool["allocations"], json!([]), "{pool}");
}
