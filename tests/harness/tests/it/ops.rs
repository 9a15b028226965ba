//! What an operator sees of a running daemon: its log file (JSON lines carrying the request's
//! fields, rotated by size) and the operations socket.

use wasmcni_harness::node::TestNode;

use crate::support::{pod, wasmcni_only};

/// The embedded default with its socket in `run` (below /run/wasmcni), its state in `dir`
/// and `daemon_keys` added to `[daemon]`.
fn config_in(run: &std::path::Path, dir: &std::path::Path, daemon_keys: &str) -> String {
    wasmcni_config::DEFAULT_CONFIG
        .replace(
            "/run/wasmcni/wasmcni.sock",
            &run.join("wasmcni.sock").display().to_string(),
        )
        .replace("/var/lib/wasmcni", &dir.join("state").display().to_string())
        .replace("\n[datapath]", &format!("{daemon_keys}\n\n[datapath]"))
}

#[test]
fn the_daemon_logs_json_lines_with_the_request_fields_and_rotates_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = wasmcni_harness::ConfinedDirs::new("ops");
    let log = dir.path().join("log/daemon.log");
    let text = config_in(
        &run.run,
        dir.path(),
        &format!(
            "log_file = \"{}\"\nlog_max_bytes = 4096\nlog_keep = 2",
            log.display()
        ),
    );
    let mut node = TestNode::with_cluster_config(&text);
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let pods: Vec<_> = (0..12).map(|i| pod(&format!("log{i}"))).collect();
    for p in &pods {
        let result = node.add(&chain, &p.attachment).expect("ADD");
        if p.attachment.container_id == pods[11].attachment.container_id {
            node.add(&chain, &p.attachment)
                .expect_err("a second ADD of a live attachment is refused");
        }
        node.del(&chain, &p.attachment, Some(&result)).expect("DEL");
    }
    node.stop_daemon("TERM");

    let numbered = |n: u32| dir.path().join(format!("log/daemon.log.{n}"));
    assert!(numbered(1).exists(), "the 4 KiB file rotated");
    assert!(!numbered(3).exists(), "log_keep = 2");
    let mut lines = Vec::new();
    for file in [numbered(2), numbered(1), log.clone()] {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            text.len() <= 4096,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            // The field schema every wasmcni log shares (docs/operating.md).
            let timestamp = event["timestamp"].as_str().unwrap_or_default();
            assert!(
                timestamp.ends_with('Z') && humantime::parse_rfc3339(timestamp).is_ok(),
                "no RFC 3339 UTC timestamp: {line}"
            );
            assert!(event["level"].is_string(), "no level: {line}");
            assert!(event["message"].is_string(), "no message: {line}");
            lines.push(event);
        }
    }
    // The last pod's ADD, with the request's fields on its event.
    let last = &pods[11].attachment;
    let committed = lines
        .iter()
        .find(|e| {
            e["message"] == "ADD committed"
                && e["span"]["container_id"] == last.container_id.as_str()
        })
        .unwrap_or_else(|| {
            panic!(
                "no ADD committed event for {} in {lines:?}",
                last.container_id
            )
        });
    assert_eq!(committed["span"]["verb"], "ADD");
    assert_eq!(
        committed["span"]["phase"], "datastore",
        "the phase it ended in"
    );
    assert_eq!(committed["span"]["ifname"], "eth0");
    assert!(
        committed["span"]["pod"]
            .as_str()
            .unwrap()
            .starts_with("default/log11-"),
        "{committed}"
    );
    // The refused ADD is in the log an operator greps first, with the code and message the
    // runtime got.
    let refused = lines
        .iter()
        .find(|e| {
            e["message"] == "ADD failed" && e["span"]["container_id"] == last.container_id.as_str()
        })
        .unwrap_or_else(|| panic!("no ADD failed event for {} in {lines:?}", last.container_id));
    assert_eq!(refused["level"], "WARN", "{refused}");
    assert!(refused["code"].as_u64().is_some(), "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("already holds"),
        "{refused}"
    );
    // The daemon's last words made it to the file.
    let message = |e: &serde_json::Value| e["message"].as_str().unwrap_or("").to_owned();
    assert!(
        lines
            .iter()
            .rev()
            .take(3)
            .any(|e| message(e).contains("shutting down")),
        "{:?}",
        lines.iter().rev().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn metrics_are_also_served_on_loopback_tcp_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let run = wasmcni_harness::ConfinedDirs::new("ops");
    let text = config_in(&run.run, dir.path(), "metrics_listen = \"127.0.0.1:19100\"");
    let mut node = TestNode::with_cluster_config(&text);
    node.start_daemon();
    // The address is the node namespace's loopback: scrape from inside it.
    let get = |path: &'static str| {
        node.node.run(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect("127.0.0.1:19100").expect("connect");
            write!(stream, "GET {path} HTTP/1.0\r\nHost: node\r\n\r\n").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
    };
    let metrics = get("/metrics");
    assert!(
        metrics.starts_with("HTTP/1.0 200") || metrics.starts_with("HTTP/1.1 200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmcni_pool_addresses{state=\"free\"} 254"),
        "{metrics}"
    );
    let pool = get("/v1/pool");
    assert!(
        pool.contains(" 404 "),
        "introspection stays on the root-only socket: {pool}"
    );
    // The Unix socket serves both.
    assert!(node.inspect("pool", true).contains("10.88.0.0/24"));
}

#[test]
fn idle_clients_cannot_hold_the_operations_socket() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    let node = crate::support::running_node();
    let get = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(node.ops_socket())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    assert!(get().unwrap().starts_with("HTTP/1.1 200"));
    // Clients that connect and never send a request take every connection slot...
    let idle: Vec<UnixStream> = (0..wasmcni_daemon::server::ops::MAX_OPS_CONNECTIONS)
        .map(|_| UnixStream::connect(node.ops_socket()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = get().unwrap_or_default();
    assert!(
        refused.is_empty(),
        "a connection beyond the cap is closed at once: {refused}"
    );
    // ...only until their header timeout: then they are closed and others are served again.
    let started = Instant::now();
    loop {
        if get().is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(
            started.elapsed()
                < wasmcni_daemon::server::ops::OPS_HEADER_TIMEOUT + Duration::from_secs(5),
            "idle clients still hold the socket"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    // The CNI socket was never affected.
    assert!(node.inspect("pool", true).contains("10.88.0.0/24"));
}

#[test]
fn an_unset_mtu_is_the_node_uplinks() {
    let dir = tempfile::tempdir().unwrap();
    let run = wasmcni_harness::ConfinedDirs::new("mtu");
    // The embedded default leaves datapath.mtu unset.
    let text = config_in(&run.run, dir.path(), "");
    let mut node = TestNode::with_cluster_config(&text);
    node.node.ip(&["link", "set", "eth0", "mtu", "1400"]);
    node.node.ip(&[
        "route",
        "add",
        "default",
        "via",
        wasmcni_harness::node::OUTSIDE_IP,
    ]);
    node.start_daemon();
    let chain = wasmcni_only(&node, "1.1.0");
    let p = pod("mtu");
    let result = node.add(&chain, &p.attachment).expect("ADD");
    let mtu_of = |ns: &wasmcni_harness::netns::NetNs, link: &str| -> u64 {
        let shown: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "link", "show", link])).unwrap();
        shown[0]["mtu"].as_u64().unwrap()
    };
    assert_eq!(mtu_of(&p.ns, "eth0"), 1400, "the pod's interface");
    let host_veth = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
    assert_eq!(mtu_of(&node.node, &host_veth), 1400, "the host veth");
    node.del(&chain, &p.attachment, Some(&result)).expect("DEL");
}
