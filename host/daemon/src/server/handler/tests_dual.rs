//! Dual stack: each pod holds one address of each family, in the result, the datastore, the
//! data path and what policies see; both are freed, cooled and drained together, and a pool
//! short of either family attaches nothing.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::tests::{
    config, fixture, fixture_provider, policy_spec, request, stdout, veth, Fixture,
};
use super::*;
use wasmcni_datapath::fake::FakeDatapath;

/// An EC2-like dual-stack node: a /28 on a secondary ENI (table 2) and the primary ENI's /80.
struct DualProvider;

const PREFIX_V6: &str = "2600:1f14:aa:bb:cc::/80";

impl wasmcni_core::ipam::Provider for DualProvider {
    fn name(&self) -> &'static str {
        "dual"
    }
    fn inventory(&self) -> wasmcni_core::ipam::Inventory {
        wasmcni_core::ipam::Inventory {
            blocks: vec![wasmcni_core::ipam::AddressBlock {
                cidr: "10.0.0.16/28".parse().unwrap(),
                route_table: Some(2),
                kind: wasmcni_core::ipam::BlockKind::Prefix,
                eni_id: Some("eni-1".into()),
            }],
            ipv6: vec![wasmcni_core::ipam::Ipv6Block {
                cidr: PREFIX_V6.parse().unwrap(),
                eni_id: Some("eni-primary".into()),
            }],
            ..wasmcni_core::ipam::Inventory::default()
        }
    }
    fn view(&self) -> ProviderView {
        ProviderView {
            cooldown: Duration::from_secs(30),
            dynamic: false,
            family: IpFamily::Dual,
            ..ProviderView::default()
        }
    }
}

fn dual_fixture() -> Fixture {
    let guard = policy_spec("namespace-guard", &[("allow_namespaces", "default")]);
    fixture_provider(
        "10.88.0.0/24",
        None,
        vec![guard],
        Some(Arc::new(DualProvider) as Arc<dyn wasmcni_core::ipam::Provider>),
    )
}

fn held(f: &Fixture, cid: &str) -> Allocation {
    f.handler
        .store()
        .get(&AttachmentKey::new(cid, "eth0"))
        .cloned()
        .unwrap_or_else(|| panic!("{cid} holds nothing"))
}

fn ok(response: &DaemonResponse) -> serde_json::Value {
    match response {
        DaemonResponse::Success { stdout } if stdout.is_empty() => serde_json::Value::Null,
        DaemonResponse::Success { stdout } => serde_json::from_str(stdout).unwrap(),
        DaemonResponse::Failure { error, .. } => panic!("failed: {error:?}"),
    }
}

#[tokio::test]
async fn a_dual_stack_pod_holds_one_address_of_each_family_everywhere() {
    let f = dual_fixture();
    let prefix: ipnet::Ipv6Net = PREFIX_V6.parse().unwrap();
    let result = ok(&f.run(Command::Add, "a", "1.1.0").await);
    ok(&f.run(Command::Add, "b", "1.1.0").await);
    let a = held(&f, "a");
    let (IpAddr::V4(v4), Some(v6)) = (a.ip, a.ipv6) else {
        panic!("{a:?}")
    };
    assert!(v4.octets()[..3] == [10, 0, 0] && (16..32).contains(&v4.octets()[3]));
    assert!(prefix.contains(&v6) && v6 != prefix.network(), "{v6}");
    assert_eq!(
        a.egress_v4, None,
        "an IPv4 address of its own: no egress one"
    );

    // The result: both addresses on the pod's interface, each with its family's gateway and
    // default route.
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{result}");
    assert_eq!(ips[0]["address"], format!("{v4}/32"));
    assert_eq!(ips[0]["gateway"], "169.254.1.1");
    assert_eq!(ips[1]["address"], format!("{v6}/128"));
    assert_eq!(ips[1]["gateway"], "fe80::1");
    assert!(ips.iter().all(|ip| ip["interface"] == 1), "{result}");
    let routes: Vec<(&str, &str)> = result["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["dst"].as_str().unwrap(), r["gw"].as_str().unwrap()))
        .collect();
    assert_eq!(
        routes,
        [("0.0.0.0/0", "169.254.1.1"), ("::/0", "fe80::1")],
        "{result}"
    );

    // Held by the attachment under both; the other pod got two others.
    let b = held(&f, "b");
    assert_eq!(
        f.handler.store().holder_of(v6).map(|h| &h.key),
        Some(&a.key)
    );
    assert_eq!(
        f.handler.store().holder_of(v4).map(|h| &h.key),
        Some(&a.key)
    );
    assert!(
        b.ip != a.ip && b.ipv6.is_some() && b.ipv6 != a.ipv6,
        "{b:?}"
    );
    // The data path: the IPv4 address's rules into the ENI's table, the IPv6 one's in main.
    let rules = f.handler.datapath.rules();
    assert!(rules.contains(&(IpAddr::V4(v4), Some(2))), "{rules:?}");
    assert!(rules.contains(&(IpAddr::V6(v6), None)), "{rules:?}");
    // Policies were asked about both addresses.
    let audit = std::fs::read_to_string(f.handler.audit_log.path()).unwrap();
    assert!(audit.contains(&format!("{v6}/128")), "{audit}");
    assert!(audit.contains(&format!("{v4}/32")), "{audit}");
    // Each family counted apart: 16 - 2 and 2^48 - 1 - 2.
    assert_eq!(f.handler.free_by_family(), (14, (1u64 << 48) - 3));
    // CHECK looks at both.
    ok(&f.run(Command::Check, "a", "1.1.0").await);
    let mut conf: serde_json::Value = serde_json::from_str(&config("1.1.0")).unwrap();
    conf["prevResult"] = result.clone();
    conf["prevResult"]["ips"] = serde_json::json!([ips[0].clone()]);
    match f
        .handler
        .handle(&request(Command::Check, "a"), &conf.to_string())
        .await
    {
        DaemonResponse::Failure { error, .. } => assert!(
            error
                .msg
                .contains(&format!("prevResult does not list {v6}/128")),
            "{}",
            error.msg
        ),
        other => panic!("a prevResult without the IPv6 address passed: {other:?}"),
    }

    // DEL: both addresses drain with the veth, then cool; the next pod gets others.
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(f.handler.is_draining(IpAddr::V4(v4)) && f.handler.is_draining(IpAddr::V6(v6)));
    let rules = f.handler.datapath.rules();
    assert!(
        !rules
            .iter()
            .any(|(ip, _)| *ip == IpAddr::V6(v6) || *ip == IpAddr::V4(v4)),
        "{rules:?}"
    );
    f.handler.datapath.finish_link_removals();
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    let mut cooling = f.handler.cooling_now();
    cooling.sort();
    assert_eq!(cooling, vec![IpAddr::V4(v4), IpAddr::V6(v6)]);
    assert!(f.handler.is_taken(v6) && f.handler.is_taken(v4));
    assert!(f.handler.store().holder_of(v6).is_none());
    ok(&f.run(Command::Add, "c", "1.1.0").await);
    let c = held(&f, "c");
    assert!(c.ip != IpAddr::V4(v4) && c.ipv6 != Some(v6), "{c:?}");
}

#[tokio::test]
async fn a_dual_stack_request_may_name_either_family_or_both() {
    let f = dual_fixture();
    let asking = |cid: &str, ips: &str| {
        let mut r = request(Command::Add, cid);
        r.args.push(("IP".into(), ips.into()));
        r
    };
    let v6: Ipv6Addr = "2600:1f14:aa:bb:cc::77".parse().unwrap();
    ok(&f
        .handler
        .handle(
            &asking("a", "10.0.0.20,2600:1f14:aa:bb:cc::77"),
            &config("1.1.0"),
        )
        .await);
    let a = held(&f, "a");
    assert_eq!(
        (a.ip, a.ipv6),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 20)), Some(v6))
    );
    // Only the IPv6 one: the IPv4 address is chosen.
    ok(&f
        .handler
        .handle(&asking("b", "2600:1f14:aa:bb:cc::78"), &config("1.1.0"))
        .await);
    let b = held(&f, "b");
    assert!(b.ip.is_ipv4() && b.ipv6 == Some("2600:1f14:aa:bb:cc::78".parse().unwrap()));
    // A held IPv6 address is refused, and the IPv4 address chosen meanwhile is not kept.
    let before = f.handler.free_by_family();
    match f
        .handler
        .handle(&asking("c", "2600:1f14:aa:bb:cc::77"), &config("1.1.0"))
        .await
    {
        DaemonResponse::Failure { error, .. } => {
            assert!(
                error.msg.contains(
                    "asks for 2600:1f14:aa:bb:cc::77, which is held by attachment a/eth0"
                ),
                "{}",
                error.msg
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.handler.free_by_family(), before);
    assert!(f
        .handler
        .store()
        .get(&AttachmentKey::new("c", "eth0"))
        .is_none());
}

#[tokio::test]
async fn a_static_dual_stack_pool_short_of_ipv6_attaches_nothing_and_says_which_family() {
    // Six IPv4 addresses, three IPv6 ones.
    let f = fixture("10.88.0.0/29\", \"fd00:88::/126");
    assert_eq!(f.handler.family, IpFamily::Dual);
    for cid in ["a", "b", "c"] {
        ok(&f.run(Command::Add, cid, "1.1.0").await);
    }
    assert_eq!(f.handler.free_by_family(), (3, 0));
    let status = f.run(Command::Status, "", "1.1.0").await;
    assert!(
        stdout(&status).contains("no free IPv6 address in the pool"),
        "{status:?}"
    );
    match f.run(Command::Add, "d", "1.1.0").await {
        DaemonResponse::Failure { error, .. } => assert!(
            error.msg.contains(
                "no free IPv6 address: all 3 addresses of provider.static.cidrs' IPv6 prefixes"
            ),
            "{}",
            error.msg
        ),
        other => panic!("{other:?}"),
    }
    // Nothing of the failed ADD stays: no record, no veth, the IPv4 address still free.
    assert!(f
        .handler
        .store()
        .get(&AttachmentKey::new("d", "eth0"))
        .is_none());
    assert!(!f.handler.datapath.veths().contains_key(&veth("d")));
    assert_eq!(f.handler.free_by_family(), (3, 0));
    // A DEL gives both back (the static provider does not cool): the next ADD succeeds.
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(f.handler.drained(None, Duration::from_secs(5)).await);
    assert_eq!(f.handler.free_by_family(), (4, 1));
    ok(&f.run(Command::Add, "d", "1.1.0").await);
}

#[tokio::test]
async fn a_static_dual_stack_node_takes_the_smaller_uplink_mtu_and_prepares_ipv6_without_egress() {
    use wasmcni_datapath::fake::Call;
    let dir = tempfile::tempdir().unwrap();
    let text = wasmcni_config::DEFAULT_CONFIG
        .replace(
            "/var/lib/wasmcni",
            &dir.path().join("state").display().to_string(),
        )
        .replace("10.88.0.0/24", "10.88.0.0/24\", \"fd00:88::/120");
    let config = ClusterConfig::parse(&text, "test").unwrap();
    let datapath = FakeDatapath::new();
    datapath.set_uplink_mtu(1500);
    datapath.set_uplink_v6("ens6", 9001);
    let (handler, _) =
        crate::server::start(config, datapath, None, wasmcni_runtime::Compiler::InProcess)
            .await
            .unwrap();
    assert_eq!(handler.pod_mtu, 1500, "the smaller of the two paths out");
    assert_eq!(handler.family, IpFamily::Dual);
    let calls = handler.datapath.calls();
    assert!(
        calls.contains(&Call::PrepareIpv6(Some("ens6".into()))),
        "{calls:?}"
    );
    // Pods have IPv4 addresses of their own: no egress range is translated.
    assert!(
        !calls.iter().any(|c| matches!(c, Call::EgressSnat(_))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_dual_stack_add_failing_in_the_data_path_or_a_policy_keeps_neither_address() {
    let f = dual_fixture();
    let before = f.handler.free_by_family();
    // The kernel refuses the host route: what was built goes, both addresses come back.
    f.handler
        .datapath
        .fail_next_setup(nix::errno::Errno::EEXIST);
    match f.run(Command::Add, "a", "1.1.0").await {
        DaemonResponse::Failure { error, .. } => {
            assert!(
                error.msg.contains("ADD failed in the data path"),
                "{}",
                error.msg
            )
        }
        other => panic!("{other:?}"),
    }
    // A policy denies the next pod.
    let denied = f
        .handler
        .handle(
            &super::tests::request_in(Command::Add, "b", "kube-public"),
            &config("1.1.0"),
        )
        .await;
    assert!(
        matches!(denied, DaemonResponse::Failure { .. }),
        "{denied:?}"
    );
    assert!(f.handler.store().is_empty());
    assert!(
        f.handler.datapath.rules().is_empty(),
        "{:?}",
        f.handler.datapath.rules()
    );
    // (Freed at once: an ADD that never answered leaves nothing to cool.)
    let resting: Vec<IpAddr> = f.handler.cooling_now();
    let free = f.handler.free_by_family();
    assert_eq!(
        (
            free.0 + resting.iter().filter(|ip| ip.is_ipv4()).count() as u64,
            free.1 + resting.iter().filter(|ip| ip.is_ipv6()).count() as u64
        ),
        before
    );
}

#[tokio::test]
async fn a_dual_stack_add_waits_for_the_last_128_to_drain_instead_of_failing() {
    // Three /128s for six IPv4 addresses: the fourth pod needs a DELeted pod's /128.
    let f = fixture("10.88.0.0/29\", \"fd00:88::/126");
    for cid in ["a", "b", "c"] {
        ok(&f.run(Command::Add, cid, "1.1.0").await);
    }
    let freed = held(&f, "a").ipv6.unwrap();
    f.handler.datapath.hold_link_removals();
    ok(&f.run(Command::Del, "a", "1.1.0").await);
    assert!(f.handler.is_draining(IpAddr::V6(freed)));
    let handler = f.handler.clone();
    let add = tokio::spawn(async move {
        handler
            .handle(&request(Command::Add, "d"), &config("1.1.0"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!add.is_finished(), "the ADD did not wait for the drain");
    f.handler.datapath.finish_link_removals();
    let added = tokio::time::timeout(Duration::from_secs(10), add)
        .await
        .expect("the ADD finished once the veth was gone")
        .unwrap();
    ok(&added);
    assert_eq!(held(&f, "d").ipv6, Some(freed), "the only free /128");
    // b, c and d hold three of the six IPv4 addresses and all three /128s.
    assert_eq!(f.handler.free_by_family(), (3, 0));
}
