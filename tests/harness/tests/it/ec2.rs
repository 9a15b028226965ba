//! The EC2 provider end to end: the daemon on an emulated instance (hypervisor mode, so every
//! attached ENI is a real link in the node namespace), pack planning the pool, real pods.

use std::time::{Duration, Instant};

use wasmcni_harness::allocator_plugin_config;
use wasmcni_harness::ec2::Ec2Node;
use wasmcni_harness::traffic::{ping, tcp_fetch, EchoServer, PEER_ADDRESS};

use crate::support::{pod, pod_ip, wasmcni_only, Pod};

/// `[allocator]` pack with its grants (eni-ops scoped to the node's subnet and groups) and
/// settings.
pub(crate) fn pack(warm_ips: u32, prefix_delegation: bool) -> String {
    format!(
        "{}[plugins.config]\nWARM_IPS = \"{warm_ips}\"\nENABLE_PREFIX_DELEGATION = \"{prefix_delegation}\"\nMIN_ENI_AGE_SECONDS = \"0\"\n",
        allocator_plugin_config("pack", &["pool-view", "eni-ops", "log"])
    )
}

/// Fast reconciler and short cooldown, so a test sees the pool move in seconds.
const QUICK: &str = "reconcile_interval_ms = 300\nip_cooldown_ms = 500\n";

pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {limit:?}");
}

fn started(instance_type: &str, ec2_extra: &str, rest: &str) -> Ec2Node {
    let mut ec2 = Ec2Node::start(instance_type, |s| s);
    ec2.node.write_config(&ec2.config(ec2_extra, rest));
    ec2.node.start_daemon();
    ec2
}

#[test]
fn pods_fill_the_primary_eni_then_a_new_eni_and_scale_down_gives_it_back() {
    // t3.medium: 3 ENIs of 6 addresses, so 5 pods per ENI.
    let ec2 = started("t3.medium", QUICK, &pack(2, false));
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let pods: Vec<Pod> = (0..8).map(|i| pod(&format!("e{i}"))).collect();
    let results: Vec<_> = pods
        .iter()
        .map(|p| ec2.node.add(&chain, &p.attachment).expect("ADD"))
        .collect();
    let ips: Vec<String> = results.iter().map(pod_ip).collect();

    let enis = ec2.attached_enis();
    assert_eq!(enis.len(), 2, "the pool grew by one ENI: {enis:?}");
    assert_eq!(enis[1].0, 1, "attached at the next device index");
    let primary: Vec<String> = ec2.eni_addresses(0).iter().map(|a| a.to_string()).collect();
    let second: Vec<String> = ec2.eni_addresses(1).iter().map(|a| a.to_string()).collect();
    let on_second: Vec<&String> = ips.iter().filter(|ip| second.contains(ip)).collect();
    let on_primary: Vec<&String> = ips.iter().filter(|ip| primary.contains(ip)).collect();
    assert_eq!(
        (on_primary.len(), on_second.len()),
        (5, 3),
        "pods fill the primary ENI first: {ips:?} primary {primary:?} second {second:?}"
    );
    let (tags, delete_on_termination) = ec2.eni_tags(1);
    assert_eq!(
        tags.get("node.k8s.amazonaws.com/instance_id"),
        Some(&ec2.instance_id),
        "{tags:?}"
    );
    assert!(
        tags.contains_key("node.k8s.amazonaws.com/createdAt"),
        "{tags:?}"
    );
    assert!(delete_on_termination, "DeleteOnTermination is set");

    // The ENI's link came up with its routing table (device 1 + 1) and the pods' rules.
    let link = ec2.node.node.ip(&["-o", "link", "show", "eth1"]);
    assert!(link.contains("state UP") || link.contains(",UP"), "{link}");
    let table = ec2.node.node.ip(&["route", "show", "table", "2"]);
    let gateway = wasmcni_core::eni::subnet_gateway(ec2.subnet_cidr);
    assert!(
        table.contains(&format!("default via {gateway} dev eth1")),
        "{table}"
    );
    let rules = ec2.node.node.ip(&["rule", "show"]);
    for ip in &on_second {
        assert!(
            rules.contains(&format!("from {ip} lookup 2")),
            "{ip}: {rules}"
        );
    }
    for ip in &on_primary {
        assert!(
            !rules.contains(&format!("from {ip} lookup")),
            "{ip}: {rules}"
        );
    }

    // Pods on the new ENI reach pods on the primary one, both ways.
    let first_second = pods
        .iter()
        .zip(&ips)
        .find(|(_, ip)| second.contains(ip))
        .unwrap();
    let first_primary = pods
        .iter()
        .zip(&ips)
        .find(|(_, ip)| primary.contains(ip))
        .unwrap();
    assert!(
        ping(&first_second.0.ns, first_primary.1),
        "second -> primary"
    );
    assert!(
        ping(&first_primary.0.ns, first_second.1),
        "primary -> second"
    );

    // What an operator sees: the pool (who holds which address on which ENI) and metrics.
    let pool: serde_json::Value =
        serde_json::from_str(&ec2.node.inspect("pool", true)).expect("pool JSON");
    let held: Vec<String> = pool["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_owned())
        .collect();
    for ip in &ips {
        assert!(held.contains(ip), "{ip} missing from inspect pool: {pool}");
    }
    assert_eq!(pool["enis"].as_array().unwrap().len(), 2, "{pool}");
    let table = ec2.node.inspect("pool", false);
    assert!(
        table.contains(&enis[1].1) && table.contains("default/e5-"),
        "{table}"
    );
    let metrics = ec2.node.inspect("metrics", false);
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in {metrics}"))
    };
    assert_eq!(
        value("wasmcni_cni_requests_total{verb=\"ADD\",result=\"ok\"}"),
        8.0
    );
    assert_eq!(value("wasmcni_pool_addresses{state=\"assigned\"}"), 8.0);
    assert_eq!(value("wasmcni_enis "), 2.0);
    assert_eq!(value("wasmcni_max_pods "), 17.0);
    assert_eq!(
        value("wasmcni_ec2_calls_total{action=\"CreateNetworkInterface\",outcome=\"ok\"}"),
        1.0
    );
    assert!(
        value("wasmcni_plugin_calls_total{plugin=\"pack\",call=\"allocate\",outcome=\"ok\"}")
            >= 8.0
    );
    assert!(
        value("wasmcni_plugin_calls_total{plugin=\"pack\",call=\"eni-ops\",outcome=\"ok\"}") >= 2.0
    );
    assert!(value("wasmcni_reconciler_passes_total{result=\"changed\"}") >= 1.0);
    for phase in ["allocate", "datapath", "datastore"] {
        assert_eq!(
            value(&format!(
                "wasmcni_request_phase_duration_seconds_count{{verb=\"ADD\",phase=\"{phase}\"}}"
            )),
            8.0
        );
    }
    assert_eq!(
        value("wasmcni_cni_request_duration_seconds_count{verb=\"ADD\"}"),
        8.0
    );
    assert!(value("wasmcni_plugin_fuel_consumed_total{plugin=\"pack\",call=\"allocate\"}") > 0.0);
    assert_eq!(
        value("wasmcni_request_phase_duration_seconds_count{verb=\"ADD\",phase=\"socket\"}"),
        8.0
    );

    // Off the VPC, a pod of the second ENI goes out through the primary ENI, translated to
    // its address (SNAT, connmark, the fwmark rule).
    let internet = ec2.route_to_internet();
    let server = EchoServer::start(
        &ec2.node.outside,
        std::net::SocketAddr::from((internet, 7000)),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&first_second.0.ns, server.addr).as_deref(),
        Some(ec2.primary_ip.to_string().as_str()),
        "SNAT to the primary ENI's address"
    );
    assert!(rules.contains("fwmark 0x80/0x80 lookup main"), "{rules}");

    // Scale down: the pods of the second ENI and two of the primary's go; the pool keeps 2
    // free addresses on the primary ENI and gives the second ENI back.
    let mut gone = 0;
    for ((p, result), ip) in pods.iter().zip(&results).zip(&ips) {
        if second.contains(ip) || (primary.contains(ip) && gone < 2) {
            if primary.contains(ip) {
                gone += 1;
            }
            ec2.node
                .del(&chain, &p.attachment, Some(result))
                .expect("DEL");
        }
    }
    // Detach, wait for EC2 to report it available, delete: between the two the ENI is
    // unattached but still there, so wait for both.
    wait_until(
        "the second ENI detached and deleted",
        Duration::from_secs(20),
        || ec2.attached_enis().len() == 1 && ec2.unattached_enis().is_empty(),
    );
    wait_until("table 2 emptied", Duration::from_secs(5), || {
        ec2.node
            .node
            .ip(&["route", "show", "table", "2"])
            .trim()
            .is_empty()
    });
    let left = ec2.attached_enis();
    assert_eq!(
        left[0].2, 5,
        "the primary ENI keeps its 5 addresses: {left:?}"
    );
}

/// ADDs `pods` concurrently, each retried (as kubelet retries a failed ADD) until it succeeds
/// or `limit` passes; returns each pod's address.
fn add_all(
    ec2: &Ec2Node,
    chain: &wasmcni_harness::chain::Conflist,
    pods: &[Pod],
    limit: Duration,
) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| {
                scope.spawn(move || {
                    let deadline = Instant::now() + limit;
                    loop {
                        match ec2.node.add(chain, &p.attachment) {
                            Ok(result) => return pod_ip(&result),
                            Err(e) if Instant::now() < deadline => {
                                eprintln!(
                                    "ADD {} failed, retrying: {e:?}",
                                    p.attachment.container_id
                                );
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            Err(e) => {
                                panic!("ADD {} never succeeded: {e:?}", p.attachment.container_id)
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    })
}

fn assert_distinct(ips: &[String]) {
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        distinct.len(),
        ips.len(),
        "an address was handed out twice: {ips:?}"
    );
}

/// Every address is a pod address of an ENI attached to the node.
pub(crate) fn assert_on_attached_enis(ec2: &Ec2Node, ips: &[String]) {
    let assigned: Vec<String> = ec2
        .attached_enis()
        .iter()
        .flat_map(|(device, ..)| ec2.eni_addresses(*device))
        .map(|a| a.to_string())
        .collect();
    for ip in ips {
        assert!(
            assigned.contains(ip),
            "{ip} is not assigned to the node in EC2: {assigned:?}"
        );
    }
}

#[test]
fn a_burst_under_throttling_and_server_errors_gets_every_pod_an_address_within_the_rate() {
    use ec2_emulator::{FaultConfig, InjectedError};
    // 30 % of EC2 calls throttled, 10 % failing with 500, from the first call on.
    let ec2 = Ec2Node::start("m5.large", |s| {
        s.with_faults(FaultConfig {
            throttle_rate: 0.3,
            error_rate: 0.1,
            error_kind: InjectedError::InternalError,
            ..FaultConfig::default()
        })
    });
    let (burst, rate) = (10.0, 20.0);
    let mut node_config = ec2.config(
        &format!("{QUICK}api_burst = {burst}\napi_rate_per_s = {rate}\nadd_wait_ms = 30000\n"),
        &pack(4, false),
    );
    node_config.push('\n');
    ec2.node.write_config(&node_config);
    let mut ec2 = ec2;
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(60), || {
        ec2.node.status(&chain).is_ok()
    });

    // m5.large: 3 ENIs of 10 addresses, 27 pods at most; 20 at once.
    let pods: Vec<Pod> = (0..20).map(|i| pod(&format!("b{i}"))).collect();
    let ips = add_all(&ec2, &chain, &pods, Duration::from_secs(120));
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);

    let log = ec2.emulator.request_log();
    let counters = ec2.emulator.counters();
    let throttled: u64 = counters.values().map(|c| c.throttled).sum();
    let injected: u64 = counters.values().map(|c| c.injected).sum();
    assert!(
        throttled > 0 && injected > 0,
        "faults were injected: {counters:?}"
    );

    // No ENI created twice: every successful create used its own ClientToken (a retried
    // create reuses it and gets the same ENI), every created ENI is attached, none leaked.
    let tokens: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|r| r.action == "CreateNetworkInterface" && r.error_code.is_none())
        .map(|r| {
            r.params
                .get("ClientToken")
                .cloned()
                .expect("every create carries a ClientToken")
        })
        .collect();
    let enis = ec2.attached_enis();
    assert_eq!(
        tokens.len(),
        enis.len() - 1,
        "one create per secondary ENI: {enis:?}"
    );
    assert!(
        ec2.unattached_enis().is_empty(),
        "{:?}",
        ec2.unattached_enis()
    );

    // Every attempt took a token of the client-side bucket: no window saw more calls than
    // burst + rate x window.
    let times: Vec<f64> = log.iter().map(|r| r.since_start.as_secs_f64()).collect();
    for (i, start) in times.iter().enumerate() {
        for (j, end) in times.iter().enumerate().skip(i) {
            let allowed = burst + rate * (end - start) + 1.0;
            let calls = (j - i + 1) as f64;
            assert!(
                calls <= allowed,
                "{calls} calls in {:.3} s exceed the bucket ({burst} + {rate}/s)",
                end - start
            );
        }
    }
    // The daemon's own metrics saw the same faults.
    let metrics = ec2.node.inspect("metrics", false);
    for expected in [
        "code=\"RequestLimitExceeded\"}",
        "code=\"InternalError\"}",
        "outcome=\"throttled\"}",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("wasmcni_ec2_") && l.contains(expected)),
            "{expected} in {metrics}"
        );
    }
    eprintln!(
        "burst: {} EC2 calls ({throttled} throttled, {injected} 5xx) for 20 pods on {} ENIs",
        log.len(),
        enis.len()
    );
}

#[test]
fn a_daemon_killed_during_eni_creation_or_a_burst_leaks_nothing_and_assigns_nothing_twice() {
    let ec2 = Ec2Node::start("t3.medium", |s| s);
    // Slow EC2 answers widen the windows the kills land in.
    ec2.emulator.set_latency(Duration::from_millis(200));
    ec2.node.write_config(&ec2.config(QUICK, &pack(2, false)));
    let mut ec2 = ec2;
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(30), || {
        ec2.node.status(&chain).is_ok()
    });

    // Fill the primary ENI; the plan then creates a second ENI. Kill the daemon as soon as
    // the create reached EC2.
    let first: Vec<Pod> = (0..4).map(|i| pod(&format!("k{i}"))).collect();
    let mut ips = add_all(&ec2, &chain, &first, Duration::from_secs(30));
    wait_until("a CreateNetworkInterface", Duration::from_secs(30), || {
        ec2.emulator
            .request_log()
            .iter()
            .any(|r| r.action == "CreateNetworkInterface")
    });
    ec2.node.stop_daemon("KILL");
    ec2.node.start_daemon();
    wait_until(
        "STATUS ready after the restart",
        Duration::from_secs(30),
        || ec2.node.status(&chain).is_ok(),
    );
    assert!(
        ec2.unattached_enis().is_empty(),
        "an ENI created before the kill was left behind: {:?}",
        ec2.unattached_enis()
    );
    // The ENI the killed daemon was creating either was attached (and the restarted daemon
    // adopted it, link and table) or was deleted at start as never attached.
    let adopted = ec2.attached_enis().len() == 2;
    let deleted = ec2
        .node
        .daemon_log_text()
        .contains("deleted ENIs this instance created but never attached");
    assert!(
        adopted || deleted,
        "{:?}\n{}",
        ec2.attached_enis(),
        ec2.node.daemon_log_text()
    );
    if adopted {
        let table = ec2.node.node.ip(&["route", "show", "table", "2"]);
        assert!(
            table.contains("default via"),
            "the adopted ENI has its table: {table}"
        );
    }

    // A burst, killed while its ADDs are in flight; kubelet retries the failed ones.
    let burst: Vec<Pod> = (0..6).map(|i| pod(&format!("r{i}"))).collect();
    let ips_burst = std::thread::scope(|scope| {
        let adds = scope.spawn(|| add_all(&ec2, &chain, &burst, Duration::from_secs(90)));
        std::thread::sleep(Duration::from_millis(400));
        ec2.node.crash_and_restart_daemon();
        adds.join().expect("burst")
    });
    ips.extend(ips_burst);
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);
    assert!(
        ec2.unattached_enis().is_empty(),
        "{:?}",
        ec2.unattached_enis()
    );
    // The pods from before the kills kept their addresses: a repeated ADD is refused as a
    // duplicate, naming the address it holds.
    for (p, ip) in first.iter().zip(&ips) {
        let again = ec2.node.add(&chain, &p.attachment).unwrap_err();
        assert!(
            format!("{again:?}").contains(&format!("already holds {ip}")),
            "{again:?}"
        );
    }
}

#[test]
fn prefix_delegation_falls_back_to_secondary_ips_when_no_28_is_free() {
    // m5.large (Nitro): 3 ENIs, 9 slots each.
    let ec2 = started("m5.large", QUICK, &pack(4, true));
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let enis = ec2.attached_enis();
    assert_eq!(
        (enis[0].2, enis[0].3),
        (0, 1),
        "one /28 on the primary ENI: {enis:?}"
    );

    // The subnet fragments: every /28 has a used address, most addresses are free.
    let fillers = ec2.fragment_subnet();
    assert!(ec2.subnet_free() > 3000, "{}", ec2.subnet_free());
    let pods: Vec<Pod> = (0..20).map(|i| pod(&format!("f{i}"))).collect();
    let ips = add_all(&ec2, &chain, &pods, Duration::from_secs(60));
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);
    let enis = ec2.attached_enis();
    assert_eq!(enis[0].3, 1, "no second prefix could be carved: {enis:?}");
    assert!(enis[0].2 > 0, "secondary IPs instead: {enis:?}");
    let audit = std::fs::read_to_string(ec2.node.state_dir().join("plugin-audit.log")).unwrap();
    assert!(audit.contains("has no free aligned /28"), "{audit}");
    ec2.release_fillers(&fillers);
}

#[test]
fn a_full_subnet_fails_adds_with_a_clear_error_and_recovers_when_space_returns() {
    let ec2 = started(
        "t3.medium",
        &format!("{QUICK}add_wait_ms = 1500\n"),
        &pack(1, false),
    );
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let fillers = ec2.fill_subnet(0);
    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("s{i}"))).collect();
    // The warm address serves the first pod; then the pool cannot grow.
    ec2.node
        .add(&chain, &pods[0].attachment)
        .expect("the warm address");
    let failure = ec2.node.add(&chain, &pods[1].attachment).unwrap_err();
    let text = format!("{failure:?}");
    assert!(
        text.contains("no free IPv4 address after waiting 1500 ms for the pool to grow")
            && text.contains("InsufficientFreeAddressesInSubnet"),
        "{text}"
    );
    // The refusal is kept for the next plans (pool-view.failures) and shown to operators.
    let pool: serde_json::Value =
        serde_json::from_str(&ec2.node.inspect("pool", true)).expect("pool JSON");
    let failures = pool["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|f| f["code"] == "InsufficientFreeAddressesInSubnet"
                && f["request"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("assign-") || r == "create-eni")),
        "{pool}"
    );
    // The other tenant goes away; the retried ADD gets an address.
    ec2.release_fillers(&fillers);
    let ips = add_all(&ec2, &chain, &pods[1..], Duration::from_secs(30));
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);
}

#[test]
fn a_requested_address_of_the_nodes_subnet_is_assigned_from_ec2_and_others_are_refused_with_why() {
    let ec2 = started("t3.medium", QUICK, &pack(1, false));
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let asking = |name: &str, ip: &str| {
        let mut p = pod(name);
        p.attachment.args.push(("IP".into(), ip.into()));
        p
    };
    // An address of the node's subnet no ENI holds: assigned to the primary ENI, then the pod's.
    let wanted = std::net::Ipv4Addr::from(u32::from(ec2.subnet_cidr.broadcast()) - 10);
    assert!(!ec2.eni_addresses(0).contains(&wanted));
    let a = asking("req-a", &wanted.to_string());
    let result = ec2
        .node
        .add(&chain, &a.attachment)
        .unwrap_or_else(|e| panic!("ADD: {e:?}\n{}", ec2.node.daemon_log_text()));
    assert_eq!(pod_ip(&result), wanted.to_string(), "{result}");
    assert!(
        ec2.eni_addresses(0).contains(&wanted),
        "EC2 lists it on the primary ENI"
    );
    let shown = a.ns.ip(&["-4", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("{wanted}/32")), "{shown}");
    ec2.node
        .check(&chain, &a.attachment, &result)
        .expect("CHECK");

    // Another tenant's address, one of another subnet, and the one pod a holds: refused, each
    // with its reason; nothing is reserved for them.
    let theirs = std::net::Ipv4Addr::from(u32::from(wanted) - 1);
    let tenant = ec2.take_address(theirs);
    for (ip, reason) in [
        (theirs.to_string(), "and EC2 refused to assign it to eni-"),
        (
            "10.0.16.5".to_owned(),
            "is in no subnet of this node's ENIs",
        ),
        (wanted.to_string(), "is held by attachment"),
    ] {
        let p = asking("req-b", &ip);
        let refused = ec2.node.add(&chain, &p.attachment).expect_err("refused");
        let error: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
        assert_eq!(error["code"], 108, "{error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("CNI_ARGS IP asks for {ip}, which")) && msg.contains(reason),
            "{msg}"
        );
    }
    // EC2 refused the address itself ("assigned, but move is not allowed":
    // InvalidParameterValue), which says nothing about the ENI: the allocator's next plans do
    // not hear of it (an ENI fault would be kept, as for the warm pool's requests).
    let pool: serde_json::Value =
        serde_json::from_str(&ec2.node.inspect("pool", true)).expect("pool JSON");
    assert!(
        pool["failures"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["request"] != "assign-ips"),
        "{pool}"
    );
    assert_eq!(pool["allocations"].as_array().unwrap().len(), 1, "{pool}");
    ec2.release_fillers(&[tenant]);
    ec2.node
        .del(&chain, &a.attachment, Some(&result))
        .expect("DEL");
}

#[test]
fn the_instance_limits_bound_the_pool_and_a_pod_beyond_them_gets_a_clear_error() {
    // t3.medium: 3 ENIs × 5 pod addresses = 15 pods (max pods 17 with the two host pods).
    let ec2 = started(
        "t3.medium",
        &format!("{QUICK}add_wait_ms = 1500\n"),
        &pack(2, false),
    );
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let pods: Vec<Pod> = (0..16).map(|i| pod(&format!("l{i}"))).collect();
    let ips = add_all(&ec2, &chain, &pods[..15], Duration::from_secs(60));
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);
    assert_eq!(ec2.attached_enis().len(), 3, "{:?}", ec2.attached_enis());
    let failure = format!(
        "{:?}",
        ec2.node.add(&chain, &pods[15].attachment).unwrap_err()
    );
    assert!(
        failure.contains("no free IPv4 address after waiting 1500 ms")
            && failure.contains("15 addresses"),
        "{failure}"
    );
    // The daemon never asked EC2 for a fourth ENI or a sixth address on one: nothing EC2
    // would refuse reached it.
    let refused: Vec<_> = ec2
        .emulator
        .request_log()
        .into_iter()
        .filter(|r| r.error_code.is_some())
        .map(|r| (r.action, r.error_code))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn custom_networking_puts_pods_in_the_eniconfig_subnet_on_secondary_enis() {
    // VPC CNI's custom networking through vpc-warm-pool's own settings: pods never use the
    // primary ENI; new ENIs go to the ENIConfig subnet, which the grant must name.
    let ec2 = Ec2Node::start("t3.medium", |s| s);
    let pod_subnet = ec2.emulator.resources().expect("scenario").subnet_ids[1].clone();
    let pod_cidr = ec2
        .emulator
        .with_model(|m| m.subnet(&pod_subnet).map(|s| s.cidr_block))
        .expect("second subnet");
    let allocator = format!(
        "[allocator]\nplugin = \"vpc-warm-pool\"\n{}",
        wasmcni_harness::plugin_entry(
            "vpc-warm-pool",
            "allocator",
            &format!(
                "[plugins.grants]\npool-view = {{}}\nlog = {{}}\neni-ops = {{ subnets = [\"{pod_subnet}\"], security_groups = [\"node\"] }}\n[plugins.config]\nAWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG = \"true\"\nENI_CONFIG_SUBNET = \"{pod_subnet}\"\n"
            ),
        )
    );
    let mut ec2 = ec2;
    ec2.node.write_config(&ec2.config(QUICK, &allocator));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let pods: Vec<Pod> = (0..6).map(|i| pod(&format!("c{i}"))).collect();
    let ips = add_all(&ec2, &chain, &pods, Duration::from_secs(30));
    assert_distinct(&ips);
    assert_on_attached_enis(&ec2, &ips);
    for ip in &ips {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        assert!(
            pod_cidr.contains(&ip),
            "{ip} is not in the ENIConfig subnet {pod_cidr}"
        );
    }
    let enis = ec2.attached_enis();
    assert_eq!(
        enis[0].2, 0,
        "the primary ENI gives no addresses to pods: {enis:?}"
    );
    let gateway = wasmcni_core::eni::subnet_gateway(pod_cidr);
    let table = ec2.node.node.ip(&["route", "show", "table", "2"]);
    assert!(
        table.contains(&format!("default via {gateway} dev eth1")),
        "{table}"
    );
}

#[test]
fn during_a_migration_an_address_a_vpc_cni_pod_holds_is_neither_reused_nor_given_back() {
    use ec2_emulator::AssignPrivateIpAddresses;
    let ec2 = Ec2Node::start("t3.medium", |s| s);
    // What AWS VPC CNI left on the node: 3 secondary addresses on the primary ENI, one of them
    // a running pod's, routed through VPC CNI's own veth (no wasmcni mark).
    let taken = ec2.emulator.with_model(|m| {
        m.assign_private_ip_addresses(AssignPrivateIpAddresses::count(&ec2.primary_eni, 3))
            .expect("assign")
            .assigned_private_ip_addresses
    });
    let vpc_cni_pod = taken[1];
    let old_pod = wasmcni_harness::netns::NetNs::new("vp");
    ec2.node.node.ip(&[
        "link",
        "add",
        "enivpccni0",
        "type",
        "veth",
        "peer",
        "name",
        "vpeer0",
    ]);
    ec2.node
        .node
        .ip(&["link", "set", "vpeer0", "netns", old_pod.name()]);
    ec2.node.node.ip(&["link", "set", "enivpccni0", "up"]);
    ec2.node.node.ip(&[
        "route",
        "add",
        &format!("{vpc_cni_pod}/32"),
        "dev",
        "enivpccni0",
        "scope",
        "link",
    ]);

    let mut ec2 = ec2;
    ec2.node.write_config(&ec2.config(QUICK, &pack(1, false)));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    let pods: Vec<Pod> = (0..4).map(|i| pod(&format!("m{i}"))).collect();
    let ips = add_all(&ec2, &chain, &pods, Duration::from_secs(30));
    assert!(
        !ips.contains(&vpc_cni_pod.to_string()),
        "{vpc_cni_pod} handed out again: {ips:?}"
    );
    // Several reconciler passes later the address is still the node's in EC2.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        ec2.eni_addresses(0).contains(&vpc_cni_pod),
        "{vpc_cni_pod} was given back while VPC CNI's pod uses it: {:?}",
        ec2.eni_addresses(0)
    );
}

#[test]
fn the_install_mode_writes_the_conflist_only_once_the_daemon_is_ready() {
    let ec2 = Ec2Node::start("t3.medium", |s| s);
    // Slow EC2: the first warm addresses arrive well after the daemon answers on its socket.
    ec2.emulator.set_latency(Duration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let install = format!(
        "[install]\ncni_bin_dir = \"{}\"\ncni_conf_dir = \"{}\"\nshim = \"{}\"\nbandwidth = true\n",
        dir.path().join("bin").display(),
        dir.path().join("net.d").display(),
        wasmcni_harness::shim().display(),
    );
    let mut ec2 = ec2;
    ec2.node
        .write_config(&ec2.config(QUICK, &format!("{install}{}", pack(2, false))));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    let conflist = dir.path().join("net.d/10-wasmcni.conflist");
    assert!(
        ec2.node.status(&chain).is_err(),
        "not ready before the pool has addresses"
    );
    assert!(
        !conflist.exists(),
        "the conflist must not exist before the daemon is ready"
    );
    wait_until("the conflist", Duration::from_secs(30), || {
        conflist.exists()
    });
    ec2.node
        .status(&chain)
        .expect("ready once the conflist exists");
    let installed = std::fs::read(dir.path().join("bin/wasmcni")).expect("the shim was installed");
    assert_eq!(installed, std::fs::read(wasmcni_harness::shim()).unwrap());
    let text = std::fs::read_to_string(&conflist).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).expect("conflist JSON");
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["wasmcni", "portmap", "bandwidth"], "{text}");
    assert_eq!(
        list["plugins"][0]["daemonSocket"].as_str(),
        Some(ec2.node.socket().display().to_string().as_str())
    );
}

#[test]
fn ipv6_prefix_mode_gives_pods_128s_of_one_80_that_route_without_snat() {
    // m5.large, IPv6 subnets; no allocator plugin: the host hands out /128s of one /80.
    let mut ec2 = Ec2Node::start("m5.large", |s| s.with_ipv6());
    ec2.node
        .write_config(&ec2.config("ip_family = \"ipv6\"\nip_cooldown_ms = 60000\n", ""));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    ec2.node
        .status(&chain)
        .expect("ready as soon as the /80 is delegated");
    let prefixes = ec2.ipv6_prefixes();
    assert_eq!(
        prefixes.len(),
        1,
        "one /80 on the primary ENI: {prefixes:?}"
    );
    let prefix = prefixes[0];
    assert_eq!(prefix.prefix_len(), 80);
    assert_eq!(ec2.emulator.counter("AssignIpv6Addresses").succeeded, 1);
    assert_eq!(ec2.emulator.counter("CreateNetworkInterface").calls, 0);
    let internet = ec2.route_ipv6();

    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("v6-{i}"))).collect();
    // A runtime that creates pod namespaces with IPv6 off: the daemon switches it on.
    for scope in ["all", "default"] {
        let off = pods[0].ns.exec(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{scope}.disable_ipv6=1")],
        );
        assert!(off.status.success(), "{off:?}");
    }
    let results: Vec<_> = pods
        .iter()
        .map(|p| ec2.node.add(&chain, &p.attachment).expect("ADD"))
        .collect();
    let ips: Vec<std::net::Ipv6Addr> = results
        .iter()
        .map(|r| pod_ip(r).parse().expect("an IPv6 address"))
        .collect();
    for (ip, result) in ips.iter().zip(&results) {
        assert!(prefix.contains(ip), "{ip} in {prefix}");
        assert_eq!(result["ips"][0]["address"], format!("{ip}/128"), "{result}");
        assert_eq!(result["ips"][0]["gateway"], "fe80::1", "{result}");
    }
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");

    // Inside the pod: the /128, the default route via fe80::1, the permanent neighbour.
    let inside = pods[0].ns.exec("ip", &["-6", "route", "show"]);
    let routes = String::from_utf8_lossy(&inside.stdout);
    assert!(routes.contains("default via fe80::1 dev eth0"), "{routes}");
    let neigh = pods[0].ns.exec("ip", &["-6", "neigh", "show"]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(
        neigh.contains("fe80::1") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    // On the node: the host route and the to-pod rule at 512; no per-ENI table.
    let host_routes = ec2.node.node.ip(&["-6", "route", "show"]);
    assert!(
        host_routes.contains(&format!("{} dev ", ips[0])),
        "{host_routes}"
    );
    let rules = ec2.node.node.ip(&["-6", "rule", "show"]);
    assert!(
        rules.contains(&format!("512:\tfrom all to {} lookup main", ips[0])),
        "{rules}"
    );
    assert_eq!(ec2.attached_enis().len(), 1, "no secondary ENI");
    // The node forwards IPv6 and still takes router advertisements on the primary ENI.
    for (file, expected) in [("all/forwarding", "1"), ("eth0/accept_ra", "2")] {
        let out = ec2
            .node
            .node
            .exec("cat", &[&format!("/proc/sys/net/ipv6/conf/{file}")]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "{file}"
        );
    }

    // Pod to pod, node to pod, and off the VPC with the pod's own address (no SNAT).
    assert!(ping(&pods[0].ns, &ips[1].to_string()), "pod -> pod");
    assert!(ping(&ec2.node.node, &ips[2].to_string()), "node -> pod");
    let server = EchoServer::start(
        &ec2.node.outside,
        std::net::SocketAddr::new(internet.into(), 8080),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&pods[1].ns, server.addr).as_deref(),
        Some(ips[1].to_string().as_str()),
        "the internet sees the pod's own address"
    );
    // IPv4 egress (on by default): an IPv4-only endpoint off the VPC sees the node's primary
    // IPv4 address, from the pod's node-local one.
    let internet_v4 = ec2.route_to_internet();
    let primary_v4 = ec2.node.node.ip(&["-4", "-o", "addr", "show", "eth0"]);
    let primary_v4 = primary_v4
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on the primary ENI: {primary_v4}"))
        .to_owned();
    let server_v4 = EchoServer::start(
        &ec2.node.outside,
        std::net::SocketAddr::new(internet_v4.into(), 8081),
        PEER_ADDRESS,
    );
    assert_eq!(
        tcp_fetch(&pods[1].ns, server_v4.addr).as_deref(),
        Some(primary_v4.as_str()),
        "an IPv6 pod's IPv4 egress leaves as the node's primary address"
    );
    ec2.node
        .check(&chain, &pods[2].attachment, &results[2])
        .expect("CHECK of an IPv6 pod");

    // DEL then ADD: a fresh address; the released one rests.
    ec2.node
        .del(&chain, &pods[0].attachment, Some(&results[0]))
        .expect("DEL");
    let rules = ec2.node.node.ip(&["-6", "rule", "show"]);
    assert!(
        !rules.contains(&ips[0].to_string()),
        "DEL removed the rule: {rules}"
    );
    let again = pod("v6-again");
    let result = ec2.node.add(&chain, &again.attachment).expect("ADD");
    let fresh: std::net::Ipv6Addr = pod_ip(&result).parse().unwrap();
    assert!(!ips.contains(&fresh), "{fresh} was just released");

    // A restart keeps the prefix (never re-delegated) and every pod's address; the next pod
    // gets an address the node never handed out.
    ec2.node.crash_and_restart_daemon();
    assert_eq!(ec2.ipv6_prefixes(), vec![prefix]);
    assert_eq!(
        ec2.emulator.counter("AssignIpv6Addresses").succeeded,
        1,
        "never delegated again"
    );
    ec2.node
        .check(&chain, &pods[1].attachment, &results[1])
        .expect("CHECK after the restart");
    let after = pod("v6-after");
    let result = ec2
        .node
        .add(&chain, &after.attachment)
        .expect("ADD after the restart");
    let newest: std::net::Ipv6Addr = pod_ip(&result).parse().unwrap();
    assert!(
        prefix.contains(&newest) && !ips.contains(&newest) && newest != fresh,
        "{newest}"
    );
    let pool: serde_json::Value =
        serde_json::from_str(&ec2.node.inspect("pool", true)).expect("pool JSON");
    assert_eq!(pool["blocks"][0]["cidr"], prefix.to_string(), "{pool}");
    assert_eq!(pool["blocks"][0]["kind"], "ipv6-prefix", "{pool}");
    drop(server);
}

#[test]
fn ipv6_prefix_mode_in_a_subnet_without_ipv6_refuses_to_start_and_says_why() {
    let mut ec2 = Ec2Node::start("m5.large", |s| s);
    ec2.node
        .write_config(&ec2.config("ip_family = \"ipv6\"\nmax_attempts = 1\n", ""));
    let log = ec2.node.start_daemon_expecting_failure();
    assert!(
        log.contains("AssignIpv6Addresses")
            && log.contains(&ec2.primary_eni)
            && log.contains(&ec2.subnet_id)
            && log.contains("no IPv6 CIDR block"),
        "{log}"
    );
}

#[test]
fn an_operators_eni_and_a_trunk_eni_survive_a_strategy_that_asks_to_delete_them() {
    use ec2_emulator::{CreateNetworkInterface, InterfaceType};
    let ec2 = Ec2Node::start("m5.large", |s| s);
    // Attached before the daemon starts: an operator's plain ENI (no ownership tags, two
    // secondary addresses) at device 1, and a trunk ENI as the VPC resource controller
    // attaches it for security groups per pod, at device 2.
    let (operator, trunk) = ec2.emulator.with_model(|m| {
        let mut create = |interface_type| {
            let mut request = CreateNetworkInterface::new(ec2.subnet_id.clone());
            request.secondary_private_ip_address_count = Some(2);
            request.interface_type = interface_type;
            m.create_network_interface(request).expect("create").id
        };
        let operator = create(InterfaceType::Interface);
        let trunk = create(InterfaceType::Trunk);
        m.attach_network_interface(&operator, &ec2.instance_id, 1, None)
            .expect("attach the operator's ENI");
        m.attach_network_interface(&trunk, &ec2.instance_id, 2, None)
            .expect("attach the trunk ENI");
        (operator, trunk)
    });
    ec2.sync_links();
    let strategy = format!(
        "{}[plugins.config]\nextra_enis = \"{trunk}\"\n",
        allocator_plugin_config("delete-everything", &["pool-view", "eni-ops"])
    );
    let mut ec2 = ec2;
    ec2.node.write_config(&ec2.config(QUICK, &strategy));
    ec2.node.start_daemon();
    let chain = wasmcni_only(&ec2.node, "1.1.0");
    wait_until("STATUS ready", Duration::from_secs(20), || {
        ec2.node.status(&chain).is_ok()
    });
    // Many plans later (one every 300 ms), both are still attached with their addresses.
    let audit_path = ec2.node.state_dir().join("plugin-audit.log");
    wait_until("ten refused plans", Duration::from_secs(30), || {
        std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .matches("eni-ops.delete-eni")
            .count()
            >= 20
    });
    let enis = ec2.attached_enis();
    for (id, device) in [(&operator, 1), (&trunk, 2)] {
        assert!(
            enis.iter()
                .any(|(d, e, ips, _)| e == id && *d == device && *ips == 2),
            "{id} changed: {enis:?}"
        );
    }
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let refusals: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| {
            e["call"]
                .as_str()
                .is_some_and(|c| c.starts_with("eni-ops."))
        })
        .collect();
    assert!(refusals
        .iter()
        .all(|e| e["outcome"] == "refused" || e["args"]["eni_id"] == ec2.primary_eni.as_str()));
    let reasons = |eni: &str| -> Vec<String> {
        refusals
            .iter()
            .filter(|e| e["args"]["eni_id"] == eni)
            .map(|e| e["result"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        reasons(&operator)
            .iter()
            .all(|r| r.contains("was not created by wasmcni for this node and cluster")),
        "{:?}",
        reasons(&operator)
    );
    assert!(
        reasons(&trunk)
            .iter()
            .all(|r| r.contains("not an ENI of this node the daemon manages")),
        "{:?}",
        reasons(&trunk)
    );
    // The trunk's link is not the daemon's: no routing table of its own was set up for it.
    let table = ec2.node.node.exec("ip", &["route", "show", "table", "3"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).trim().is_empty(),
        "{table:?}"
    );
    // Pods still get addresses (the operator's ENI's included: it is used, never changed).
    let p = pod("survivor");
    let result = ec2.node.add(&chain, &p.attachment).expect("ADD");
    assert!(pod_ip(&result).starts_with("10.0."));
}
